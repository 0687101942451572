//! `rdp-bench`: the Postern RDP gateway against direct FreeRDP → xrdp, in one run, against the same xrdp target.
//!
//! ```text
//! cargo run --release -p postern-bench --bin rdp-bench -- [--quick] [--out PATH | --no-write]
//! ```
//!
//! Needs root and the packages `tests/run.sh` installs (xrdp, xorgxrdp, freerdp2-x11, xvfb, imagemagick,
//! util-linux, passwd, openssl): the target is the test harness's xrdp in a private mount namespace with its own
//! users (`tests/common/rdp.rs`, included with `#[path]`), the client is `xfreerdp` under one `Xvfb`. Postern runs
//! in this process (release build) on its own tokio runtime like `postern run`. Loopback only.
//!
//! Measured, paths interleaved (direct, Postern, direct, ...) so that drift hits both alike:
//! 1. connect time: from the spawn of `xfreerdp` to xrdp's log line `connected ok` (the user's session is
//!    attached to its Xorg display, after the whole connection sequence, the Client Info PDU with autologon,
//!    sesman's PAM login and the reconnection to the session), median of N;
//! 2. bytes/s from the target to the client while a full-screen animation of random-noise frames (ImageMagick
//!    `animate`, started through the session's `startwm.sh` only while a flag file exists) changes every pixel as
//!    fast as the pipeline takes it: `bytes_received` of xfreerdp's TCP connection (`ss -ti`) over a fixed window,
//!    median of N; with the CPU of Postern (this process) per session-second and of the whole machine;
//! 3. memory per RDP session in Postern: PSS of this process with N sessions (N target users) held open.
//!
//! Writes its block (`<!-- rdp-bench:start -->` ... `<!-- rdp-bench:end -->`) of `docs/benchmarks.md` and prints
//! it. `--quick` shrinks everything for a smoke run and does not write the file unless `--out` is given. A full
//! run first waits (up to 15 min) for the machine to be quiet and reports the background load it saw.

#[path = "../../../tests/common/sshd.rs"]
mod sshd;

#[path = "../../../tests/common/rdp.rs"]
mod rdp;

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use postern_bench::{
    background_cores, clk_tck, cpu_seconds, machine_busy_seconds, median, percentile, revision, self_cpu_seconds,
    set_block, sh, smaps_rollup_self, sorted, trim_heap, wait_for_quiet, InProcess,
};
use rdp::{FreeRdp, XrdpTarget, Xvfb};

const TARGET_USER: &str = "bench";
const TARGET_PW: &str = "bench-target-pw-1";
const ALICE_PW: &str = "alice bench passphrase 1";
const RESOURCE: &str = "tgt";
/// xrdp's log line once a login is attached to its session's X server.
const UP: &str = "[INFO ] connected ok";
/// xrdp's log line once it has the Client Info PDU (with the autologon flag).
const INFO: &str = "Client requested auto logon";
/// xrdp's log line when it accepts a TCP connection.
const ACCEPTED: &str = "connection received from 127.0.0.1";
/// Random-noise frames the workload cycles through.
const FRAMES: usize = 10;
const MIB: f64 = 1024.0 * 1024.0;
const BLOCK: &str = "rdp-bench";

// ---------------------------------------------------------------------------------------------------------------
// Settings

struct Settings {
    quick: bool,
    connect_runs: usize,
    bytes_runs: usize,
    bytes_window: Duration,
    sessions: usize,
    out: Option<PathBuf>,
    wait_idle: Duration,
}

fn settings() -> Result<Settings> {
    let usage = "usage: rdp-bench [--quick] [--out PATH | --no-write]";
    let mut quick = false;
    let mut out: Option<Option<PathBuf>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--no-write" => out = Some(None),
            "--out" => out = Some(Some(PathBuf::from(args.next().context("--out needs a path")?))),
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} ({usage})"),
        }
    }
    let out = out.unwrap_or(if quick {
        None
    } else {
        Some(postern_bench::default_report_path())
    });
    Ok(if quick {
        Settings {
            quick,
            connect_runs: 3,
            bytes_runs: 2,
            bytes_window: Duration::from_secs(4),
            sessions: 3,
            out,
            wait_idle: Duration::ZERO,
        }
    } else {
        Settings {
            quick,
            connect_runs: 10,
            bytes_runs: 5,
            bytes_window: Duration::from_secs(10),
            sessions: 16,
            out,
            wait_idle: Duration::from_secs(900),
        }
    })
}

// ---------------------------------------------------------------------------------------------------------------
// The bed: one xrdp target, Postern, one Xvfb for the clients

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PathKind {
    Direct,
    Postern,
}

const PATHS: [PathKind; 2] = [PathKind::Direct, PathKind::Postern];

impl PathKind {
    fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct FreeRDP → xrdp",
            PathKind::Postern => "FreeRDP → Postern → xrdp",
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

struct Bed {
    target: XrdpTarget,
    postern: InProcess,
    postern_port: u16,
    x: Xvfb,
    logs: tempfile::TempDir,
    xrdp_log: LogTail,
    runs: usize,
}

impl Bed {
    /// (port, user, password) of `path` for target account `account`.
    fn login(&self, path: PathKind, account: &str) -> (u16, String, String) {
        match path {
            PathKind::Direct => (self.target.port, account.to_owned(), TARGET_PW.to_owned()),
            PathKind::Postern => (
                self.postern_port,
                format!("alice#{account}@{RESOURCE}"),
                ALICE_PW.to_owned(),
            ),
        }
    }

    fn spawn(&mut self, path: PathKind, account: &str) -> FreeRdp {
        let (port, user, pw) = self.login(path, account);
        self.runs += 1;
        let log = self.logs.path().join(format!("client-{}.log", self.runs));
        // Bulk compression off on both paths: Postern withdraws it towards the target anyway (its recordings
        // must decode), so the direct path must not compress either for the bytes to compare.
        FreeRdp::connect(&self.x, port, &user, &pw, &["-compression"], &log)
    }

    /// The port xfreerdp connects to on `path`.
    fn port(&self, path: PathKind) -> u16 {
        self.login(path, TARGET_USER).0
    }

    /// Spawns xfreerdp and waits for xrdp's `connected ok`; returns the client, the time it took, and when xrdp
    /// accepted the TCP connection and had the Client Info PDU.
    fn connect(&mut self, path: PathKind, account: &str) -> Result<(FreeRdp, Duration, Steps)> {
        self.xrdp_log.skip_to_end();
        let t0 = Instant::now();
        let mut c = self.spawn(path, account);
        let trace = std::env::var_os("RDP_BENCH_TRACE").is_some();
        let mut steps = Steps::default();
        loop {
            let lines = self.xrdp_log.new_lines();
            if trace {
                for l in &lines {
                    eprintln!("    {:>6.0} ms {l}", t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            if steps.accepted.is_none() && lines.iter().any(|l| l.contains(ACCEPTED)) {
                steps.accepted = Some(t0.elapsed());
            }
            if steps.info.is_none() && lines.iter().any(|l| l.contains(INFO)) {
                steps.info = Some(t0.elapsed());
            }
            if lines.iter().any(|l| l.contains(UP)) {
                return Ok((c, t0.elapsed(), steps));
            }
            if let Some(st) = c.try_wait() {
                bail!(
                    "{} as {account}: xfreerdp exited ({st}) before the session was up:\n{}",
                    path.name(),
                    c.log()
                );
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!(
                    "{} as {account}: no `connected ok` from xrdp within 60 s:\n{}\n{}",
                    path.name(),
                    c.log(),
                    self.target.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Ends a client and waits until neither xrdp nor Postern holds a connection of it.
    fn disconnect(&self, clients: Vec<FreeRdp>) -> Result<()> {
        drop(clients);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(established(self.target.port).is_empty()
            && established(self.postern_port).is_empty()
            && self.postern.live_sessions() == 0)
        {
            if Instant::now() > deadline {
                bail!(
                    "connections still open 30 s after the clients ended (xrdp {:?}, Postern {:?}, live {})",
                    established(self.target.port),
                    established(self.postern_port),
                    self.postern.live_sessions()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // xrdp's per-connection process finishes its cleanup.
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    /// CPU seconds so far of the processes one session runs on: the target's (every process in its mount
    /// namespace), the client, Xvfb and this process (Postern).
    fn pipeline_cpu(&self, client: &FreeRdp, tck: f64) -> f64 {
        let mut pids = sshd::pids_in_ns(self.target.mnt_ns());
        pids.push(client.pid().to_string());
        pids.push(self.x.pid().to_string());
        pids.push("self".into());
        pids.iter().map(|p| cpu_seconds(p, tck)).sum()
    }

    /// The workload's flag file for `account` (the target's /tmp is `dir/tmp` on the host).
    fn flag(&self, account: &str) -> PathBuf {
        self.target.dir.join("tmp").join(format!("bench-go-{account}"))
    }
}

/// When xrdp logged the steps of one connection, from the spawn of xfreerdp.
#[derive(Default)]
struct Steps {
    accepted: Option<Duration>,
    info: Option<Duration>,
}

/// Reads what a log file gained since the last look.
struct LogTail {
    path: PathBuf,
    offset: u64,
    carry: String,
}

impl LogTail {
    fn new(path: PathBuf) -> LogTail {
        LogTail {
            path,
            offset: 0,
            carry: String::new(),
        }
    }

    fn skip_to_end(&mut self) {
        self.offset = fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        self.carry.clear();
    }

    /// Lines completed since the last call.
    fn new_lines(&mut self) -> Vec<String> {
        let Ok(mut f) = fs::File::open(&self.path) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let n = f.read_to_end(&mut buf).unwrap_or(0);
        self.offset += n as u64;
        self.carry.push_str(&String::from_utf8_lossy(&buf));
        let Some(end) = self.carry.rfind('\n') else {
            return Vec::new();
        };
        let done: String = self.carry.drain(..=end).collect();
        done.lines().map(str::to_owned).collect()
    }

    /// Lines completed since the last call that contain `needle`.
    #[cfg(test)]
    fn new_matches(&mut self, needle: &str) -> usize {
        self.new_lines().iter().filter(|l| l.contains(needle)).count()
    }
}

/// The established TCP connections to 127.0.0.1:`port`: (local port, bytes_received) each, from `ss -tin`.
fn established(port: u16) -> Vec<(u16, u64)> {
    let out = Command::new("ss")
        .args(["-tinH", "state", "established", "dst", &format!("127.0.0.1:{port}")])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    parse_ss(&text)
}

/// `ss -tinH` output: a record starts on a line that does not begin with white space (`Recv-Q Send-Q Local Peer`);
/// its TCP info follows on indented lines.
fn parse_ss(text: &str) -> Vec<(u16, u64)> {
    let mut out: Vec<(u16, u64)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            let local = line.split_whitespace().nth(2).unwrap_or("");
            let lport = local.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
            out.push((lport, 0));
        }
        if let Some(v) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("bytes_received:"))
            .and_then(|v| v.parse::<u64>().ok())
        {
            if let Some(last) = out.last_mut() {
                last.1 = v;
            }
        }
    }
    out
}

/// Bytes xfreerdp received so far on its (only) connection to `port`.
fn client_bytes(port: u16) -> Result<u64> {
    match established(port).as_slice() {
        [(_, b)] => Ok(*b),
        other => bail!("expected one connection to port {port}, found {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Setup

/// The session's window manager script: nothing but the workload, which runs while the flag file exists.
fn startwm(frames_dir: &str) -> String {
    format!(
        "#!/bin/sh\n\
         me=$(id -un)\n\
         while :; do\n\
         \x20 while [ ! -e /tmp/bench-go-$me ]; do sleep 1; done\n\
         \x20 animate -geometry +0+0 -delay 1 {frames_dir}/f*.png &\n\
         \x20 pid=$!\n\
         \x20 while [ -e /tmp/bench-go-$me ]; do sleep 0.2; done\n\
         \x20 kill $pid; wait $pid\n\
         done\n"
    )
}

fn make_frames(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    for i in 0..FRAMES {
        let st = Command::new("convert")
            .args([
                "-size",
                "800x600",
                "-seed",
                &i.to_string(),
                "xc:gray",
                "+noise",
                "Random",
            ])
            .arg(dir.join(format!("f{i:02}.png")))
            .status()
            .context("run convert")?;
        if !st.success() {
            bail!("convert failed making noise frames");
        }
    }
    sshd::set_mode(dir, 0o755);
    Ok(())
}

fn memory_user(i: usize) -> String {
    format!("mem{i}")
}

fn setup(s: &Settings) -> Result<Bed> {
    let mut users: Vec<(String, &str)> = vec![(TARGET_USER.to_owned(), TARGET_PW)];
    users.extend((1..=s.sessions).map(|i| (memory_user(i), TARGET_PW)));
    let refs: Vec<(&str, &str)> = users.iter().map(|(u, p)| (u.as_str(), *p)).collect();
    let target = XrdpTarget::start(&refs);
    make_frames(&target.dir.join("tmp/frames"))?;
    let (code, out, err) = target.exec_in_ns(&format!(
        "cat > /etc/xrdp/startwm.sh <<'EOF'\n{}EOF\nchmod 755 /etc/xrdp/startwm.sh",
        startwm("/tmp/frames")
    ));
    if code != 0 {
        bail!("writing startwm.sh failed: {out}{err}");
    }
    let postern = InProcess::start(&[])?;
    let postern_port = postern.running().rdp_addr.port();
    let (_, alice) = postern.create_user("alice", "password_administrator", ALICE_PW)?;
    let rid = postern.create_resource(&alice, RESOURCE, "windows", target.port)?;
    for (u, p) in &users {
        postern.create_account(&alice, &rid, u, p)?;
    }
    let xrdp_log = LogTail::new(target.dir.join("xrdp.log"));
    Ok(Bed {
        target,
        postern,
        postern_port,
        x: Xvfb::start(),
        logs: tempfile::Builder::new().prefix("rdp-bench-clients-").tempdir()?,
        xrdp_log,
        runs: 0,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Measurements

#[derive(Default)]
struct Connect {
    /// Seconds from spawn to `connected ok`, per run.
    up: Vec<f64>,
    /// Seconds from spawn to xrdp having the Client Info PDU, per run.
    info: Vec<f64>,
    /// Seconds from spawn to xrdp accepting the TCP connection, per run.
    accepted: Vec<f64>,
}

fn measure_connect(bed: &mut Bed, n: usize) -> Result<[Connect; 2]> {
    let mut runs: [Connect; 2] = Default::default();
    for i in 0..n {
        for p in PATHS {
            let (c, dt, steps) = bed
                .connect(p, TARGET_USER)
                .with_context(|| format!("connect run {i}"))?;
            let r = &mut runs[p.idx()];
            r.up.push(dt.as_secs_f64());
            r.info.extend(steps.info.map(|t| t.as_secs_f64()));
            r.accepted.extend(steps.accepted.map(|t| t.as_secs_f64()));
            bed.disconnect(vec![c])?;
        }
    }
    Ok(runs)
}

#[derive(Default)]
struct Bytes {
    /// Bytes per second per run.
    rate: Vec<f64>,
    /// This process's (Postern's) CPU seconds per second of the window.
    postern_cpu: Vec<f64>,
    /// Cores the whole machine kept busy during the window.
    cores: Vec<f64>,
    /// Cores this path's own processes kept busy: the target's (xrdp, the session's Xorg, the workload), the
    /// client, its Xvfb and Postern (this process).
    pipeline: Vec<f64>,
    /// Bytes in each window.
    bytes: Vec<u64>,
}

fn measure_bytes(bed: &mut Bed, s: &Settings, tck: f64) -> Result<[Bytes; 2]> {
    let mut out: [Bytes; 2] = Default::default();
    let flag = bed.flag(TARGET_USER);
    for i in 0..s.bytes_runs {
        for p in PATHS {
            let (c, ..) = bed.connect(p, TARGET_USER).with_context(|| format!("bytes run {i}"))?;
            std::thread::sleep(Duration::from_millis(500));
            fs::write(&flag, b"")?;
            // The animation starts (ImageMagick reads the frames) and the pipeline reaches its steady state.
            std::thread::sleep(Duration::from_secs(2));
            let port = bed.port(p);
            let (b0, c0, m0, p0, t0) = (
                client_bytes(port)?,
                self_cpu_seconds(tck),
                machine_busy_seconds(tck),
                bed.pipeline_cpu(&c, tck),
                Instant::now(),
            );
            std::thread::sleep(s.bytes_window);
            let (b1, c1, m1, p1, dt) = (
                client_bytes(port)?,
                self_cpu_seconds(tck),
                machine_busy_seconds(tck),
                bed.pipeline_cpu(&c, tck),
                t0.elapsed().as_secs_f64(),
            );
            let _ = fs::remove_file(&flag);
            let r = &mut out[p.idx()];
            r.rate.push((b1 - b0) as f64 / dt);
            r.bytes.push(b1 - b0);
            r.postern_cpu.push((c1 - c0) / dt);
            r.cores.push((m1 - m0) / dt);
            r.pipeline.push((p1 - p0) / dt);
            eprintln!("  {:<26} {:>7.1} MiB/s", p.name(), (b1 - b0) as f64 / dt / MIB);
            bed.disconnect(vec![c])?;
            // The animation stops within 0.2 s of the flag going.
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(out)
}

struct Memory {
    sessions: usize,
    /// PSS KiB: before, with the sessions open, after closing them.
    pss_before: u64,
    pss_open: u64,
    /// PSS KiB with the sessions open and then closed, each after `malloc_trim`.
    pss_open_trimmed: u64,
    pss_closed_trimmed: u64,
    live_listed: usize,
}

fn measure_memory(bed: &mut Bed, n: usize) -> Result<Memory> {
    let accounts: Vec<String> = (1..=n).map(memory_user).collect();
    // Warm-up: every target user's session is created (Xorg started) and Postern's allocator has served n
    // sessions once.
    let mut clients = Vec::new();
    for a in &accounts {
        clients.push(bed.connect(PathKind::Postern, a)?.0);
    }
    bed.disconnect(clients)?;
    std::thread::sleep(Duration::from_secs(3));
    let pss_before = smaps_rollup_self()?.0;
    let mut clients = Vec::new();
    for a in &accounts {
        clients.push(bed.connect(PathKind::Postern, a)?.0);
    }
    std::thread::sleep(Duration::from_secs(5));
    let live_listed = bed.postern.live_sessions();
    let pss_open = smaps_rollup_self()?.0;
    trim_heap();
    let pss_open_trimmed = smaps_rollup_self()?.0;
    bed.disconnect(clients)?;
    std::thread::sleep(Duration::from_secs(3));
    trim_heap();
    let pss_closed_trimmed = smaps_rollup_self()?.0;
    Ok(Memory {
        sessions: n,
        pss_before,
        pss_open,
        pss_open_trimmed,
        pss_closed_trimmed,
        live_listed,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Report

struct Outcome {
    background: (f64, f64),
    recordings: (usize, u64),
    connect: Result<[Connect; 2]>,
    bytes: Result<[Bytes; 2]>,
    memory: Result<Memory>,
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

fn report(s: &Settings, o: &Outcome, wall: Duration, started: &str) -> String {
    let mut r = String::new();
    let w = &mut r;
    let _ = writeln!(w, "## RDP gateway (`rdp-bench`)\n");
    let _ = writeln!(
        w,
        "Produced by `cargo run --release -p postern-bench --bin rdp-bench{}`{}: re-run it rather than editing the figures.\n",
        if s.quick { " -- --quick" } else { "" },
        if s.quick { " (a smoke run: small counts, not for comparison)" } else { "" }
    );
    let _ = writeln!(w, "- Date: {started} ({} s run)", wall.as_secs());
    let _ = writeln!(
        w,
        "- Other load on the machine: {:.2} cores busy before the start, {:.2} after the end (this program's processes gone)",
        o.background.0, o.background.1
    );
    let _ = writeln!(
        w,
        "- Machine: `nproc` = {}, `uname -r` = {}, {}; {}, xorgxrdp {}, freerdp2-x11 {} (`xfreerdp`); Postern {}, release build",
        sh("nproc"),
        sh("uname -r"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'"),
        sh("xrdp --version 2>&1 | head -1"),
        sh("dpkg-query -W -f '${Version}' xorgxrdp"),
        sh("dpkg-query -W -f '${Version}' freerdp2-x11"),
        revision()
    );
    let _ = writeln!(w, "\n### Method\n");
    let _ = writeln!(
        w,
        "One run, one target: xrdp {} with xorgxrdp (TLS security; it has no NLA) in a private mount namespace with its own users (the test harness `tests/common/rdp.rs`), reached two ways by `xfreerdp /sec:tls /cert:ignore /size:800x600` under one `Xvfb`: **direct** with the target account's password (autologon), and **through Postern** (started in the benchmark process, release build, multi-thread tokio runtime as `postern run`; user, resource and accounts created through the HTTPS API) as `alice#bench@{RESOURCE}` with alice's Postern password: Postern terminates the client's TLS and connection sequence, checks the password (argon2), pins xrdp's certificate, leases the vaulted password, plays the sequence towards xrdp and injects it into the Client Info PDU, then relays. Paths are interleaved (direct, Postern, direct, ...); both log in to the same target account, so after a warm-up every run reconnects to the same xrdp session (sesman's default policy). Everything is on loopback; clients, Xvfb, Postern, xrdp and the session's Xorg share the machine's cores.",
        sh("xrdp --version 2>&1 | head -1 | awk '{print $2}'")
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "- **Connect time**: wall clock from the spawn of `xfreerdp` to xrdp's log line `connected ok` (read as it is written): the connection sequence is done, the Client Info PDU's autologon has passed sesman's PAM login, and xrdp has attached the connection to the session's X server. The first frame reaches the client just after; that part is the same on both paths. Postern's own steps (TLS, password check, authorization, audit, lease, the second connection sequence) all lie before this line."
    );
    let _ = writeln!(
        w,
        "- **Bytes/s**: the session's `startwm.sh` runs ImageMagick `animate` over {FRAMES} full-screen (800×600) random-noise frames while a flag file exists, so every pixel changes as fast as the pipeline takes it (incompressible: the heavy case). For each run the client connects, the flag is set, after 2 s the client's TCP `bytes_received` (`ss -ti`, xfreerdp's one connection: to xrdp or to Postern) is read at the start and end of a {} s window. Both paths run `xfreerdp -compression` (no RDP bulk compression): Postern clears the compression flag of the Client Info PDU it sends the target, so that its recordings decode, and the direct path must match for the bytes to compare. \"Postern CPU\" is the CPU time of the benchmark process (Postern; the driver thread sleeps) per second of that window, i.e. per session-second of this workload; \"cores busy\" is the whole machine (2 cores).",
        s.bytes_window.as_secs()
    );
    let _ = writeln!(
        w,
        "- **Memory per session**: PSS of the benchmark process (Postern) from `/proc/self/smaps_rollup` with {} sessions open through Postern (one per target user, so {} Xorg sessions on the target; after a warm-up round of the same sessions), minus PSS before; and the same after glibc's `malloc_trim(0)` on both sides (a diagnostic: Postern never calls it).",
        s.sessions, s.sessions
    );
    let _ = writeln!(
        w,
        "- Session recording: Postern's defaults; it wrote {} recording files, {:.1} MiB, during the run{}.",
        o.recordings.0,
        o.recordings.1 as f64 / MIB,
        if o.recordings.0 == 0 {
            " (RDP sessions are not recorded yet in this revision)"
        } else {
            "; the Postern figures include that cost"
        }
    );
    let _ = writeln!(
        w,
        "- **Only ratios taken in the same run count**: absolute figures drift between runs on this kind of machine."
    );

    let _ = writeln!(w, "\n### 1. Connect time\n");
    match &o.connect {
        Ok(runs) => {
            let _ = writeln!(
                w,
                "{} runs per path, after one warm-up each. The last two columns say where the time goes, from xrdp's log: when xrdp accepted the TCP connection (direct: xfreerdp's start-up; through Postern: after Postern's side of the client's connection sequence, the password check, authorization, audit and lease), and when xrdp had the Client Info PDU (through Postern: after the gateway played the MCS sequence to xrdp); the rest, to `connected ok`, is xrdp's capability exchange with the client, sesman's login and the reconnection to the session. `RDP_BENCH_TRACE=1` prints every xrdp log line of every connection with its time.\n",
                runs[0].up.len()
            );
            let _ = writeln!(
                w,
                "| path | median ms | p90 ms | min ms | max ms | vs direct | xrdp accepted TCP, median ms | xrdp had the Client Info, median ms |"
            );
            let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|");
            let d = median(&runs[0].up);
            for p in PATHS {
                let v = &runs[p.idx()].up;
                let so = sorted(v);
                let _ = writeln!(
                    w,
                    "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} |",
                    p.name(),
                    median(v) * 1e3,
                    percentile(v, 90.0) * 1e3,
                    so.first().copied().unwrap_or(f64::NAN) * 1e3,
                    so.last().copied().unwrap_or(f64::NAN) * 1e3,
                    ratio(median(v), d),
                    median(&runs[p.idx()].accepted) * 1e3,
                    median(&runs[p.idx()].info) * 1e3
                );
            }
            let (direct, postern) = (&runs[PathKind::Direct.idx()], &runs[PathKind::Postern.idx()]);
            let fastest = sorted(&postern.info).first().copied().unwrap_or(f64::NAN);
            let _ = writeln!(
                w,
                "\nFrom the spawn to xrdp having the Client Info PDU: direct {:.0} ms (median), through Postern {:.0} ms (median), {:.0} ms at the fastest. Between xrdp accepting the connection and the Client Info, xrdp's log shows steps of about 100 ms between successive PDUs of the connection sequence (Erect Domain → Attach User, each Channel Join, Client Info): always on the direct path, in some runs on the FreeRDP → Postern leg (then \"xrdp accepted TCP\" through Postern is about 1 s), seldom on the Postern → xrdp leg. It looks like a poll interval in FreeRDP 2.11's or xrdp 0.9.21's connection handling that depends on how the PDUs fall into TLS records and TCP segments (not investigated further). These steps, not Postern's work, decide whether the Postern path comes out faster or slower than direct here. Postern's own work (its side of the client's connection sequence, the argon2 password check, authorization, audit, lease, the sequence played to xrdp) is at most **{:.0} ms**: the fastest \"xrdp had the Client Info\" through Postern minus the median \"xrdp accepted TCP\" direct (xfreerdp's start-up).",
                median(&direct.info) * 1e3,
                median(&postern.info) * 1e3,
                fastest * 1e3,
                (fastest - median(&direct.accepted)) * 1e3
            );
        }
        Err(e) => {
            let _ = writeln!(w, "Failed: {e:#}");
        }
    }

    let _ = writeln!(w, "\n### 2. Bytes/s, target → client\n");
    match &o.bytes {
        Ok(b) => {
            let _ = writeln!(
                w,
                "{} runs per path, {} s window each; medians.\n",
                b[0].rate.len(),
                s.bytes_window.as_secs()
            );
            let _ = writeln!(
                w,
                "| path | MiB/s | min MiB/s | max MiB/s | vs direct | MiB per window | cores busy: machine | of which this path's processes | Postern CPU s per session-second |"
            );
            let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            let d = median(&b[0].rate);
            for p in PATHS {
                let x = &b[p.idx()];
                let so = sorted(&x.rate);
                let bytes: Vec<f64> = x.bytes.iter().map(|&v| v as f64).collect();
                let _ = writeln!(
                    w,
                    "| {} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {:.2} | {:.2} | {} |",
                    p.name(),
                    median(&x.rate) / MIB,
                    so.first().copied().unwrap_or(f64::NAN) / MIB,
                    so.last().copied().unwrap_or(f64::NAN) / MIB,
                    ratio(median(&x.rate), d),
                    median(&bytes) / MIB,
                    median(&x.cores),
                    median(&x.pipeline),
                    match p {
                        PathKind::Direct => format!("({:.3}: the idle process, for reference)", median(&x.postern_cpu)),
                        PathKind::Postern => format!("**{:.3}**", median(&x.postern_cpu)),
                    }
                );
            }
            let cores = median(&b[0].cores).max(median(&b[1].cores));
            let own = median(&b[0].pipeline).max(median(&b[1].pipeline));
            let _ = writeln!(
                w,
                "\n\"This path's processes\" are every process in the target's mount namespace (xrdp, the session's Xorg, `animate`), `xfreerdp`, its Xvfb and Postern; the rest of \"machine\" is other load (the benchmark waits for a quiet machine before it starts, but cannot keep others away during the run)."
            );
            if cores < 1.5 {
                let _ = writeln!(
                    w,
                    "The machine was not saturated ({cores:.2} of 2 cores busy at most, {own:.2} by the session): the rate is the target's own update pace (xorgxrdp captures and xrdp encodes the changing screen at its rate), the same on both paths; what Postern adds shows in its CPU column, not in the rate."
                );
            } else {
                let _ = writeln!(
                    w,
                    "The machine was busy ({cores:.2} of 2 cores, {own:.2} by the session): the rate may be what the CPU left for the pipeline, in which case Postern's CPU competes with xrdp, Xorg and the client for it."
                );
            }
            let pc = median(&b[1].postern_cpu);
            let rate = median(&b[1].rate);
            if rate > 0.0 {
                let _ = writeln!(
                    w,
                    "\nPostern spends {:.2} CPU s per GiB relayed at this rate ({:.3} CPU s per session-second).",
                    pc / rate * 1024.0 * MIB,
                    pc
                );
            }
        }
        Err(e) => {
            let _ = writeln!(w, "Failed: {e:#}");
        }
    }

    let _ = writeln!(w, "\n### 3. Memory per RDP session in Postern\n");
    match &o.memory {
        Ok(m) => {
            let n = m.sessions as f64;
            let per = (m.pss_open as f64 - m.pss_before as f64) / n;
            let kept = (m.pss_open_trimmed as f64 - m.pss_closed_trimmed as f64) / n;
            let _ = writeln!(
                w,
                "| sessions open (listed live by Postern) | PSS before | PSS open | growth per session | PSS open, trimmed | PSS closed, trimmed | **kept after trim, per session** |"
            );
            let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|");
            let _ = writeln!(
                w,
                "| {} ({}) | {:.1} MiB | {:.1} MiB | {:.0} KiB | {:.1} MiB | {:.1} MiB | **{:.0} KiB** |",
                m.sessions,
                m.live_listed,
                m.pss_before as f64 / 1024.0,
                m.pss_open as f64 / 1024.0,
                per,
                m.pss_open_trimmed as f64 / 1024.0,
                m.pss_closed_trimmed as f64 / 1024.0,
                kept
            );
            let _ = writeln!(
                w,
                "\n\"Growth\" is (PSS open − PSS before) / {n}: what the process grew by, near zero when the allocator reuses what the warm-up round of the same sessions freed. \"Kept after trim\" is what the open sessions hold: (PSS open, trimmed − PSS closed, trimmed) / {n}, both after `malloc_trim(0)`: relay buffers, both TLS connections, the session's task and registry entry, plus heap pages shared with them.",
                n = m.sessions
            );
        }
        Err(e) => {
            let _ = writeln!(w, "Failed: {e:#}");
        }
    }
    r
}

fn main() -> Result<()> {
    let s = settings()?;
    rdp::available().map_err(|e| anyhow!("cannot run xrdp targets here: {e}"))?;
    let tck = clk_tck();
    let quiet = wait_for_quiet(tck, s.wait_idle);
    let started = sh("date -u '+%Y-%m-%d %H:%M UTC'");
    let t_all = Instant::now();
    eprintln!("starting the xrdp target, Postern and Xvfb ...");
    let mut bed = setup(&s)?;
    eprintln!(
        "xrdp 127.0.0.1:{}, Postern RDP 127.0.0.1:{}, Xvfb {}",
        bed.target.port,
        bed.postern_port,
        bed.x.display_name()
    );
    // Warm-up and sanity: both paths reach the target account (the first creates its xrdp session).
    for p in PATHS {
        let (c, dt, _) = bed.connect(p, TARGET_USER).context("warm-up")?;
        eprintln!("  warm-up {:<26} {:.0} ms", p.name(), dt.as_secs_f64() * 1e3);
        bed.disconnect(vec![c])?;
    }
    let xrdp_log = bed.target.log(rdp::Log::Xrdp);
    if xrdp_log.contains("alice#") || !xrdp_log.contains(&format!("login successful for user {TARGET_USER}")) {
        bail!(
            "the Postern path did not log in as {TARGET_USER}:\n{}",
            bed.target.logs()
        );
    }

    eprintln!("[1/3] connect time: {} runs per path ...", s.connect_runs);
    let connect = measure_connect(&mut bed, s.connect_runs);
    if let Ok(r) = &connect {
        for p in PATHS {
            eprintln!("  {:<26} median {:.0} ms", p.name(), median(&r[p.idx()].up) * 1e3);
        }
    }
    eprintln!(
        "[2/3] bytes/s: {} runs per path, {} s each ...",
        s.bytes_runs,
        s.bytes_window.as_secs()
    );
    let bytes = measure_bytes(&mut bed, &s, tck);
    let _ = fs::remove_file(bed.flag(TARGET_USER));
    eprintln!("[3/3] memory: {} sessions through Postern ...", s.sessions);
    let memory = measure_memory(&mut bed, s.sessions);

    let recordings = bed.postern.recordings();
    let wall = t_all.elapsed();
    let Bed { postern, target, x, .. } = bed;
    postern.stop();
    drop(x);
    drop(target);
    // The load left once everything this program started is gone.
    std::thread::sleep(Duration::from_secs(2));
    let outcome = Outcome {
        recordings,
        background: (quiet, background_cores(tck, Duration::from_secs(3))),
        connect,
        bytes,
        memory,
    };
    let text = report(&s, &outcome, wall, &started);
    println!("{text}");
    if let Some(out) = &s.out {
        let old = fs::read_to_string(out).unwrap_or_default();
        fs::write(out, set_block(&old, BLOCK, &text)).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("written to {}", out.display());
    }
    for (what, e) in [
        ("connect time", outcome.connect.as_ref().err()),
        ("bytes/s", outcome.bytes.as_ref().err()),
        ("memory", outcome.memory.as_ref().err()),
    ] {
        if let Some(e) = e {
            eprintln!("{what} failed: {e:#}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_records_and_their_byte_counts() {
        let text = "0      0      127.0.0.1:51234 127.0.0.1:3389 \n\t cubic wscale:7,7 rto:204 bytes_sent:1200 bytes_acked:1201 bytes_received:987654 segs_out:10\n0 0 127.0.0.1:51240 127.0.0.1:3389\n\t cubic bytes_received:5\n";
        assert_eq!(parse_ss(text), vec![(51234, 987654), (51240, 5)]);
        assert_eq!(parse_ss(""), vec![]);
    }

    #[test]
    fn log_tail_counts_only_new_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        fs::write(&p, "a connected ok\n").unwrap();
        let mut t = LogTail::new(p.clone());
        t.skip_to_end();
        assert_eq!(t.new_matches("connected ok"), 0);
        let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"b connected ok\nc conn").unwrap();
        assert_eq!(t.new_matches("connected ok"), 1);
        std::io::Write::write_all(&mut f, b"ected ok\n").unwrap();
        assert_eq!(t.new_matches("connected ok"), 1);
        assert_eq!(t.new_matches("connected ok"), 0);
    }
}
