//! Recorder cost: CPU seconds per GiB recorded and bytes on disk, feeding the writer
//! (`postern_recorder::Recording`) directly, the way the SSH relay does (32 KiB outputs, waiting
//! for `writable()` as the relay's backpressure does). No ssh, no network.
//!
//! ```sh
//! cargo run --release -p postern-bench --bin recorder-bench              # 1 GiB per workload, updates docs/benchmarks.md
//! cargo run --release -p postern-bench --bin recorder-bench -- --quick   # 64 MiB per workload, prints only
//! cargo run --release -p postern-bench --bin recorder-bench -- --no-write
//! ```
//!
//! The figures go into the `Recorder` section of `docs/benchmarks.md` (between the
//! `recorder-bench` comment markers; `ssh-bench` keeps that section when it rewrites the file).
//! CPU time is the process's user+system time (`/proc/self/stat`, every thread: the session
//! side and the writer thread), so other load on the machine changes the wall time but hardly the
//! CPU seconds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use postern_recorder::{RecorderConfig, Recording, SessionMeta, SigningKey};

const MIB: u64 = 1024 * 1024;
const BEGIN: &str = "<!-- recorder-bench:begin -->";
const END: &str = "<!-- recorder-bench:end -->";

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of this process so far (all threads).
fn cpu_seconds(tck: f64) -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3; utime and stime are fields 14 and 15.
    let get = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(14) + get(15)) / tck
}

struct Workload {
    name: &'static str,
    what: &'static str,
    /// A pattern cycled through to make the stream (longer than deflate's 32 KiB window, so
    /// the repetition itself does not help compression, except for zeros).
    pattern: Vec<u8>,
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn workloads() -> Vec<Workload> {
    let zeros = vec![0u8; MIB as usize];
    // Terminal text: log lines with varying numbers, CRLF as a pty sends them.
    let mut text = Vec::new();
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut i = 0u64;
    while text.len() < MIB as usize {
        let r = xorshift(&mut x);
        text.extend_from_slice(
            format!(
                "2026-11-25T13:{:02}:{:02}.{:06}Z web-{:02} sshd[{}]: Accepted publickey for user{} from 10.{}.{}.{} port {} ssh2: ED25519 SHA256:{:016x}\r\n",
                (i / 60) % 60,
                i % 60,
                r % 1_000_000,
                r % 40,
                1000 + r % 60000,
                r % 500,
                (r >> 8) % 256,
                (r >> 16) % 256,
                (r >> 24) % 256,
                1024 + (r >> 32) % 60000,
                xorshift(&mut x),
            )
            .as_bytes(),
        );
        i += 1;
    }
    // Base64 of random bytes: text that hardly compresses.
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(MIB as usize);
    while b64.len() < MIB as usize {
        for _ in 0..76 {
            b64.push(B64[(xorshift(&mut x) % 64) as usize]);
        }
        b64.push(b'\n');
    }
    vec![
        Workload {
            name: "zeros",
            what: "NUL bytes (`head -c 1G /dev/zero`)",
            pattern: zeros,
        },
        Workload {
            name: "log text",
            what: "varied log lines (sshd-like, CRLF)",
            pattern: text,
        },
        Workload {
            name: "base64",
            what: "base64 of random bytes (`base64 /dev/urandom`)",
            pattern: b64,
        },
    ]
}

struct Row {
    name: &'static str,
    paced: bool,
    what: &'static str,
    bytes: u64,
    cpu: f64,
    wall: f64,
    disk: u64,
    chunks: u64,
}

/// `paced`: keep the writer's queue under an eighth of its budget, below the point where the
/// writer stores poorly compressible chunks instead of compressing them (a session slower than
/// the writer); otherwise feed as fast as `writable()` allows (the writer under pressure).
async fn record(dir: &Path, key: &SigningKey, w: &Workload, total: u64, paced: bool, tck: f64) -> Result<Row> {
    let cfg = RecorderConfig::new(dir, key.clone());
    let calm = cfg.queue_bytes / 8;
    let meta = SessionMeta {
        session_id: format!("bench-{}-{paced}", w.name.replace(' ', "-")),
        user: "bench".into(),
        target: "bench@bench".into(),
        protocol: "ssh".into(),
        width: 80,
        height: 24,
        ..Default::default()
    };
    let cpu0 = cpu_seconds(tck);
    let t0 = Instant::now();
    let rec = Recording::start(&cfg, meta)?;
    let step = 32 * 1024;
    let len = w.pattern.len();
    let mut fed = 0u64;
    let mut off = 0usize;
    while fed < total {
        rec.writable().await;
        while paced && rec.queued_bytes() > calm {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        if let Some(why) = rec.failed() {
            bail!("the recording failed: {why}");
        }
        let n = step.min(len - off).min((total - fed) as usize);
        rec.output(&w.pattern[off..off + n]);
        off = (off + n) % len;
        fed += n as u64;
    }
    let sealed = rec.finish().await?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(tck) - cpu0;
    let disk = fs::metadata(&sealed.path)?.len();
    let key = key.verifying_key();
    let v = postern_recorder::verify(&sealed.path, &key)?;
    if v.truncated {
        bail!("the recording verifies as truncated");
    }
    fs::remove_file(&sealed.path)?;
    Ok(Row {
        name: w.name,
        paced,
        what: w.what,
        bytes: total,
        cpu,
        wall,
        disk,
        chunks: v.chunks,
    })
}

fn report(rows: &[Row], commit: &str) -> String {
    let mut s = String::new();
    s += &format!("{BEGIN}\n## Recorder\n\n");
    s += "Produced by `bench/` (`cargo run --release -p postern-bench --bin recorder-bench`): the session recorder alone, \
          fed the way the SSH relay feeds it (32 KiB outputs, waiting on `writable()`), writing to the local disk; no \
          ssh, no network. CPU is the process's user+system time over every thread (the session side and the writer \
          thread), from the first output to the sealed file; the file is then verified (not timed).\n\n";
    s += &format!(
        "- Date: {}; Postern commit {commit}; release build; `nproc` = {}\n",
        Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    s += "- Format: asciicast v2 text (NUL and other control bytes become 6-character `\\u0000` escapes), \
          deflate level \"fast\" per 64 KiB chunk of text, SHA-256 chain, ed25519 checkpoint at most once a second \
          and a seal.\n\n";
    s += "Two feeding modes: **full speed** (outputs as fast as `writable()` lets them in: the writer is under \
          pressure, and then stores chunks that compress poorly — ratio over 1:4 — as deflate stored blocks to keep up) \
          and **paced** (the queue is kept under 1 MiB, as with a session slower than the writer: every chunk is \
          deflated).\n\n";
    s += "| workload | mode | recorded | CPU s | **CPU s per GiB** | wall s | on disk | ratio | chunks |\n";
    s += "|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in rows {
        let gib = r.bytes as f64 / (1024.0 * MIB as f64);
        s += &format!(
            "| {}: {} | {} | {} MiB | {:.2} | **{:.2}** | {:.2} | {:.2} MiB | {:.1}:1 | {} |\n",
            r.name,
            r.what,
            if r.paced { "paced" } else { "full speed" },
            r.bytes / MIB,
            r.cpu,
            r.cpu / gib,
            r.wall,
            r.disk as f64 / MIB as f64,
            r.bytes as f64 / r.disk.max(1) as f64,
            r.chunks,
        );
    }
    for z in rows.iter().filter(|r| r.name == "zeros") {
        let per_gib = z.disk as f64 * (1024.0 * MIB as f64) / z.bytes as f64;
        s += &format!(
            "\nTarget (issue 5): the recording of 1 GiB of zeros ≤ 64 MB on disk ({}): {:.2} MB per GiB — {}.",
            if z.paced { "paced" } else { "full speed" },
            per_gib / 1e6,
            if per_gib <= 64e6 { "met" } else { "**MISSED**" }
        );
    }
    s += "\n";
    s += &format!("{END}\n");
    s
}

/// Replaces the recorder section of `path` (or appends it).
fn write_section(path: &Path, section: &str) -> Result<()> {
    let old = fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if b > a => format!(
            "{}{section}{}",
            &old[..a],
            &old[b + END.len()..].trim_start_matches('\n')
        ),
        _ => format!("{}\n{section}", old.trim_end()),
    };
    fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

fn main() -> Result<()> {
    let mut quick = false;
    let mut out: Option<Option<PathBuf>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--no-write" => out = Some(None),
            "--out" => out = Some(Some(PathBuf::from(args.next().context("--out needs a path")?))),
            other => bail!("unknown argument {other:?} (usage: recorder-bench [--quick] [--out PATH | --no-write])"),
        }
    }
    let default_out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
    let out = out.unwrap_or(if quick { None } else { Some(default_out) });
    let total = if quick { 64 * MIB } else { 1024 * MIB };
    let tck = clk_tck();
    let dir = tempfile::Builder::new().prefix("postern-recorder-bench-").tempdir()?;
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for w in workloads() {
        for paced in [false, true] {
            eprintln!("recording {} MiB of {} (paced: {paced}) ...", total / MIB, w.name);
            let r = rt.block_on(record(dir.path(), &key, &w, total, paced, tck))?;
            eprintln!(
                "  {:.2} CPU s, {:.2} s wall, {:.2} MiB on disk",
                r.cpu,
                r.wall,
                r.disk as f64 / MIB as f64
            );
            rows.push(r);
        }
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let text = report(&rows, &commit);
    println!("{text}");
    if let Some(path) = out {
        write_section(&path, &text)?;
        eprintln!("written to {}", path.display());
    }
    Ok(())
}
