//! Real OpenSSH `sshd` targets for end-to-end tests, and the real `ssh`/`scp`/`sftp` clients to drive them.
//!
//! A target runs inside its own mount namespace (`unshare --mount --propagation private`) with overlayfs over
//! `/etc`, `/run` and `/var/log` whose upper layers live in the target's temp dir, so its users, passwords,
//! `/run/sshd` and login records exist only there: the host's accounts and files are never touched. A small holder
//! process keeps the namespace alive (and kills what is left in it if the test process dies); sshd and every
//! `exec_in_ns` command enter that namespace with `nsenter -t <holder> -m`.
//!
//! Needs root, util-linux (`unshare`, `nsenter`), `passwd` (`useradd`, `chpasswd`), `openssh-server` and
//! `openssh-client`; `tests/run.sh` installs the packages. Call [`available`] to get a clear reason when not.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The server binary (not on a non-root PATH, so always by absolute path; sshd re-execs itself and needs one).
pub const SSHD: &str = "/usr/sbin/sshd";
/// PATH for everything this module runs, so `useradd`/`chpasswd` are found whatever the test's PATH is.
pub const SYS_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// An account that exists only inside one target.
#[derive(Clone, Debug, Default)]
pub struct TargetUser {
    pub name: String,
    /// Set with chpasswd; `None` leaves `*` in the target's shadow (no password, but key logins work).
    pub password: Option<String>,
    /// Lines for `~/.ssh/authorized_keys` ("ssh-ed25519 AAAA... comment").
    pub authorized_keys: Vec<String>,
}

impl TargetUser {
    pub fn password(name: &str, password: &str) -> TargetUser {
        TargetUser {
            name: name.into(),
            password: Some(password.into()),
            authorized_keys: vec![],
        }
    }
    pub fn key(name: &str, public_key: &str) -> TargetUser {
        TargetUser {
            name: name.into(),
            password: None,
            authorized_keys: vec![public_key.into()],
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct TargetOptions {
    pub users: Vec<TargetUser>,
    pub allow_tcp_forwarding: bool,
    /// Extra sshd_config text. sshd takes the FIRST value it reads for a keyword, so the part before the first
    /// `Match` line is placed before the harness's defaults (it overrides them, e.g. `PasswordAuthentication no`);
    /// from the first `Match` line on it is appended at the end, where Match blocks must be.
    pub extra_config: String,
}

/// A running OpenSSH server on 127.0.0.1:`port`.
pub struct SshTarget {
    pub port: u16,
    /// "ssh-ed25519 AAAA..." (no comment).
    pub host_key_pub: String,
    /// The target's temp dir (homes are in `dir/home/<user>`, readable from the host too).
    pub dir: PathBuf,
    sshd: Option<Child>,
    holder: Option<Child>,
    /// `readlink /proc/<holder>/ns/mnt`, e.g. "mnt:[4026532177]".
    mnt_ns: String,
    /// An open `/proc/<holder>/ns/mnt`: keeps the namespace, and with it its number `mnt_ns`, alive until Drop has
    /// killed everything in it. The kernel hands a freed namespace's number to the next new namespace at once, so
    /// without this pin Drop, still looking for stragglers, would find (and kill) the holder, useradd or sshd of a
    /// target that is starting concurrently in a namespace that got the same number.
    mnt_ns_pin: Option<fs::File>,
    log_path: PathBuf,
    config_path: PathBuf,
    host_key: PathBuf,
    extra_config: String,
    allow_tcp_forwarding: bool,
    // Last field: removed after Drop::drop has killed everything that used it.
    _tmp: tempfile::TempDir,
}

impl SshTarget {
    /// Starts sshd in a private mount namespace with the given users; panics with the reason (and sshd's log)
    /// when it cannot.
    pub fn start(opts: TargetOptions) -> SshTarget {
        if let Err(e) = available() {
            panic!("cannot start an sshd target: {e}");
        }
        let tmp = tempfile::Builder::new()
            .prefix("postern-sshd-")
            .tempdir()
            .expect("temp dir for sshd target");
        let dir = tmp.path().to_owned();
        let dir_s = dir.to_str().expect("utf-8 temp dir").to_owned();
        assert!(
            !dir_s.contains([',', ':', '\'', ' ']),
            "temp dir {dir_s} unusable in overlay options"
        );
        // StrictModes: sshd reads authorized_keys as the user, so every parent of a home must be traversable.
        set_mode(&dir, 0o755);
        fs::create_dir_all(dir.join("home")).unwrap();
        set_mode(&dir.join("home"), 0o755);
        fs::create_dir_all(dir.join("keys")).unwrap();
        set_mode(&dir.join("keys"), 0o700);

        let host_key = dir.join("ssh_host_ed25519_key");
        let host_key_pub = keygen_file(&host_key, "postern-test-target");

        // The namespace holder (see `NsHolder`), with /run/sshd for sshd's privilege separation.
        let NsHolder {
            holder,
            mnt_ns,
            mnt_ns_pin,
            own_ns,
        } = NsHolder::spawn(&dir, "mkdir -p /run/sshd\nchmod 0755 /run/sshd\n");

        let mut t = SshTarget {
            port: 0,
            host_key_pub,
            log_path: dir.join("sshd.log"),
            config_path: dir.join("sshd_config"),
            host_key,
            dir,
            sshd: None,
            holder: Some(holder),
            mnt_ns,
            mnt_ns_pin,
            extra_config: opts.extra_config,
            allow_tcp_forwarding: opts.allow_tcp_forwarding,
            _tmp: tmp,
        };
        // From here on Drop cleans up when something panics.
        assert!(
            t.mnt_ns.starts_with("mnt:") && t.mnt_ns != own_ns,
            "holder is not in a private mount namespace ({} vs {own_ns})",
            t.mnt_ns
        );
        for u in &opts.users {
            t.add_user(u);
        }

        // A free port can be taken by someone else before sshd binds it: retry with another one.
        let mut last = String::new();
        for _ in 0..5 {
            t.port = free_port();
            t.write_config();
            t.check_config();
            match t.spawn_sshd() {
                Ok(()) => return t,
                Err(e) if e.contains("Address already in use") => last = e,
                Err(e) => panic!("sshd did not start on 127.0.0.1:{}: {e}", t.port),
            }
        }
        panic!("sshd found no free port: {last}");
    }

    /// The pid of the running sshd (listener); it is inside the target's mount namespace.
    pub fn pid(&self) -> u32 {
        self.sshd.as_ref().expect("sshd running").id()
    }

    /// Runs `sh -c <sh>` inside the target's mount namespace; returns (exit code or -1, stdout, stderr).
    pub fn exec_in_ns(&self, sh: &str) -> (i32, String, String) {
        self.exec_in_ns_with_input(sh, b"")
    }

    /// Like [`exec_in_ns`](Self::exec_in_ns) with `input` on stdin: the way to hand secrets to a command without
    /// putting them in any process's argv.
    pub fn exec_in_ns_with_input(&self, sh: &str, input: &[u8]) -> (i32, String, String) {
        let holder = self.holder.as_ref().expect("namespace holder").id();
        let mut child = Command::new("nsenter")
            .args(["-t", &holder.to_string(), "-m", "--", "/bin/sh", "-c", sh])
            .env("PATH", SYS_PATH)
            .env("LC_ALL", "C")
            .current_dir("/")
            .stdin(if input.is_empty() {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsenter");
        let writer = child.stdin.take().map(|mut stdin| {
            let data = input.to_vec();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            })
        });
        let out = child.wait_with_output().expect("nsenter output");
        if let Some(w) = writer {
            let _ = w.join();
        }
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Everything sshd logged so far (all restarts, LogLevel VERBOSE).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Waits until the log contains `needle`; false after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The user's home directory (inside the temp dir, so the host sees the same files).
    pub fn home(&self, user: &str) -> PathBuf {
        self.dir.join("home").join(user)
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Creates a user inside the namespace (home, authorized_keys, password); works while sshd runs.
    pub fn add_user(&self, u: &TargetUser) {
        assert!(
            !u.name.is_empty()
                && !u.name.starts_with('-')
                && u.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c)),
            "unsupported target user name {:?}",
            u.name
        );
        let home = self.home(&u.name);
        let mut sh = format!(
            "set -e\nuseradd -m -d {} -s /bin/sh -p '*' {}\n",
            sq(&home),
            sq(&u.name)
        );
        if !u.authorized_keys.is_empty() {
            let src = self.dir.join("keys").join(format!("{}.authorized_keys", u.name));
            let mut text = u.authorized_keys.join("\n");
            text.push('\n');
            fs::write(&src, text).unwrap();
            let ssh_dir = home.join(".ssh");
            sh += &format!(
                "g=$(id -g {n})\ninstall -d -m 700 -o {n} -g \"$g\" {d}\ninstall -m 600 -o {n} -g \"$g\" {s} {d}/authorized_keys\n",
                n = sq(&u.name),
                d = sq(&ssh_dir),
                s = sq(&src)
            );
        }
        let (code, out, err) = self.exec_in_ns(&sh);
        assert_eq!(code, 0, "creating target user {} failed:\n{out}{err}", u.name);
        if let Some(pw) = &u.password {
            self.set_password(&u.name, pw);
        }
    }

    /// Sets a user's password with chpasswd inside the namespace (password on stdin, never in argv).
    pub fn set_password(&self, user: &str, password: &str) {
        assert!(!password.contains('\n'), "password with a newline");
        let (code, out, err) = self.exec_in_ns_with_input("chpasswd", format!("{user}:{password}\n").as_bytes());
        assert_eq!(code, 0, "chpasswd for {user} failed:\n{out}{err}");
    }

    /// Replaces the host key and restarts sshd on the same port (sessions already open keep running).
    pub fn rotate_host_key(&mut self) {
        self.stop_sshd();
        let _ = fs::remove_file(&self.host_key);
        let _ = fs::remove_file(self.host_key.with_extension("pub"));
        let old = std::mem::take(&mut self.host_key_pub);
        self.host_key_pub = keygen_file(&self.host_key, "postern-test-target");
        assert_ne!(old, self.host_key_pub, "new host key");
        self.check_config();
        // The port was ours a moment ago; retry briefly if the kernel has not released it yet.
        let mut last = String::new();
        for _ in 0..10 {
            match self.spawn_sshd() {
                Ok(()) => return,
                Err(e) if e.contains("Address already in use") => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("sshd did not restart on 127.0.0.1:{}: {e}", self.port),
            }
        }
        panic!("sshd could not get its port {} back: {last}", self.port);
    }

    fn stop_sshd(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn write_config(&self) {
        let (head, tail) = split_at_match(&self.extra_config);
        let cfg = format!(
            "# written by tests/common/sshd.rs\n{head}\n\
             Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {key}\n\
             PidFile none\n\
             UsePAM no\n\
             PasswordAuthentication yes\n\
             KbdInteractiveAuthentication yes\n\
             PubkeyAuthentication yes\n\
             PermitRootLogin no\n\
             AuthorizedKeysFile .ssh/authorized_keys\n\
             StrictModes yes\n\
             AllowTcpForwarding {fwd}\n\
             X11Forwarding no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             UseDNS no\n\
             Subsystem sftp internal-sftp\n\
             LogLevel VERBOSE\n\
             {tail}\n",
            port = self.port,
            key = self.host_key.display(),
            fwd = if self.allow_tcp_forwarding { "yes" } else { "no" },
        );
        fs::write(&self.config_path, cfg).unwrap();
    }

    /// `sshd -t` inside the namespace (it needs the namespace's /run/sshd).
    fn check_config(&self) {
        let (code, out, err) = self.exec_in_ns(&format!("{SSHD} -t -f {}", sq(&self.config_path)));
        assert_eq!(
            code,
            0,
            "sshd -t rejected the config:\n{out}{err}\n--- {} ---\n{}",
            self.config_path.display(),
            fs::read_to_string(&self.config_path).unwrap_or_default()
        );
    }

    /// Starts `sshd -D -e` in the namespace (nsenter execs it: the child's pid is sshd's) and waits until it
    /// listens. Err carries the log of this attempt.
    fn spawn_sshd(&mut self) -> Result<(), String> {
        let offset = fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0) as usize;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let holder = self.holder.as_ref().expect("namespace holder").id();
        let cfg = self.config_path.to_str().unwrap().to_owned();
        let child = Command::new("nsenter")
            .args(["-t", &holder.to_string(), "-m", "--", SSHD, "-D", "-e", "-f", &cfg])
            .env_clear()
            .env("PATH", SYS_PATH)
            .env("LC_ALL", "C")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn nsenter sshd");
        self.sshd = Some(child);
        let ready = format!("Server listening on 127.0.0.1 port {}.", self.port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let bytes = fs::read(&self.log_path).unwrap_or_default();
            let this_run = String::from_utf8_lossy(bytes.get(offset..).unwrap_or_default()).into_owned();
            // The message is logged right after listen(): from now on the port accepts TCP.
            if this_run.contains(&ready) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.sshd.as_mut().unwrap().try_wait() {
                self.sshd = None;
                return Err(format!("sshd exited ({status}); its log:\n{this_run}"));
            }
            if Instant::now() > deadline {
                self.stop_sshd();
                return Err(format!("not listening after {START_TIMEOUT:?}; its log:\n{this_run}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for SshTarget {
    fn drop(&mut self) {
        // Kill everything in the namespace: sshd, its per-connection children (they setsid() and outlive the
        // listener), user sessions, the holder. Guards: never when the namespace is ours (that would be the host),
        // and only while `mnt_ns_pin` keeps the number `mnt_ns` ours (see there): it is closed only at the end.
        kill_all_in_ns(&self.mnt_ns, self.mnt_ns_pin.as_ref());
        for c in [self.sshd.as_mut(), self.holder.as_mut()].into_iter().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // With its last process gone and the pin closed, the namespace and its overlay mounts are gone; _tmp is
        // removed next.
        drop(self.mnt_ns_pin.take());
    }
}

/// A process holding a private mount namespace with overlayfs over `/etc`, `/run` and `/var/log` (layers in
/// `dir/ov/`), as described in the module doc; the targets of this module and of `rdp.rs` start this way.
pub struct NsHolder {
    /// The holder: it waits for the test process to go away, then kills whatever is left in its namespace (so a
    /// killed test run leaves no daemon behind).
    pub holder: Child,
    /// `readlink /proc/<holder>/ns/mnt`, e.g. "mnt:[4026532177]" (read from `mnt_ns_pin` itself, so both are surely
    /// the same namespace).
    pub mnt_ns: String,
    /// An open `/proc/<holder>/ns/mnt` (see `SshTarget::mnt_ns_pin`).
    pub mnt_ns_pin: Option<fs::File>,
    /// The test process's own mount namespace, for the caller's check that `mnt_ns` differs.
    pub own_ns: String,
}

impl NsHolder {
    /// Creates the overlay layers under `dir`, starts the holder, mounts the overlays and runs `setup` (shell lines,
    /// `set -e`) in the namespace, then waits for its "ready"; panics with the setup log (`dir/ns-setup.log`) when
    /// that fails.
    pub fn spawn(dir: &Path, setup: &str) -> NsHolder {
        for layer in ["etc", "run", "varlog"] {
            for sub in ["upper", "work"] {
                fs::create_dir_all(dir.join("ov").join(layer).join(sub)).unwrap();
            }
        }
        let d = dir.to_str().expect("utf-8 temp dir");
        let ov = |layer: &str, target: &str| {
            format!(
                "mount -t overlay overlay -o lowerdir={target},upperdir={d}/ov/{layer}/upper,workdir={d}/ov/{layer}/work {target}\n"
            )
        };
        let holder_script = format!(
            "set -e\n{}{}{}{setup}echo ready\nset +e\n\
             me=$(readlink /proc/$$/ns/mnt)\n\
             while kill -0 {parent} 2>/dev/null; do sleep 1; done\n\
             for p in /proc/[0-9]*; do n=${{p#/proc/}}; [ \"$n\" != $$ ] && [ \"$(readlink $p/ns/mnt 2>/dev/null)\" = \"$me\" ] && kill -9 $n; done\n",
            ov("etc", "/etc"),
            ov("run", "/run"),
            ov("varlog", "/var/log"),
            parent = std::process::id()
        );
        let setup_log = dir.join("ns-setup.log");
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "/bin/sh", "-c", &holder_script])
            .env("PATH", SYS_PATH)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&setup_log).unwrap())
            .spawn()
            .expect("spawn unshare");
        let mut line = String::new();
        let _ = BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = holder.kill();
            let status = holder.wait();
            panic!(
                "mount namespace setup failed ({status:?}):\n{}",
                fs::read_to_string(&setup_log).unwrap_or_default()
            );
        }
        let mnt_ns_pin = fs::File::open(format!("/proc/{}/ns/mnt", holder.id())).ok();
        let mnt_ns = mnt_ns_pin
            .as_ref()
            .and_then(|f| fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).ok())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let own_ns = fs::read_link("/proc/self/ns/mnt")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        NsHolder {
            holder,
            mnt_ns,
            mnt_ns_pin,
            own_ns,
        }
    }
}

/// Kills every process in the mount namespace `mnt_ns` (retrying for 5 s at most). Guards: never when `mnt_ns` is
/// the test process's own namespace (that would be the host's), and only while `pin` (an open
/// `/proc/<holder>/ns/mnt`, see `SshTarget::mnt_ns_pin`) keeps the number `mnt_ns` ours.
pub fn kill_all_in_ns(mnt_ns: &str, pin: Option<&fs::File>) {
    let own = fs::read_link("/proc/self/ns/mnt")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if pin.is_some() && mnt_ns.starts_with("mnt:") && mnt_ns != own {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = pids_in_ns(mnt_ns);
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(&pids)
                .stderr(Stdio::null())
                .status();
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Processes (not zombies: those have no namespace link any more) in the mount namespace `ns`.
pub fn pids_in_ns(ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.bytes().all(|b| b.is_ascii_digit())
            && fs::read_link(e.path().join("ns/mnt"))
                .map(|p| p.display().to_string())
                .ok()
                .as_deref()
                == Some(ns)
        {
            out.push(name);
        }
    }
    out
}

/// Splits extra sshd_config text at its first `Match` line.
fn split_at_match(extra: &str) -> (String, String) {
    let mut head = String::new();
    let mut tail = String::new();
    let mut in_match = false;
    for line in extra.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        in_match |= first.eq_ignore_ascii_case("match");
        let part = if in_match { &mut tail } else { &mut head };
        part.push_str(line);
        part.push('\n');
    }
    (head, tail)
}

/// Real OpenSSH clients with a private `-F` config, known_hosts and askpass in their own temp dir.
pub struct SshClient {
    tmp: tempfile::TempDir,
    config: PathBuf,
    identity: Option<PathBuf>,
    password: bool,
    options: Vec<(String, String)>,
    batches: AtomicU32,
}

impl Default for SshClient {
    fn default() -> Self {
        Self::new()
    }
}

impl SshClient {
    pub fn new() -> SshClient {
        let tmp = tempfile::Builder::new()
            .prefix("postern-ssh-client-")
            .tempdir()
            .unwrap();
        let askpass = tmp.path().join("askpass");
        // Prints the password file; ssh strips the newline. The password is never in any argv.
        fs::write(
            &askpass,
            format!("#!/bin/sh\nexec cat {}\n", sq(tmp.path().join("password"))),
        )
        .unwrap();
        set_mode(&askpass, 0o700);
        let config = tmp.path().join("config");
        let c = SshClient {
            tmp,
            config,
            identity: None,
            password: false,
            options: vec![],
            batches: AtomicU32::new(0),
        };
        c.write_config();
        c
    }

    pub fn with_identity(mut self, private_key_path: &Path) -> SshClient {
        self.identity = Some(private_key_path.to_owned());
        self.write_config();
        self
    }

    /// Password (and keyboard-interactive) answers via SSH_ASKPASS; BatchMode becomes no.
    pub fn with_password(mut self, pw: &str) -> SshClient {
        let path = self.tmp.path().join("password");
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .unwrap();
        set_mode(&path, 0o600);
        f.write_all(pw.as_bytes()).unwrap();
        self.password = true;
        self.write_config();
        self
    }

    /// An ssh_config option placed before the defaults, so it wins (e.g. `StrictHostKeyChecking yes`).
    pub fn with_option(mut self, key: &str, value: &str) -> SshClient {
        self.options.push((key.into(), value.into()));
        self.write_config();
        self
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn known_hosts_path(&self) -> PathBuf {
        self.tmp.path().join("known_hosts")
    }

    /// Pins a host key for 127.0.0.1:`port` in this client's known_hosts.
    pub fn trust_host_key(&self, port: u16, host_key_pub: &str) {
        let host = if port == 22 {
            "127.0.0.1".to_owned()
        } else {
            format!("[127.0.0.1]:{port}")
        };
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.known_hosts_path())
            .unwrap();
        writeln!(f, "{host} {}", host_key_pub.trim()).unwrap();
    }

    /// `ssh -F cfg -p port user@127.0.0.1 args...` (user passed verbatim; ssh splits at the LAST '@').
    pub fn ssh(&self, port: u16, user: &str, args: &[&str]) -> Command {
        let mut c = self.command("ssh");
        c.arg("-p")
            .arg(port.to_string())
            .arg(format!("{user}@127.0.0.1"))
            .args(args);
        c
    }

    /// `scp -F cfg -P port args...`; remote paths are written by the caller as 'user@127.0.0.1:/path' (a user
    /// with '#' needs [`scp_as`](Self::scp_as)).
    pub fn scp(&self, port: u16, args: &[&str]) -> Command {
        let mut c = self.command("scp");
        c.arg("-P").arg(port.to_string()).args(args);
        c
    }

    /// `scp -F cfg -P port -o User=<user> args...`, remote paths written as '127.0.0.1:/path'. For login names
    /// scp refuses inside 'user@127.0.0.1:/path' ("invalid user name": OpenSSH's scp rejects '#', quotes and
    /// spaces there), such as the gateway's 'USER#ACCOUNT@RESOURCE'; ssh takes them from -o User= unchanged.
    pub fn scp_as(&self, port: u16, user: &str, args: &[&str]) -> Command {
        let mut c = self.command("scp");
        c.arg("-P")
            .arg(port.to_string())
            .arg("-o")
            .arg(format!("User={user}"))
            .args(args);
        c
    }

    /// `sftp -F cfg -P port -b <batchfile> user@127.0.0.1`; sftp stops at the first failing command.
    pub fn sftp(&self, port: u16, user: &str, batch: &str) -> Command {
        let n = self.batches.fetch_add(1, Ordering::Relaxed);
        let file = self.tmp.path().join(format!("batch-{n}"));
        fs::write(&file, batch).unwrap();
        let mut c = self.command("sftp");
        if self.password {
            // `-b` makes sftp pass `-oBatchMode yes` to ssh, which turns askpass off; an earlier -o wins.
            c.args(["-o", "BatchMode=no"]);
        }
        c.arg("-P")
            .arg(port.to_string())
            .arg("-b")
            .arg(&file)
            .arg(format!("{user}@127.0.0.1"));
        c
    }

    fn command(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.arg("-F").arg(&self.config);
        c.env_remove("SSH_AUTH_SOCK").env_remove("DISPLAY");
        if self.password {
            c.env("SSH_ASKPASS", self.tmp.path().join("askpass"))
                .env("SSH_ASKPASS_REQUIRE", "force");
        } else {
            c.env_remove("SSH_ASKPASS").env_remove("SSH_ASKPASS_REQUIRE");
        }
        c.stdin(Stdio::null());
        c
    }

    fn write_config(&self) {
        let d = self.tmp.path();
        let mut s = String::from("Host *\n");
        for (k, v) in &self.options {
            s += &format!("  {k} {v}\n");
        }
        let yn = |b: bool| if b { "yes" } else { "no" };
        s += &format!("  UserKnownHostsFile \"{}\"\n", d.join("known_hosts").display());
        s += "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking accept-new\n  HashKnownHosts no\n";
        s += "  UpdateHostKeys no\n  CheckHostIP no\n";
        s += &format!("  BatchMode {}\n", yn(!self.password));
        s += "  ConnectTimeout 10\n  LogLevel ERROR\n  IdentityAgent none\n  IdentitiesOnly yes\n";
        s += &format!("  PubkeyAuthentication {}\n", yn(self.identity.is_some()));
        if let Some(id) = &self.identity {
            s += &format!("  IdentityFile \"{}\"\n", id.display());
        }
        s += &format!("  PasswordAuthentication {}\n", yn(self.password));
        s += &format!("  KbdInteractiveAuthentication {}\n", yn(self.password));
        s += "  NumberOfPasswordPrompts 1\n  ControlMaster no\n  ControlPath none\n";
        s += "  ForwardAgent no\n  ForwardX11 no\n  ClearAllForwardings no\n";
        fs::write(&self.config, s).unwrap();
    }
}

/// Generates an ed25519 key pair (no passphrase) as `dir/name` and `dir/name.pub`; returns (private key path,
/// public key line "ssh-ed25519 AAAA... name").
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let _ = fs::remove_file(&path);
    let _ = fs::remove_file(dir.join(format!("{name}.pub")));
    keygen_file(&path, name);
    let line = fs::read_to_string(dir.join(format!("{name}.pub")))
        .unwrap()
        .trim()
        .to_owned();
    (path, line)
}

/// Runs ssh-keygen for `path`; returns the public key without its comment ("ssh-ed25519 AAAA...").
fn keygen_file(path: &Path, comment: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    let line = fs::read_to_string(pub_path).unwrap();
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// Ok when this machine can run targets: root, the tools, and overlayfs inside a private mount namespace.
pub fn available() -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT.get_or_init(check_available).clone()
}

fn check_available() -> Result<(), String> {
    let hint = "(run the suite as root via tests/run.sh, which installs openssh-server/openssh-client)";
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1));
    if euid != Some("0") {
        return Err(format!("sshd targets need root (euid {euid:?}) {hint}"));
    }
    if !Path::new(SSHD).is_file() {
        return Err(format!("{SSHD} is missing {hint}"));
    }
    for tool in [
        "unshare",
        "nsenter",
        "mount",
        "useradd",
        "chpasswd",
        "ssh",
        "scp",
        "sftp",
        "ssh-keygen",
    ] {
        if !SYS_PATH.split(':').any(|d| Path::new(d).join(tool).is_file()) {
            return Err(format!("`{tool}` is missing {hint}"));
        }
    }
    // The real thing in miniature: an overlay mount in a private mount namespace.
    let tmp = tempfile::Builder::new()
        .prefix("postern-sshd-check-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    for d in ["lower", "upper", "work", "merged"] {
        fs::create_dir(tmp.path().join(d)).map_err(|e| e.to_string())?;
    }
    let p = |d: &str| tmp.path().join(d).display().to_string();
    let sh = format!(
        "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {} && touch {}/x",
        p("lower"),
        p("upper"),
        p("work"),
        p("merged"),
        p("merged")
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "/bin/sh", "-c", &sh])
        .env("PATH", SYS_PATH)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if !out.status.success() || !tmp.path().join("upper/x").exists() {
        return Err(format!(
            "overlayfs in a private mount namespace does not work here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Single-quotes for /bin/sh.
pub fn sq(s: impl AsRef<std::ffi::OsStr>) -> String {
    format!("'{}'", s.as_ref().to_string_lossy().replace('\'', "'\\''"))
}
