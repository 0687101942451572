//! Real RDP peers for end-to-end tests: an xrdp target (xrdp + xrdp-sesman + xorgxrdp from Debian) in a private
//! mount namespace, and the `xfreerdp` client under its own `Xvfb` display.
//!
//! The target works like the sshd targets in [`super::sshd`]: a holder process in its own mount namespace
//! (`unshare --mount --propagation private`) mounts overlayfs over `/etc`, `/run` and `/var/log` (upper layers in
//! the target's temp dir) and a private directory over `/tmp`, so the target's users and passwords, its xrdp and
//! sesman configuration, its TLS certificate, `/run/xrdp` and the X lock files exist only there. The temp dir lives
//! under `/var/tmp` (not `/tmp`, which the private mount hides inside the namespace). xrdp listens on
//! 127.0.0.1:`port`, sesman on `[::1]:sesman_port` (it binds `::1` whatever it is told), and sesman's X displays
//! start at an unusual number (X abstract sockets are shared with the host's network namespace). Both logs are
//! written at DEBUG level into the temp dir, readable by the test. Drop kills everything in the namespace.
//!
//! Needs root, util-linux, `passwd`, `openssl`, `xrdp`, `xorgxrdp`, `freerdp2-x11`, `xvfb`; `x11-apps` (`xwd`)
//! and `imagemagick` (`convert`) for screenshots, `xdotool` for keys and clicks into a client. `tests/run.sh` installs them. Call [`available`] for a clear
//! reason when something is missing.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::sshd::{free_port, kill_all_in_ns, set_mode, sq, NsHolder, SYS_PATH};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Which log of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Log {
    /// xrdp.log: "login successful for user U on display N", "login failed for user U".
    Xrdp,
    /// sesman.log: "++ created session (access granted): username U", "AUTHFAIL: user=U".
    Sesman,
}

/// A running xrdp target.
pub struct XrdpTarget {
    /// xrdp's port on 127.0.0.1.
    pub port: u16,
    /// sesman's port on [::1].
    pub sesman_port: u16,
    /// First X display sesman uses.
    pub display_offset: u32,
    /// The target's temp dir (homes in `dir/home/<user>`).
    pub dir: PathBuf,
    holder: Option<Child>,
    daemons: Vec<Child>,
    mnt_ns: String,
    /// Keeps the namespace number ours until Drop has killed everything in it (see `SshTarget::mnt_ns_pin`).
    mnt_ns_pin: Option<fs::File>,
    _tmp: tempfile::TempDir,
}

impl XrdpTarget {
    /// Starts xrdp and sesman in a private mount namespace with `users` (name, password); panics with the reason
    /// (and the logs) when it cannot.
    pub fn start(users: &[(&str, &str)]) -> XrdpTarget {
        if let Err(e) = available() {
            panic!("cannot start an xrdp target: {e}");
        }
        let tmp = tempfile::Builder::new()
            .prefix("postern-xrdp-")
            .tempdir_in("/var/tmp")
            .expect("temp dir for the xrdp target");
        let dir = tmp.path().to_owned();
        let d = dir.to_str().expect("utf-8 temp dir").to_owned();
        assert!(
            !d.contains([',', ':', '\'', ' ']),
            "temp dir {d} unusable in overlay options"
        );
        set_mode(&dir, 0o755);
        fs::create_dir_all(dir.join("tmp")).unwrap();
        set_mode(&dir.join("tmp"), 0o1777);
        fs::create_dir_all(dir.join("home")).unwrap();
        set_mode(&dir.join("home"), 0o755);

        // The target's own TLS certificate.
        make_certificate(&dir);

        // The namespace holder (see `NsHolder`), with a private /tmp (X lock files) and xrdp's socket dir.
        let NsHolder {
            holder,
            mnt_ns,
            mnt_ns_pin,
            own_ns,
        } = NsHolder::spawn(
            &dir,
            &format!("mount --bind {d}/tmp /tmp\nmkdir -p /run/xrdp/sockdir\n"),
        );
        let mut t = XrdpTarget {
            port: 0,
            sesman_port: 0,
            display_offset: free_display(400),
            dir,
            holder: Some(holder),
            daemons: Vec::new(),
            mnt_ns,
            mnt_ns_pin,
            _tmp: tmp,
        };
        // From here on Drop cleans up when something panics.
        assert!(
            t.mnt_ns.starts_with("mnt:") && t.mnt_ns != own_ns,
            "holder is not in a private mount namespace ({} vs {own_ns})",
            t.mnt_ns
        );
        for (name, pw) in users {
            t.add_user(name, pw);
        }
        t.port = free_port();
        t.sesman_port = free_port();
        let sh = format!(
            "set -e\ncd /etc/xrdp\n\
             sed -i -e 's|^port=3389$|port=tcp://127.0.0.1:{port}|' -e 's|^certificate=.*|certificate={d}/cert.pem|' \
               -e 's|^key_file=.*|key_file={d}/key.pem|' -e 's|^LogFile=.*|LogFile={d}/xrdp.log|' \
               -e 's|^EnableSyslog=.*|EnableSyslog=false|' -e 's|^LogLevel=.*|LogLevel=DEBUG|' \
               -e 's|^security_layer=.*|security_layer=tls|' xrdp.ini\n\
             sed -i -e 's|^ListenPort=.*|ListenPort={sport}|' -e 's|^X11DisplayOffset=.*|X11DisplayOffset={disp}|' \
               -e 's|^LogFile=.*|LogFile={d}/sesman.log|' -e 's|^EnableSyslog=.*|EnableSyslog=false|' \
               -e 's|^LogLevel=.*|LogLevel=DEBUG|' sesman.ini\n\
             grep -q '^port=tcp://127.0.0.1:{port}$' xrdp.ini\n\
             grep -q '^ListenPort={sport}$' sesman.ini\n\
             printf '#!/bin/sh\\nexec sleep 86400\\n' > startwm.sh\n",
            port = t.port,
            sport = t.sesman_port,
            disp = t.display_offset,
        );
        let (code, out, err) = t.exec_in_ns(&sh);
        assert_eq!(code, 0, "configuring xrdp failed:\n{out}{err}");
        t.spawn_daemon("xrdp-sesman", &["-n"], "sesman.out");
        t.spawn_daemon("xrdp", &["-n"], "xrdp.out");
        let deadline = Instant::now() + START_TIMEOUT;
        while !(listening(t.port) && listening(t.sesman_port)) {
            if Instant::now() > deadline {
                panic!(
                    "xrdp/sesman not listening on {}/{} after {START_TIMEOUT:?}:\n{}\n{}\n{}\n{}",
                    t.port,
                    t.sesman_port,
                    t.read("xrdp.out"),
                    t.read("sesman.out"),
                    t.log(Log::Xrdp),
                    t.log(Log::Sesman)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        t
    }

    /// Gives the target a new TLS certificate (and key) and restarts xrdp (SIGTERM, then a new `xrdp -n`);
    /// sesman and its sessions stay. Returns the new certificate's fingerprint.
    pub fn renew_certificate(&mut self) -> String {
        let old = self.cert_fingerprint();
        make_certificate(&self.dir);
        let new = self.cert_fingerprint();
        assert_ne!(old, new, "openssl made the same certificate twice");
        let i = self
            .daemons
            .iter()
            .position(|c| fs::read_to_string(format!("/proc/{}/comm", c.id())).is_ok_and(|n| n.trim() == "xrdp"))
            .expect("the xrdp daemon is running");
        let mut xrdp = self.daemons.remove(i);
        let _ = Command::new("kill").args(["-TERM", &xrdp.id().to_string()]).status();
        let deadline = Instant::now() + START_TIMEOUT;
        while xrdp.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = xrdp.kill();
                let _ = xrdp.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        while listening(self.port) {
            assert!(
                Instant::now() < deadline,
                "xrdp still listens on {} after SIGTERM",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // A pid file left behind would make the new xrdp think it is already running.
        let _ = self.exec_in_ns("rm -f /run/xrdp/xrdp.pid /var/run/xrdp/xrdp.pid");
        self.spawn_daemon("xrdp", &["-n"], "xrdp-restarted.out");
        while !listening(self.port) {
            if Instant::now() > deadline {
                panic!(
                    "xrdp did not listen again on {}:\n{}\n{}",
                    self.port,
                    self.read("xrdp-restarted.out"),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        new
    }

    fn spawn_daemon(&mut self, prog: &str, args: &[&str], out: &str) {
        let holder = self.holder.as_ref().expect("namespace holder").id();
        let f = fs::File::create(self.dir.join(out)).unwrap();
        let child = Command::new("nsenter")
            .args(["-t", &holder.to_string(), "-m", "--", prog])
            .args(args)
            .env("PATH", SYS_PATH)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {prog}: {e}"));
        self.daemons.push(child);
    }

    fn read(&self, name: &str) -> String {
        String::from_utf8_lossy(&fs::read(self.dir.join(name)).unwrap_or_default()).into_owned()
    }

    /// Runs `sh -c <sh>` inside the namespace with `input` on stdin; returns (exit code or -1, stdout, stderr).
    pub fn exec_in_ns_with_input(&self, sh: &str, input: &[u8]) -> (i32, String, String) {
        let holder = self.holder.as_ref().expect("namespace holder").id();
        let mut child = Command::new("nsenter")
            .args(["-t", &holder.to_string(), "-m", "--", "/bin/sh", "-c", sh])
            .env("PATH", SYS_PATH)
            .env("LC_ALL", "C")
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsenter");
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().expect("nsenter output");
        let _ = writer.join();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `sh -c <sh>` inside the namespace.
    pub fn exec_in_ns(&self, sh: &str) -> (i32, String, String) {
        self.exec_in_ns_with_input(sh, b"")
    }

    /// Creates a user that exists only in this target (password through chpasswd's stdin, never argv).
    pub fn add_user(&self, name: &str, password: &str) {
        assert!(
            !name.is_empty()
                && !name.starts_with('-')
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c)),
            "unsupported target user name {name:?}"
        );
        let home = self.dir.join("home").join(name);
        let (code, out, err) = self.exec_in_ns(&format!("useradd -m -d {} -s /bin/sh {}", sq(&home), sq(name)));
        assert_eq!(code, 0, "useradd {name} failed:\n{out}{err}");
        self.set_password(name, password);
    }

    /// Sets a user's password inside the target.
    pub fn set_password(&self, name: &str, password: &str) {
        assert!(!password.contains('\n'), "password with a newline");
        let (code, out, err) = self.exec_in_ns_with_input("chpasswd", format!("{name}:{password}\n").as_bytes());
        assert_eq!(code, 0, "chpasswd for {name} failed:\n{out}{err}");
    }

    /// `SHA256:<hex>` of the target's TLS certificate (DER), from openssl.
    pub fn cert_fingerprint(&self) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(self.dir.join("cert.pem"))
            .output()
            .expect("run openssl x509");
        let text = String::from_utf8_lossy(&out.stdout);
        let hex = text
            .trim()
            .rsplit('=')
            .next()
            .unwrap_or_default()
            .replace(':', "")
            .to_lowercase();
        assert_eq!(hex.len(), 64, "openssl x509 -fingerprint: {text}");
        format!("SHA256:{hex}")
    }

    /// The target's mount namespace (`mnt:[N]`): every process of the target runs in it.
    pub fn mnt_ns(&self) -> &str {
        &self.mnt_ns
    }

    /// One of the target's logs so far.
    pub fn log(&self, which: Log) -> String {
        self.read(match which {
            Log::Xrdp => "xrdp.log",
            Log::Sesman => "sesman.log",
        })
    }

    /// Waits until the log contains `needle`; false after `timeout`.
    pub fn wait_for_log(&self, which: Log, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log(which).contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Both logs, for assertion messages.
    pub fn logs(&self) -> String {
        format!(
            "--- xrdp.log ---\n{}\n--- sesman.log ---\n{}",
            tail(&self.log(Log::Xrdp), 60),
            tail(&self.log(Log::Sesman), 60)
        )
    }
}

impl Drop for XrdpTarget {
    fn drop(&mut self) {
        // Kill everything in the namespace (xrdp's per-connection forks, sesman's sessions and their Xorg, chansrv,
        // the holder), with the guards of `kill_all_in_ns`.
        kill_all_in_ns(&self.mnt_ns, self.mnt_ns_pin.as_ref());
        for c in self.daemons.iter_mut().chain(self.holder.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        drop(self.mnt_ns_pin.take());
    }
}

/// An `Xvfb` display for one client.
pub struct Xvfb {
    pub display: u32,
    child: Child,
}

impl Xvfb {
    /// Starts Xvfb (1024x768x24, no TCP) on an unused display; waits until it answers.
    pub fn start() -> Xvfb {
        let display = free_display(700);
        let child = Command::new("Xvfb")
            .arg(format!(":{display}"))
            // No lock file and no socket file in the host's /tmp: only the abstract socket, gone with the process.
            .args([
                "-screen",
                "0",
                "1024x768x24",
                "-nolisten",
                "tcp",
                "-nolisten",
                "unix",
                "-nolock",
            ])
            .env("PATH", SYS_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn Xvfb");
        let x = Xvfb { display, child };
        let deadline = Instant::now() + START_TIMEOUT;
        while !abstract_x_socket_taken(display) {
            assert!(Instant::now() < deadline, "Xvfb :{display} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The socket may exist before the server accepts clients ("failed to open display" otherwise).
        loop {
            let answers = Command::new("xwd")
                .args(["-root", "-silent", "-display", &x.display_name(), "-out", "/dev/null"])
                .env("PATH", SYS_PATH)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if answers {
                break;
            }
            assert!(Instant::now() < deadline, "Xvfb :{display} does not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
        x
    }

    /// The Xvfb process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `:N`.
    pub fn display_name(&self) -> String {
        format!(":{}", self.display)
    }

    /// Saves the whole screen as PNG (xwd | convert).
    pub fn screenshot(&self, png: &Path) {
        let xwd = png.with_extension("xwd");
        let st = Command::new("xwd")
            .args(["-root", "-silent", "-display", &self.display_name(), "-out"])
            .arg(&xwd)
            .env("PATH", SYS_PATH)
            .status()
            .expect("run xwd");
        assert!(st.success(), "xwd failed");
        let st = Command::new("convert")
            .arg(format!("xwd:{}", xwd.display()))
            .arg(png)
            .env("PATH", SYS_PATH)
            .status()
            .expect("run convert");
        assert!(st.success(), "convert failed");
    }
}

impl Xvfb {
    /// Runs `xdotool args...` on this display (keys and clicks into the client's window, as a user would); panics
    /// when xdotool is missing (`tests/run.sh` installs it) or fails.
    pub fn xdotool(&self, args: &[&str]) {
        let out = Command::new("xdotool")
            .args(args)
            .env_clear()
            .env("PATH", SYS_PATH)
            .env("DISPLAY", self.display_name())
            .output()
            .expect("run xdotool (Debian package xdotool; tests/run.sh installs it)");
        assert!(
            out.status.success(),
            "xdotool {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        kill_group(&self.child);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `xfreerdp` (its own process group, killed on drop).
pub struct FreeRdp {
    child: Child,
    log_path: PathBuf,
}

impl FreeRdp {
    /// Starts `xfreerdp /v:127.0.0.1:port /u:user /p:password /cert:ignore /sec:tls` on `x`'s display, output in
    /// `log`; `extra` args are appended.
    pub fn connect(x: &Xvfb, port: u16, user: &str, password: &str, extra: &[&str], log: &Path) -> FreeRdp {
        // Now and then (a loaded machine) xfreerdp cannot open a display that answered `xwd` a moment before. It
        // gives up before any RDP connection, so starting it again changes nothing on the server's side.
        for _ in 0..3 {
            let mut c = Self::spawn(x, port, user, password, extra, log);
            let deadline = Instant::now() + Duration::from_millis(300);
            let display_failed = loop {
                if c.try_wait().is_some() {
                    break c.log().contains("failed to open display");
                }
                if Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if !display_failed {
                return c;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("xfreerdp cannot open the display {}", x.display_name());
    }

    fn spawn(x: &Xvfb, port: u16, user: &str, password: &str, extra: &[&str], log: &Path) -> FreeRdp {
        let f = fs::File::create(log).unwrap();
        let child = Command::new("xfreerdp")
            .arg(format!("/v:127.0.0.1:{port}"))
            .arg(format!("/u:{user}"))
            .arg(format!("/p:{password}"))
            .args([
                "/cert:ignore",
                "/sec:tls",
                "/size:800x600",
                "-clipboard",
                "/log-level:INFO",
            ])
            .args(extra)
            .env_clear()
            .env("PATH", SYS_PATH)
            .env("DISPLAY", x.display_name())
            .env("HOME", log.parent().unwrap_or(Path::new("/")))
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .process_group(0)
            .spawn()
            .expect("spawn xfreerdp");
        FreeRdp {
            child,
            log_path: log.to_owned(),
        }
    }

    /// The xfreerdp process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What xfreerdp printed so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// The exit status once it exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits at most `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for FreeRdp {
    fn drop(&mut self) {
        kill_group(&self.child);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The colour of one pixel as `#RRGGBB` (ImageMagick `convert … txt:-`).
pub fn pixel(image: &Path, x: u32, y: u32) -> String {
    let out = Command::new("convert")
        .arg(image)
        .args(["-crop", &format!("1x1+{x}+{y}"), "-depth", "8", "txt:-"])
        .env("PATH", SYS_PATH)
        .output()
        .expect("run convert");
    assert!(
        out.status.success(),
        "convert failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find(|w| w.starts_with('#') && w.len() >= 7)
        .map(|w| w[..7].to_uppercase())
        .unwrap_or_else(|| panic!("no colour in {text:?}"))
}

/// A new self-signed certificate and RSA key for an xrdp target: `dir/cert.pem`, `dir/key.pem`.
fn make_certificate(dir: &Path) {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=postern-xrdp-test",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SIGKILL to the child's process group (spawned with `process_group(0)`, so the group id is its pid).
fn kill_group(child: &Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether something listens on TCP `port` (IPv4 or IPv6), from /proc/net.
fn listening(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|p| {
        fs::read_to_string(p).unwrap_or_default().lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&hex) && f[3] == "0A"
        })
    })
}

/// Whether X display `n` is in use on this host (its abstract socket is shared across mount namespaces).
fn abstract_x_socket_taken(n: u32) -> bool {
    let needle = format!("@/tmp/.X11-unix/X{n}");
    fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some(needle.as_str()))
}

/// A display number from `base` up whose next 10 numbers are unused (sesman may take several), different for
/// each call in this process and spread by pid across concurrent test processes. Panics when all 29 candidates
/// are in use.
fn free_display(base: u32) -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let spread = (std::process::id() % 20) * 10;
    for _ in 0..29 {
        let n = base + (spread + NEXT.fetch_add(10, Ordering::SeqCst)) % 290;
        if !(n..n + 10).any(abstract_x_socket_taken) {
            return n;
        }
    }
    panic!("no free X display between {base} and {}", base + 300);
}

/// Ok when this machine can run xrdp targets and FreeRDP clients.
pub fn available() -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT.get_or_init(check_available).clone()
}

fn check_available() -> Result<(), String> {
    super::sshd::available()?;
    let hint = "(run the suite as root via tests/run.sh, which installs xrdp, xorgxrdp, freerdp2-x11, xvfb)";
    for tool in [
        "xrdp",
        "xrdp-sesman",
        "xfreerdp",
        "Xvfb",
        "openssl",
        "useradd",
        "chpasswd",
    ] {
        if !SYS_PATH.split(':').any(|d| Path::new(d).join(tool).is_file()) {
            return Err(format!("`{tool}` is missing {hint}"));
        }
    }
    if !Path::new("/usr/lib/xorg/Xorg").is_file() || !Path::new("/etc/X11/xrdp/xorg.conf").is_file() {
        return Err(format!("Xorg or xorgxrdp is missing {hint}"));
    }
    Ok(())
}
