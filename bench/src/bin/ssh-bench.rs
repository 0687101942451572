//! `ssh-bench`: the Postern SSH gateway against direct `ssh` and OpenSSH ProxyJump, in one run, against the
//! same target sshd.
//!
//! ```text
//! cargo run --release -p postern-bench --bin ssh-bench -- [--quick] [--out PATH | --no-write] [--only stream]
//! ```
//!
//! Needs root and the packages `tests/run.sh` installs (openssh-server, openssh-client, util-linux, passwd):
//! the target sshd and the bastion sshd run in private mount namespaces through `tests/common/sshd.rs`, with
//! their own users; the host's accounts are never touched. Postern runs in this process (release build), on its
//! own tokio runtime like `postern run`; everything else is the real OpenSSH clients and servers on loopback.
//!
//! Measured, paths interleaved (direct, ProxyJump, Postern, direct, ...) so that drift hits all paths alike:
//! 1. connect + auth + `true` latency (median, p90),
//! 2. stdout throughput of `head -c 1G /dev/zero` with chacha20-poly1305 and aes256-gcm,
//! 3. scp and sftp of a 256 MiB random file, upload and download,
//! 4. memory per idle session through Postern (PSS of this process from /proc/self/smaps_rollup), with password
//!    and with public-key logins to Postern, and the OpenSSH bastion's cost per idle ProxyJump session as a
//!    reference.
//!
//! Writes a markdown report to `docs/benchmarks.md` (a full run) and prints it. `--quick` shrinks everything
//! (64 MiB, 5 latency runs, 20 idle sessions, one run per transfer) for a smoke run and does not write the file
//! unless `--out` is given. A full run first waits (up to 15 min) for the machine to be quiet and reports the
//! background load it saw. A full run takes about 6 minutes on 2 cores, plus the release build.
//!
//! `--only stream` (stdout throughput) and `--only files` (scp and sftp) run that full-size part alone and write
//! nothing (for profiling Postern under `perf record -p`).
//!
//! Environment: `POSTERN_BENCH_REVISION` overrides the revision named in the report (default: `git rev-parse` of
//! the source tree, "+ local changes" when it is dirty); `SSH_BENCH_SMAPS_DIR=dir` keeps copies of
//! /proc/self/smaps at each memory stage.

#[path = "../../../tests/common/sshd.rs"]
mod sshd;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use postern_bench::{
    background_cores, clk_tck, keep_blocks, machine_busy_seconds, median, percentile, revision, self_cpu_seconds, sh,
    smaps_rollup, smaps_rollup_self, sorted, trim_heap, InProcess,
};
use serde_json::json;
use sshd::{SshClient, SshTarget, TargetOptions, TargetUser};

/// The target account's password (also the bastion user's: one askpass answers both ProxyJump prompts).
const TARGET_PW: &str = "bench-target-pw-1";
/// The Postern user's password.
const ALICE_PW: &str = "alice bench passphrase 1";
const KEX: &str = "curve25519-sha256";
const CHACHA: &str = "chacha20-poly1305@openssh.com";
const AES: &str = "aes256-gcm@openssh.com";
const MIB: u64 = 1024 * 1024;
const USAGE: &str = "ssh-bench [--quick] [--out PATH | --no-write] [--only stream|files]";

// ---------------------------------------------------------------------------------------------------------------
// Settings

struct Settings {
    quick: bool,
    latency_runs: usize,
    stream_bytes: u64,
    stream_reps: usize,
    file_bytes: u64,
    file_reps: usize,
    idle_sessions: usize,
    out: Option<PathBuf>,
    /// `--only stream|files`: that part alone, nothing written.
    only: Option<Part>,
    /// How long to wait for the machine to be quiet before starting.
    wait_idle_secs: u64,
}

/// A part of the benchmark that `--only` runs alone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Stdout throughput.
    Stream,
    /// scp and sftp.
    Files,
}

fn settings() -> Result<Settings> {
    let mut quick = false;
    let mut out: Option<Option<PathBuf>> = None;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--no-write" => out = Some(None),
            "--out" => out = Some(Some(PathBuf::from(args.next().context("--out needs a path")?))),
            "--only" => match args.next().as_deref() {
                Some("stream") => only = Some(Part::Stream),
                Some("files") => only = Some(Part::Files),
                other => bail!("--only takes `stream` or `files`, not {other:?}"),
            },
            "-h" | "--help" => {
                println!("usage: {USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (usage: {USAGE})"),
        }
    }
    let default_out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
    let out = if only.is_some() {
        None
    } else {
        out.unwrap_or(if quick { None } else { Some(default_out) })
    };
    Ok(if quick {
        Settings {
            quick,
            latency_runs: 5,
            stream_bytes: 64 * MIB,
            stream_reps: 1,
            file_bytes: 64 * MIB,
            file_reps: 1,
            idle_sessions: 20,
            out,
            only,
            wait_idle_secs: 0,
        }
    } else {
        Settings {
            quick,
            latency_runs: 20,
            stream_bytes: 1024 * MIB,
            stream_reps: 5,
            file_bytes: 256 * MIB,
            file_reps: 5,
            idle_sessions: 200,
            out,
            only,
            wait_idle_secs: if only.is_some() { 0 } else { 900 },
        }
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Paths

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PathKind {
    Direct,
    Jump,
    Postern,
}

const PATHS: [PathKind; 3] = [PathKind::Direct, PathKind::Jump, PathKind::Postern];

impl PathKind {
    fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct ssh",
            PathKind::Jump => "ProxyJump (ssh -J)",
            PathKind::Postern => "Postern",
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

/// The OpenSSH clients of one configuration (kex pinned, optional cipher) for the three paths.
struct Clients {
    /// For direct and ProxyJump: answers the target's (and the bastion's) password prompt.
    openssh: SshClient,
    /// For Postern: answers Postern's password prompt (alice's password).
    postern: SshClient,
}

impl Clients {
    fn new(cipher: Option<&str>) -> Clients {
        let mk = |pw: &str| {
            // Options in the -F file apply to the `ssh -W` ProxyJump spawns too (it only gets -F, -l, -p, -J).
            let mut c = SshClient::new().with_password(pw).with_option("KexAlgorithms", KEX);
            if let Some(ciph) = cipher {
                c = c.with_option("Ciphers", ciph);
            }
            c
        };
        Clients {
            openssh: mk(TARGET_PW),
            postern: mk(ALICE_PW),
        }
    }
}

struct Bed {
    target: SshTarget,
    bastion: SshTarget,
    postern_port: u16,
}

const TARGET_USER: &str = "bench";
const HOP_USER: &str = "hop";
const POSTERN_LOGIN: &str = "alice#bench@tgt";

impl Bed {
    fn jump(&self) -> String {
        format!("{HOP_USER}@127.0.0.1:{}", self.bastion.port)
    }

    /// `ssh ... <args>` over `path`.
    fn ssh(&self, c: &Clients, path: PathKind, args: &[&str]) -> Command {
        match path {
            PathKind::Direct => c.openssh.ssh(self.target.port, TARGET_USER, args),
            PathKind::Jump => {
                let j = self.jump();
                let mut a: Vec<&str> = vec!["-J", &j];
                a.extend_from_slice(args);
                c.openssh.ssh(self.target.port, TARGET_USER, &a)
            }
            PathKind::Postern => c.postern.ssh(self.postern_port, POSTERN_LOGIN, args),
        }
    }

    /// `scp -o User=... <args>` over `path`; remote paths are written `127.0.0.1:PATH`.
    fn scp(&self, c: &Clients, path: PathKind, args: &[&str]) -> Command {
        match path {
            PathKind::Direct => c.openssh.scp_as(self.target.port, TARGET_USER, args),
            PathKind::Jump => {
                let j = self.jump();
                let mut a: Vec<&str> = vec!["-J", &j];
                a.extend_from_slice(args);
                c.openssh.scp_as(self.target.port, TARGET_USER, &a)
            }
            PathKind::Postern => c.postern.scp_as(self.postern_port, POSTERN_LOGIN, args),
        }
    }

    /// `sftp -b batch` over `path`. Built here rather than with `SshClient::sftp` because ProxyJump needs `-J`
    /// before the destination; same -F file and askpass as the harness's clients.
    fn sftp(&self, c: &Clients, path: PathKind, batch: &Path) -> Result<Command> {
        let (client, port, user, jump) = match path {
            PathKind::Direct => (&c.openssh, self.target.port, TARGET_USER, None),
            PathKind::Jump => (&c.openssh, self.target.port, TARGET_USER, Some(self.jump())),
            PathKind::Postern => (&c.postern, self.postern_port, POSTERN_LOGIN, None),
        };
        let askpass = client
            .config_path()
            .parent()
            .map(|d| d.join("askpass"))
            .filter(|p| p.is_file())
            .ok_or_else(|| anyhow!("the harness's askpass script is not next to its ssh config any more"))?;
        let mut cmd = Command::new("sftp");
        cmd.arg("-F").arg(client.config_path());
        cmd.env_remove("SSH_AUTH_SOCK")
            .env_remove("DISPLAY")
            .env("SSH_ASKPASS", askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .stdin(Stdio::null());
        // `-b` makes sftp pass BatchMode=yes to ssh, which disables askpass; an earlier -o wins.
        cmd.args(["-o", "BatchMode=no"]);
        if let Some(j) = jump {
            cmd.arg("-J").arg(j);
        }
        cmd.arg("-P")
            .arg(port.to_string())
            .arg("-b")
            .arg(batch)
            .arg(format!("{user}@127.0.0.1"));
        Ok(cmd)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Postern in-process

struct Postern {
    inner: InProcess,
    ssh_port: u16,
    /// alice's registered SSH key (private key file).
    alice_key: PathBuf,
}

impl Postern {
    /// Starts Postern in this process (`postern_bench::InProcess`), creates alice (password_administrator) with
    /// her SSH key, the resource `tgt` for the target and the account `bench` with the target password.
    fn start(target_port: u16) -> Result<Postern> {
        let inner = InProcess::start(&[])?;
        let ssh_port = inner.running().ssh_addr.port();
        let (alice_key, alice_pub) = sshd::keygen(inner.dir.path(), "alice_key");
        let (alice_id, alice) = inner.create_user("alice", "password_administrator", ALICE_PW)?;
        inner.call(
            "register alice's SSH key",
            reqwest::Method::POST,
            &format!("/api/v1/users/{alice_id}/keys"),
            &alice,
            json!({"public_key": alice_pub}),
            201,
        )?;
        let rid = inner.create_resource(&alice, "tgt", "linux", target_port)?;
        inner.create_account(&alice, &rid, TARGET_USER, TARGET_PW)?;
        Ok(Postern {
            inner,
            ssh_port,
            alice_key,
        })
    }

    fn recordings(&self) -> (usize, u64) {
        self.inner.recordings()
    }

    fn live_sessions(&self) -> usize {
        self.inner.live_sessions()
    }

    fn stop(self) {
        self.inner.stop();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Measuring helpers

fn run_checked(mut cmd: Command, what: &str) -> Result<(Duration, String)> {
    cmd.stdout(Stdio::null());
    let t0 = Instant::now();
    let out = cmd.output().with_context(|| format!("spawn {what}"))?;
    let dt = t0.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, err.trim());
    }
    Ok((dt, err))
}

/// With SSH_BENCH_SMAPS_DIR set, keeps a copy of /proc/self/smaps per memory stage (to look into the figures).
fn dump_smaps(stage: &str) {
    if let Some(dir) = std::env::var_os("SSH_BENCH_SMAPS_DIR") {
        let _ = fs::create_dir_all(&dir);
        let _ = fs::copy("/proc/self/smaps", Path::new(&dir).join(format!("{stage}.smaps")));
    }
}

/// glibc malloc arena heaps of this process: anonymous mappings that start on a 64 MiB boundary and are at most
/// 64 MiB long (non-main arenas reserve their heaps that way). Returns (count, resident KiB).
fn arena_heaps() -> (usize, u64) {
    const HEAP_MAX: u64 = 64 * MIB;
    let text = fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let (mut n, mut rss, mut cur) = (0, 0, false);
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((a, b)) = first
            .split_once('-')
            .filter(|(a, b)| !a.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_hexdigit()))
        {
            let (a, b) = (
                u64::from_str_radix(a, 16).unwrap_or(1),
                u64::from_str_radix(b, 16).unwrap_or(0),
            );
            let anonymous = f.nth(4).is_none();
            cur = anonymous && a % HEAP_MAX == 0 && b > a && b - a <= HEAP_MAX;
            if cur {
                n += 1;
            }
        } else if cur && first == "Rss:" {
            rss += f.next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    (n, rss)
}

/// The mount namespace of a process ("mnt:[...]").
fn mnt_ns(pid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.display().to_string())
}

/// Pids in mount namespace `ns` whose argv is exactly `argv`, or (with `argv` empty) all of them.
fn pids_in_ns(ns: &str, argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0u8])).collect();
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if mnt_ns(pid).as_deref() != Some(ns) {
            continue;
        }
        if argv.is_empty() || fs::read(e.path().join("cmdline")).ok().as_deref() == Some(&want[..]) {
            out.push(pid);
        }
    }
    out
}

/// Sum of PSS (KiB) over the processes of namespace `ns`, and how many there are.
fn pss_of_ns(ns: &str) -> (u64, usize) {
    let pids = pids_in_ns(ns, &[]);
    let mut sum = 0;
    for p in &pids {
        if let Ok(t) = fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
            sum += smaps_rollup(&t).map(|x| x.0).unwrap_or(0);
        }
    }
    (sum, pids.len())
}

fn kill_pids(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(|p| p.to_string()))
        .stderr(Stdio::null())
        .status();
}

/// The clients this program started; killed (by pid) and reaped when dropped.
#[derive(Default)]
struct Children(Vec<Child>);

impl Children {
    fn alive(&mut self) -> usize {
        self.0
            .iter_mut()
            .filter_map(|c| c.try_wait().ok())
            .filter(|s| s.is_none())
            .count()
    }
    fn stop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The measurements

struct Latency {
    /// Seconds per run, per path.
    runs: [Vec<f64>; 3],
}

fn measure_latency(bed: &Bed, c: &Clients, n: usize) -> Result<Latency> {
    let mut runs: [Vec<f64>; 3] = Default::default();
    for i in 0..n {
        for p in PATHS {
            let (dt, _) = run_checked(bed.ssh(c, p, &["true"]), &format!("{} true (run {i})", p.name()))?;
            runs[p.idx()].push(dt.as_secs_f64());
        }
    }
    Ok(Latency { runs })
}

#[derive(Debug)]
struct Stream {
    cipher: &'static str,
    /// Seconds per run, per path.
    secs: [Vec<f64>; 3],
    /// Postern's CPU seconds per run (this process).
    postern_cpu: Vec<f64>,
    /// Machine-wide busy CPU seconds per run, per path.
    busy: [Vec<f64>; 3],
}

/// "Transferred: sent N, received M bytes" (LogLevel VERBOSE); the largest `received` (ProxyJump's inner ssh).
fn received_bytes(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .filter_map(|l| {
            let r = l.split("received ").nth(1)?;
            r.split_whitespace().next()?.trim_end_matches(',').parse::<u64>().ok()
        })
        .max()
}

fn measure_streams(bed: &Bed, s: &Settings, tck: f64) -> Result<Vec<Stream>> {
    let cmd = format!("head -c {} /dev/zero", s.stream_bytes);
    let clients = [(CHACHA, Clients::new(Some(CHACHA))), (AES, Clients::new(Some(AES)))];
    let mut results: Vec<Stream> = clients
        .iter()
        .map(|(name, _)| Stream {
            cipher: name,
            secs: Default::default(),
            postern_cpu: vec![],
            busy: Default::default(),
        })
        .collect();
    // Warm-up (host keys are accepted in these clients' own known_hosts).
    for (_, c) in &clients {
        for p in PATHS {
            run_checked(bed.ssh(c, p, &["true"]), "warm-up")?;
        }
    }
    for rep in 0..s.stream_reps {
        for (ci, (_, c)) in clients.iter().enumerate() {
            for p in PATHS {
                let cpu0 = self_cpu_seconds(tck);
                let busy0 = machine_busy_seconds(tck);
                let (dt, err) = run_checked(
                    bed.ssh(c, p, &["-o", "LogLevel=VERBOSE", &cmd]),
                    &format!("{} stream rep {rep}", p.name()),
                )?;
                let cpu = self_cpu_seconds(tck) - cpu0;
                let busy = machine_busy_seconds(tck) - busy0;
                let got = received_bytes(&err).unwrap_or(0);
                if got < s.stream_bytes {
                    bail!(
                        "{}: the client received {got} bytes, less than {} (stderr: {})",
                        p.name(),
                        s.stream_bytes,
                        err.trim()
                    );
                }
                results[ci].secs[p.idx()].push(dt.as_secs_f64());
                results[ci].busy[p.idx()].push(busy);
                if p == PathKind::Postern {
                    results[ci].postern_cpu.push(cpu);
                }
                eprintln!(
                    "  stream {} {:<20} {:7.1} MiB/s, machine busy {:.0} %",
                    clients[ci].0,
                    p.name(),
                    s.stream_bytes as f64 / MIB as f64 / dt.as_secs_f64(),
                    busy / dt.as_secs_f64() * 100.0
                );
            }
        }
    }
    Ok(results)
}

#[derive(Clone, Copy)]
enum FileOp {
    ScpUp,
    ScpDown,
    SftpUp,
    SftpDown,
}

impl FileOp {
    fn name(self) -> &'static str {
        match self {
            FileOp::ScpUp => "scp upload",
            FileOp::ScpDown => "scp download",
            FileOp::SftpUp => "sftp upload (put)",
            FileOp::SftpDown => "sftp download (get)",
        }
    }
}

struct FileResult {
    op: FileOp,
    secs: [Vec<f64>; 3],
    /// Machine-wide busy CPU seconds per run, per path.
    busy: [Vec<f64>; 3],
}

fn measure_files(bed: &Bed, s: &Settings, tck: f64) -> Result<Vec<FileResult>> {
    let c = Clients::new(None);
    let work = tempfile::Builder::new().prefix("postern-bench-files-").tempdir()?;
    let src = work.path().join("random.bin");
    let st = Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", src.display()))
        .args(["bs=1M", &format!("count={}", s.file_bytes / MIB), "status=none"])
        .status()?;
    if !st.success() {
        bail!("dd of the random file failed");
    }
    let sum = |p: &Path| -> Result<String> {
        let o = Command::new("sha256sum").arg(p).output()?;
        Ok(String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned())
    };
    let want = sum(&src)?;
    let home = bed.target.home(TARGET_USER);
    // The download source, readable by the target user.
    fs::copy(&src, home.join("down.bin"))?;
    let local = work.path().join("local.bin");
    let up = home.join("up.bin");
    let batch_up = work.path().join("batch-up");
    let batch_down = work.path().join("batch-down");
    fs::write(&batch_up, format!("put {} up.bin\n", src.display()))?;
    fs::write(&batch_down, format!("get down.bin {}\n", local.display()))?;
    for p in PATHS {
        run_checked(bed.ssh(&c, p, &["true"]), "warm-up")?;
    }
    let ops = [FileOp::ScpUp, FileOp::ScpDown, FileOp::SftpUp, FileOp::SftpDown];
    let mut res: Vec<FileResult> = ops
        .iter()
        .map(|&op| FileResult {
            op,
            secs: Default::default(),
            busy: Default::default(),
        })
        .collect();
    let src_s = src.display().to_string();
    let local_s = local.display().to_string();
    for rep in 0..s.file_reps {
        for (oi, &op) in ops.iter().enumerate() {
            for p in PATHS {
                let written = match op {
                    FileOp::ScpUp | FileOp::SftpUp => &up,
                    FileOp::ScpDown | FileOp::SftpDown => &local,
                };
                let _ = fs::remove_file(written);
                let cmd = match op {
                    FileOp::ScpUp => bed.scp(&c, p, &[&src_s, "127.0.0.1:up.bin"]),
                    FileOp::ScpDown => bed.scp(&c, p, &["127.0.0.1:down.bin", &local_s]),
                    FileOp::SftpUp => bed.sftp(&c, p, &batch_up)?,
                    FileOp::SftpDown => bed.sftp(&c, p, &batch_down)?,
                };
                let busy0 = machine_busy_seconds(tck);
                let (dt, _) = run_checked(cmd, &format!("{} {} rep {rep}", op.name(), p.name()))?;
                let busy = machine_busy_seconds(tck) - busy0;
                let len = fs::metadata(written).map(|m| m.len()).unwrap_or(0);
                if len != s.file_bytes {
                    bail!(
                        "{} over {}: {len} bytes arrived, not {}",
                        op.name(),
                        p.name(),
                        s.file_bytes
                    );
                }
                // Every copy is checked (outside the timed part).
                if sum(written)? != want {
                    bail!(
                        "{} over {}: the file that arrived differs from the source",
                        op.name(),
                        p.name()
                    );
                }
                res[oi].secs[p.idx()].push(dt.as_secs_f64());
                res[oi].busy[p.idx()].push(busy);
                eprintln!(
                    "  {:<20} {:<20} {:7.1} MiB/s",
                    op.name(),
                    p.name(),
                    s.file_bytes as f64 / MIB as f64 / dt.as_secs_f64()
                );
            }
        }
    }
    let _ = fs::remove_file(home.join("down.bin"));
    let _ = fs::remove_file(&up);
    Ok(res)
}

/// One measurement of idle sessions through Postern.
struct MemRun {
    /// How the client logs in to Postern.
    login: &'static str,
    pss_before_kib: u64,
    pss_after_kib: u64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// glibc arena heaps (count, resident KiB) with the sessions open, before trimming.
    arenas: (usize, u64),
    /// With the sessions still open, after malloc_trim(0).
    pss_after_trim_kib: u64,
    /// After the sessions closed, after another malloc_trim(0).
    pss_closed_trim_kib: u64,
    live_listed: usize,
    setup_secs: f64,
}

struct Memory {
    sessions: usize,
    runs: Vec<MemRun>,
    /// Error of a run after the first (the first one's error fails the whole section).
    run_err: Option<String>,
    /// ProxyJump reference: PSS of all processes in the bastion's namespace, before and after, and their counts.
    bastion: Option<(u64, u64, usize, usize)>,
    bastion_err: Option<String>,
}

const IDLE_ARGV: [&str; 2] = ["sleep", "600"];
const WARM_ARGV: [&str; 2] = ["sleep", "599"];

/// Starts `n` idle sessions `ssh ... 'sleep <secs>'` over `path` in batches, each batch waiting until its sessions
/// run on the target. Returns the children (stopped when dropped).
fn open_idle(bed: &Bed, c: &Clients, path: PathKind, n: usize, argv: &[&str]) -> Result<Children> {
    let ns = mnt_ns(bed.target.pid()).ok_or_else(|| anyhow!("target namespace"))?;
    let remote = argv.join(" ");
    let mut kids = Children::default();
    const BATCH: usize = 10;
    let mut started = 0;
    while started < n {
        let k = BATCH.min(n - started);
        for _ in 0..k {
            let mut cmd = bed.ssh(c, path, &[&remote]);
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            kids.0.push(cmd.spawn().context("spawn idle ssh")?);
        }
        started += k;
        let ok = wait_until(Duration::from_secs(90), || pids_in_ns(&ns, argv).len() >= started);
        if !ok {
            let have = pids_in_ns(&ns, argv).len();
            bail!(
                "only {have} of {started} idle sessions over {} came up within 90 s ({} clients still running)",
                path.name(),
                kids.alive()
            );
        }
    }
    Ok(kids)
}

/// Kills the idle `sleep`s a closed session leaves on the target (sshd does not end a pty-less command when the
/// connection goes); by pid, only processes of the target's private namespace with exactly this argv.
fn reap_remote(bed: &Bed, argv: &[&str]) {
    if let Some(ns) = mnt_ns(bed.target.pid()) {
        for _ in 0..20 {
            let pids = pids_in_ns(&ns, argv);
            if pids.is_empty() {
                break;
            }
            kill_pids(&pids);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `n` idle sessions through Postern with clients `c`: PSS before (after a warm-up of 10 sessions opened and
/// closed), with the sessions open, and the diagnostics.
/// Pause before each memory reading: longer than tokio's 10 s keep-alive of idle blocking threads.
const SETTLE: Duration = Duration::from_secs(12);

fn idle_run(bed: &Bed, postern: &Postern, c: &Clients, n: usize, login: &'static str, tag: &str) -> Result<MemRun> {
    run_checked(bed.ssh(c, PathKind::Postern, &["true"]), "warm-up")?;
    // Warm-up at the same concurrency, then closed: thread pools, allocator arenas and argon2's buffers exist
    // before the baseline.
    {
        let mut warm = open_idle(bed, c, PathKind::Postern, 10, &WARM_ARGV)?;
        warm.stop();
        reap_remote(bed, &WARM_ARGV);
        if !wait_until(Duration::from_secs(30), || postern.live_sessions() == 0) {
            bail!("warm-up sessions did not leave Postern's live list within 30 s");
        }
    }
    // Longer than tokio's keep-alive of idle blocking threads (10 s), so the threads earlier logins used (and their
    // stacks) are gone before the baseline, as they are at the measurement below.
    std::thread::sleep(SETTLE);
    dump_smaps(&format!("{tag}-1-before"));
    let (pss0, rss0) = smaps_rollup_self()?;
    let t0 = Instant::now();
    let mut kids = open_idle(bed, c, PathKind::Postern, n, &IDLE_ARGV)?;
    let setup_secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(SETTLE);
    let (pss1, rss1) = smaps_rollup_self()?;
    let arenas = arena_heaps();
    dump_smaps(&format!("{tag}-2-open"));
    let live_listed = postern.live_sessions();
    let alive = kids.alive();
    // Diagnostics: how much of that is free heap the allocator keeps, and what stays once the sessions are gone.
    trim_heap();
    let (pss1t, _) = smaps_rollup_self()?;
    dump_smaps(&format!("{tag}-3-open-trimmed"));
    kids.stop();
    reap_remote(bed, &IDLE_ARGV);
    if alive != n {
        bail!("{alive} of {n} idle clients were still connected at the measurement");
    }
    if !wait_until(Duration::from_secs(30), || postern.live_sessions() == 0) {
        bail!("the idle sessions did not leave Postern's live list within 30 s");
    }
    std::thread::sleep(Duration::from_secs(3));
    dump_smaps(&format!("{tag}-4-closed"));
    trim_heap();
    let (pss2t, _) = smaps_rollup_self()?;
    dump_smaps(&format!("{tag}-5-closed-trimmed"));
    Ok(MemRun {
        login,
        pss_before_kib: pss0,
        pss_after_kib: pss1,
        rss_before_kib: rss0,
        rss_after_kib: rss1,
        arenas,
        pss_after_trim_kib: pss1t,
        pss_closed_trim_kib: pss2t,
        live_listed,
        setup_secs,
    })
}

fn measure_memory(bed: &Bed, postern: &Postern, s: &Settings) -> Result<Memory> {
    let c = Clients::new(None);
    for p in PATHS {
        run_checked(bed.ssh(&c, p, &["true"]), "warm-up")?;
    }
    // As specified: the Postern user logs in with a password (argon2id check per login).
    let mut runs = vec![idle_run(bed, postern, &c, s.idle_sessions, "password", "password")?];
    // The same with alice's registered public key: no password hashing per login.
    let by_key = Clients {
        openssh: SshClient::new(),
        postern: SshClient::new()
            .with_identity(&postern.alice_key)
            .with_option("KexAlgorithms", KEX),
    };
    let run_err = match idle_run(bed, postern, &by_key, s.idle_sessions, "public key", "key") {
        Ok(r) => {
            runs.push(r);
            None
        }
        Err(e) => Some(format!("{e:#}")),
    };

    // Reference: the same number of idle sessions through the OpenSSH bastion (ProxyJump).
    let (bastion, bastion_err) = match (|| -> Result<(u64, u64, usize, usize)> {
        let ns = mnt_ns(bed.bastion.pid()).ok_or_else(|| anyhow!("bastion namespace"))?;
        let (b0, n0) = pss_of_ns(&ns);
        let mut kids = open_idle(bed, &c, PathKind::Jump, s.idle_sessions, &IDLE_ARGV)?;
        std::thread::sleep(Duration::from_secs(5));
        let (b1, n1) = pss_of_ns(&ns);
        kids.stop();
        reap_remote(bed, &IDLE_ARGV);
        Ok((b0, b1, n0, n1))
    })() {
        Ok(x) => (Some(x), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    Ok(Memory {
        sessions: s.idle_sessions,
        runs,
        run_err,
        bastion,
        bastion_err,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Report

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**MISSED**"
    }
}

struct Outcome {
    /// Cores busy while the benchmark itself was idle: before the start and at the end.
    background: (f64, f64),
    /// (files, bytes) of session recordings Postern wrote during the run.
    recordings: (usize, u64),
    latency: Result<Latency>,
    streams: Result<Vec<Stream>>,
    files: Result<Vec<FileResult>>,
    memory: Result<Memory>,
}

fn report(s: &Settings, o: &Outcome, wall: Duration) -> String {
    let mut r = String::new();
    let cpu_model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-");
    let ssh_v = Command::new("ssh")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .unwrap_or_default();
    let _ = writeln!(r, "# Benchmarks\n");
    let _ = writeln!(
        r,
        "Produced by `bench/` (`cargo run --release -p postern-bench --bin ssh-bench`{}): re-run it rather than \
         editing the figures.\n",
        if s.quick { " -- --quick" } else { "" }
    );
    let _ = writeln!(
        r,
        "- Date: {} ({:.0} s run{})",
        sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        wall.as_secs_f64(),
        if s.quick {
            ", **--quick: reduced sizes, smoke run only**"
        } else {
            ""
        }
    );
    let _ = writeln!(
        r,
        "- Other load on the machine while the benchmark was idle: {:.2} cores busy before the start, {:.2} at the \
         end{}",
        o.background.0,
        o.background.1,
        if o.background.0.max(o.background.1) > 0.15 {
            " (**the machine was not quiet: these figures are disturbed**)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        r,
        "- Machine: `nproc` = {}, `uname -r` = {}, CPU {}, {}; Postern {} (russh 0.65), release build",
        sh("nproc"),
        sh("uname -r"),
        if cpu_model.is_empty() {
            "unknown".into()
        } else {
            cpu_model
        },
        ssh_v,
        revision()
    );
    let _ = writeln!(r, "\n## Method\n");
    let _ = writeln!(
        r,
        "One run, one target: a real OpenSSH `sshd` in a private mount namespace (the test harness \
         `tests/common/sshd.rs`), reached three ways: **direct** `ssh` to it; **ProxyJump** (`ssh -J`) through a \
         second OpenSSH `sshd` acting as the bastion; **Postern**, started in the benchmark process (release build, \
         multi-thread tokio runtime as `postern run` uses), with the user `alice`, the resource `tgt` and the \
         account `bench` created through the HTTPS API; the client logs in as `alice#bench@tgt` and Postern logs \
         in to the target with the vaulted password. Everything is on loopback; client, Postern and both sshd share \
         the machine's cores."
    );
    let _ = writeln!(
        r,
        "\n- Authentication is by password everywhere (`SSH_ASKPASS`): the target account and the bastion account \
         by sshd's `crypt()` check, the Postern user by Postern's argon2 check, then Postern's password login to \
         the target."
    );
    let _ = writeln!(
        r,
        "- Key exchange is pinned to `{KEX}` on every leg: the clients' `-F` file sets `KexAlgorithms` (it also \
         governs the `ssh -W` that ProxyJump spawns) and both sshd have `KexAlgorithms {KEX}`, so Postern's russh \
         client uses it towards the target too. Host keys are ed25519."
    );
    let _ = writeln!(
        r,
        "- Ciphers: the throughput runs set `Ciphers` in the client's `-F` file, so both ProxyJump legs and the \
         client→Postern leg use the cipher named; **Postern→target prefers aes256-gcm** (Postern's own client \
         preference, `gateway/src/ssh/target.rs`: cheaper than chacha20-poly1305 with AES instructions), whichever \
         cipher the client chose. Latency and scp/sftp use OpenSSH's default (chacha20-poly1305) on the client legs. \
         Postern's SSH crypto is russh's aws-lc backend, and Postern asks targets for packets of up to 64 KiB."
    );
    let _ = writeln!(
        r,
        "- Paths are interleaved (direct, ProxyJump, Postern, direct, ...). Times are wall clock of the client \
         process from spawn to exit. Stream runs check the client's `Transferred: received N bytes` (LogLevel \
         VERBOSE); file runs check the size and sha256 of every copy."
    );
    let _ = writeln!(
        r,
        "- Session recording: {}",
        if o.recordings.0 == 0 {
            "Postern wrote no recording files during the run (in this build the SSH gateway records to a no-op \
             sink), so these figures carry no recording cost."
                .to_owned()
        } else {
            format!(
                "on with Postern's defaults; it wrote {} recording files, {:.0} MiB in all, during the run, and \
                 the Postern figures include that cost.",
                o.recordings.0,
                o.recordings.1 as f64 / MIB as f64
            )
        }
    );
    let _ = writeln!(
        r,
        "- **Only ratios taken in the same run count.** Absolute numbers drift by about 30 % between runs on this \
         kind of machine; compare other runs by their ratios, never by their absolute figures."
    );

    // Targets summary, filled as we go.
    let mut targets: Vec<String> = vec![];

    let _ = writeln!(r, "\n## 1. Connect + authenticate + `true`\n");
    match &o.latency {
        Ok(l) => {
            let med: Vec<f64> = l.runs.iter().map(|v| median(v)).collect();
            let _ = writeln!(r, "{} runs per path.\n", l.runs[0].len());
            let _ = writeln!(
                r,
                "| path | median ms | p90 ms | min ms | max ms | vs direct | vs ProxyJump |"
            );
            let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|");
            for p in PATHS {
                let v = &l.runs[p.idx()];
                let _ = writeln!(
                    r,
                    "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}× | {:.2}× |",
                    p.name(),
                    med[p.idx()] * 1e3,
                    percentile(v, 90.0) * 1e3,
                    sorted(v)[0] * 1e3,
                    sorted(v)[v.len() - 1] * 1e3,
                    med[p.idx()] / med[0],
                    med[p.idx()] / med[1]
                );
            }
            let ratio = med[2] / med[0];
            targets.push(format!(
                "| latency ≤ 1.10× direct | {:.0} ms vs {:.0} ms = {ratio:.2}× | {} |",
                med[2] * 1e3,
                med[0] * 1e3,
                verdict(ratio <= 1.10)
            ));
        }
        Err(e) => {
            let _ = writeln!(r, "**Failed:** {e:#}");
            targets.push("| latency ≤ 1.10× direct | not measured (failed) | **MISSED** |".into());
        }
    }

    let _ = writeln!(r, "\n## 2. Stdout throughput\n");
    match &o.streams {
        Ok(st) => {
            let _ = writeln!(
                r,
                "`head -c {} /dev/zero` on the target ({} MiB), the client writes it to /dev/null; median of {} \
                 run(s) per path and cipher. \"Machine CPU\" is the busy time of all cores during the run (every \
                 process: client, sshd, `head`, Postern); \"cores busy\" is that divided by the wall time (the \
                 machine has {} cores). \"Postern CPU\" is the CPU time of the benchmark process, that is of Postern \
                 (the driver thread only waits).\n",
                s.stream_bytes,
                s.stream_bytes / MIB,
                st.first().map(|x| x.secs[0].len()).unwrap_or(0),
                sh("nproc")
            );
            let _ = writeln!(
                r,
                "| cipher (client side) | path | MiB/s | median s | vs direct | vs ProxyJump | machine CPU s | cores busy | Postern CPU s |"
            );
            let _ = writeln!(r, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
            for x in st {
                let mb = |i: usize| s.stream_bytes as f64 / MIB as f64 / median(&x.secs[i]);
                for p in PATHS {
                    let busy = median(&x.busy[p.idx()]);
                    let _ = writeln!(
                        r,
                        "| {} | {} | {:.0} | {:.2} | {:.2}× | {:.2}× | {:.2} | {:.2} | {} |",
                        x.cipher,
                        p.name(),
                        mb(p.idx()),
                        median(&x.secs[p.idx()]),
                        mb(p.idx()) / mb(0),
                        mb(p.idx()) / mb(1),
                        busy,
                        busy / median(&x.secs[p.idx()]),
                        if p == PathKind::Postern {
                            format!("{:.2}", median(&x.postern_cpu))
                        } else {
                            "".into()
                        }
                    );
                }
                let ratio = mb(2) / mb(0);
                targets.push(format!(
                    "| throughput ≥ 0.90× direct (stdout, {}) | {:.0} vs {:.0} MiB/s = {ratio:.2}× | {} |",
                    x.cipher,
                    mb(2),
                    mb(0),
                    verdict(ratio >= 0.90)
                ));
            }
        }
        Err(e) => {
            let _ = writeln!(r, "**Failed:** {e:#}");
            targets.push("| throughput ≥ 0.90× direct (stdout) | not measured (failed) | **MISSED** |".into());
        }
    }

    let _ = writeln!(r, "\n## 3. scp and sftp\n");
    match &o.files {
        Ok(fr) => {
            let _ = writeln!(
                r,
                "A {} MiB random file; OpenSSH 9.2 `scp` (SFTP protocol by default) and `sftp -b`; default cipher \
                 (chacha20-poly1305) on every leg; median of {} run(s) per path; the target's home and the local \
                 copies are on the same disk (page cache); every copy's size and sha256 are checked (outside the \
                 timing). Machine CPU as above.\n",
                s.file_bytes / MIB,
                fr.first().map(|x| x.secs[0].len()).unwrap_or(0)
            );
            let _ = writeln!(
                r,
                "| transfer | path | MiB/s | median s | vs direct | vs ProxyJump | machine CPU s | cores busy |"
            );
            let _ = writeln!(r, "|---|---|---:|---:|---:|---:|---:|---:|");
            for x in fr {
                let mb = |i: usize| s.file_bytes as f64 / MIB as f64 / median(&x.secs[i]);
                for p in PATHS {
                    let busy = median(&x.busy[p.idx()]);
                    let _ = writeln!(
                        r,
                        "| {} | {} | {:.0} | {:.2} | {:.2}× | {:.2}× | {:.2} | {:.2} |",
                        x.op.name(),
                        p.name(),
                        mb(p.idx()),
                        median(&x.secs[p.idx()]),
                        mb(p.idx()) / mb(0),
                        mb(p.idx()) / mb(1),
                        busy,
                        busy / median(&x.secs[p.idx()])
                    );
                }
                let ratio = mb(2) / mb(0);
                targets.push(format!(
                    "| throughput ≥ 0.90× direct ({}) | {:.0} vs {:.0} MiB/s = {ratio:.2}× | {} |",
                    x.op.name(),
                    mb(2),
                    mb(0),
                    verdict(ratio >= 0.90)
                ));
            }
        }
        Err(e) => {
            let _ = writeln!(r, "**Failed:** {e:#}");
            targets.push("| throughput ≥ 0.90× direct (scp/sftp) | not measured (failed) | **MISSED** |".into());
        }
    }

    let _ = writeln!(r, "\n## 4. Memory per idle session\n");
    match &o.memory {
        Ok(m) => {
            let n = m.sessions as f64;
            let kib_mb = |k: f64| k * 1024.0 / 1e6;
            let mib = |k: u64| k as f64 / 1024.0;
            let _ = writeln!(
                r,
                "{} sessions `ssh ... 'sleep 600'` held open through Postern (opened 10 at a time, each batch \
                 waited for until its `sleep` ran on the target), measured 12 s after the last one came up (longer \
                 than tokio's keep-alive of idle blocking threads, so the threads the logins used are gone, as they \
                 are at the baseline, taken after the same pause), then closed. Postern runs in the benchmark process, so this is **PSS of that process from \
                 `/proc/self/smaps_rollup`**, before and after; the driver holds only the `Child` handles meanwhile. \
                 Each baseline is taken after 10 warm-up sessions were opened and closed. Done twice: with alice \
                 logging in by password (as specified; Postern checks it with argon2id) and then by her registered \
                 public key (no password hash per login).\n",
                m.sessions
            );
            let _ = writeln!(
                r,
                "| login to Postern | PSS before | PSS with {} idle | **PSS per session** | RSS per session | live \
                 sessions listed | time to open all |",
                m.sessions
            );
            let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|");
            for x in &m.runs {
                let per = (x.pss_after_kib as f64 - x.pss_before_kib as f64) / n;
                let per_rss = (x.rss_after_kib as f64 - x.rss_before_kib as f64) / n;
                let _ = writeln!(
                    r,
                    "| {} | {:.1} MiB | {:.1} MiB | **{:.0} KiB ({:.2} MB)** | {:.0} KiB | {} | {:.0} s |",
                    x.login,
                    mib(x.pss_before_kib),
                    mib(x.pss_after_kib),
                    per,
                    kib_mb(per),
                    per_rss,
                    x.live_listed,
                    x.setup_secs
                );
            }
            match (&m.bastion, &m.bastion_err) {
                (Some((b0, b1, n0, n1)), _) => {
                    let bper = (*b1 as f64 - *b0 as f64) / n;
                    let _ = writeln!(
                        r,
                        "| reference: the OpenSSH bastion for {} idle ProxyJump sessions (password logins), PSS summed \
                         over its processes ({n0} → {n1}) | {:.1} MiB | {:.1} MiB | {:.0} KiB ({:.2} MB) | | | |",
                        m.sessions,
                        mib(*b0),
                        mib(*b1),
                        bper,
                        kib_mb(bper)
                    );
                }
                (None, Some(e)) => {
                    let _ = writeln!(r, "\nThe ProxyJump reference failed: {e}");
                }
                _ => {}
            }
            if let Some(e) = &m.run_err {
                let _ = writeln!(r, "\nThe public-key run failed: {e}");
            }
            let _ = writeln!(
                r,
                "\nWhere it goes (diagnostics; Postern itself never calls `malloc_trim`). \"Kept after trim\" is what \
                 stays resident per open session once glibc's `malloc_trim(0)` has handed every free page back: \
                 (PSS open, trimmed − PSS after closing them and trimming again) / {}; it is the sessions' own \
                 memory plus pages that free heap shares with it (fragmentation). Arena heaps are the anonymous \
                 mappings on 64 MiB boundaries (glibc's per-thread malloc arenas) with the sessions open, before \
                 trimming.\n",
                m.sessions
            );
            let _ = writeln!(
                r,
                "| login to Postern | PSS open, trimmed | PSS closed, trimmed | **kept after trim, per session** | \
                 arena heaps (resident) |"
            );
            let _ = writeln!(r, "|---|---:|---:|---:|---:|");
            for x in &m.runs {
                let live = (x.pss_after_trim_kib as f64 - x.pss_closed_trim_kib as f64) / n;
                let _ = writeln!(
                    r,
                    "| {} | {:.1} MiB | {:.1} MiB | **{:.0} KiB ({:.2} MB)** | {} ({:.1} MiB) |",
                    x.login,
                    mib(x.pss_after_trim_kib),
                    mib(x.pss_closed_trim_kib),
                    live,
                    kib_mb(live),
                    x.arenas.0,
                    mib(x.arenas.1)
                );
            }
            for x in &m.runs {
                let per = (x.pss_after_kib as f64 - x.pss_before_kib as f64) / n;
                let live = (x.pss_after_trim_kib as f64 - x.pss_closed_trim_kib as f64) / n;
                targets.push(format!(
                    "| ≤ 0.3 MB per idle session ({} login) | {:.2} MB PSS growth per session (kept after \
                     `malloc_trim`: {:.2} MB) | {} |",
                    x.login,
                    kib_mb(per),
                    kib_mb(live),
                    verdict(kib_mb(per) <= 0.3)
                ));
            }
        }
        Err(e) => {
            let _ = writeln!(r, "**Failed:** {e:#}");
            targets.push("| ≤ 0.3 MB per idle session | not measured (failed) | **MISSED** |".into());
        }
    }

    let mut head = String::new();
    let _ = writeln!(head, "\n## Targets (from the issue), this run\n");
    let _ = writeln!(head, "| target | measured (Postern vs direct) | verdict |");
    let _ = writeln!(head, "|---|---|---|");
    for t in &targets {
        let _ = writeln!(head, "{t}");
    }
    // Targets right after the method.
    let at = r.find("\n## 1.").unwrap_or(r.len());
    r.insert_str(at, &head);
    r
}

// ---------------------------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let s = settings()?;
    sshd::available().map_err(|e| anyhow!("cannot run real sshd here: {e}"))?;
    let tck = clk_tck();
    // Other work on this machine skews everything: wait (bounded) for it to be quiet, and report what was seen.
    let mut quiet = background_cores(tck, Duration::from_secs(3));
    let wait_until_t = Instant::now() + Duration::from_secs(s.wait_idle_secs);
    while quiet > 0.15 && Instant::now() < wait_until_t {
        eprintln!("the machine is busy ({quiet:.2} cores in use by others); waiting for it to be quiet ...");
        std::thread::sleep(Duration::from_secs(10));
        quiet = background_cores(tck, Duration::from_secs(3));
    }
    let t_all = Instant::now();
    let server_cfg = format!("KexAlgorithms {KEX}\nMaxStartups 300:30:600\n");
    eprintln!("starting the target and the bastion sshd ...");
    let target = SshTarget::start(TargetOptions {
        users: vec![TargetUser::password(TARGET_USER, TARGET_PW)],
        allow_tcp_forwarding: false,
        extra_config: server_cfg.clone(),
    });
    let bastion = SshTarget::start(TargetOptions {
        users: vec![TargetUser::password(HOP_USER, TARGET_PW)],
        allow_tcp_forwarding: true,
        extra_config: server_cfg,
    });
    eprintln!("starting Postern in-process ...");
    let postern = Postern::start(target.port)?;
    let bed = Bed {
        target,
        bastion,
        postern_port: postern.ssh_port,
    };
    eprintln!(
        "target 127.0.0.1:{}, bastion 127.0.0.1:{}, Postern 127.0.0.1:{}",
        bed.target.port, bed.bastion.port, bed.postern_port
    );
    // Sanity: every path reaches the same account on the same target.
    let c = Clients::new(None);
    for p in PATHS {
        let mut cmd = bed.ssh(&c, p, &["id -un; echo $SSH_CONNECTION"]);
        let out = cmd.output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !text.starts_with(TARGET_USER) || !text.contains(&bed.target.port.to_string()) {
            bail!(
                "{} does not reach {TARGET_USER} on the target: {} {}",
                p.name(),
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }

    match s.only {
        Some(Part::Stream) => {
            eprintln!("throughput only: {} MiB x {} ...", s.stream_bytes / MIB, s.stream_reps);
            let streams = measure_streams(&bed, &s, tck)?;
            for st in &streams {
                eprintln!("{st:?}");
            }
            postern.stop();
            return Ok(());
        }
        Some(Part::Files) => {
            eprintln!("scp and sftp only: {} MiB x {} ...", s.file_bytes / MIB, s.file_reps);
            let files = measure_files(&bed, &s, tck)?;
            for f in &files {
                let med = |i: usize| s.file_bytes as f64 / MIB as f64 / median(&f.secs[i]);
                eprintln!(
                    "{}: direct {:.0} MiB/s, Postern {:.0} MiB/s = {:.2}x",
                    f.op.name(),
                    med(0),
                    med(2),
                    med(2) / med(0)
                );
            }
            postern.stop();
            return Ok(());
        }
        None => {}
    }
    eprintln!("[1/4] memory: {} idle sessions ...", s.idle_sessions);
    let memory = measure_memory(&bed, &postern, &s);
    if let Err(e) = &memory {
        eprintln!("  failed: {e:#}");
    }
    reap_remote(&bed, &IDLE_ARGV);
    reap_remote(&bed, &WARM_ARGV);

    eprintln!("[2/4] latency: {} runs per path ...", s.latency_runs);
    let latency = (|| {
        let c = Clients::new(None);
        for p in PATHS {
            run_checked(bed.ssh(&c, p, &["true"]), "warm-up")?;
            run_checked(bed.ssh(&c, p, &["true"]), "warm-up")?;
        }
        measure_latency(&bed, &c, s.latency_runs)
    })();
    if let Ok(l) = &latency {
        for p in PATHS {
            eprintln!("  {:<20} median {:.0} ms", p.name(), median(&l.runs[p.idx()]) * 1e3);
        }
    }

    eprintln!("[3/4] throughput: {} MiB x {} ...", s.stream_bytes / MIB, s.stream_reps);
    let streams = measure_streams(&bed, &s, tck);

    eprintln!("[4/4] scp/sftp: {} MiB x {} ...", s.file_bytes / MIB, s.file_reps);
    let files = measure_files(&bed, &s, tck);

    let outcome = Outcome {
        recordings: postern.recordings(),
        background: (quiet, background_cores(tck, Duration::from_secs(3))),
        latency,
        streams,
        files,
        memory,
    };
    let text = report(&s, &outcome, t_all.elapsed());
    postern.stop();
    drop(bed);
    println!("{text}");
    if let Some(out) = &s.out {
        // Keep the other programs' blocks (the recorder's and the RDP benchmark's figures).
        let text = keep_blocks(&text, &fs::read_to_string(out).unwrap_or_default());
        fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("written to {}", out.display());
    }
    for (what, e) in [
        ("latency", outcome.latency.as_ref().err()),
        ("throughput", outcome.streams.as_ref().err()),
        ("scp/sftp", outcome.files.as_ref().err()),
        ("memory", outcome.memory.as_ref().err()),
    ] {
        if let Some(e) = e {
            eprintln!("{what} failed: {e:#}");
        }
    }
    Ok(())
}
