//! Recorder cost without the network: feeds output straight into a
//! `Recording` (as the gateway's relay does) and reports wall time, CPU
//! seconds per GiB of the whole process (session thread + writer thread),
//! the size on disk and the search indexer's CPU for the sealed recording.
//! Each case runs three times; the medians are reported. A benchmark
//! program, not a test.
//!
//! `cargo run --release -p postern-bench --bin recorder-bench [MiB]` (default 1024). Prints the table and
//! writes it into its block of `docs/benchmarks.md` (`--no-write` to only print).

use std::time::Instant;

use anyhow::Result;
use bytes::Bytes;
use postern_recorder::{index_recording, verify, Indexer, RecorderConfig, Recording, SessionMeta};

/// Runs per case (the medians are reported).
const RUNS: usize = 3;

fn cpu_seconds() -> f64 {
    // utime + stime of this process, from /proc/self/stat (clock ticks; 100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// One run: (wall s, CPU s, bytes on disk, indexer CPU s, sealed and verified).
type Run = (f64, f64, u64, f64, bool);

/// Feeds `mib` MiB taken from `source` in 32 KiB pieces, cycling through it.
fn run_once(label: &str, mib: usize, source: &Bytes) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let cfg = RecorderConfig::new(dir.path(), key.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let total = mib << 20;
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let sealed = rt.block_on(async {
        let rec = Recording::start(
            &cfg,
            SessionMeta {
                session_id: uuid_like(label),
                user: "bench".into(),
                target: "bench@local".into(),
                protocol: "ssh".into(),
                width: 80,
                height: 24,
                ..Default::default()
            },
        )?;
        let mut sent = 0;
        while sent < total {
            // As the relay does: wait for room, then hand over one SSH data message (a shared buffer).
            rec.writable().await;
            if let Some(why) = rec.failed() {
                anyhow::bail!("recording failed: {why}");
            }
            let at = sent % source.len();
            let piece = source.slice(at..(at + 32 * 1024).min(source.len()));
            sent += piece.len();
            rec.output_bytes(piece);
        }
        Ok::<_, anyhow::Error>(rec.finish().await?)
    })?;
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let size = std::fs::metadata(&sealed.path)?.len();
    let v = verify(&sealed.path, &key.verifying_key())?;
    // What the background indexer spends on this recording after the seal (default limits).
    let ix0 = cpu_seconds();
    let mut ix = Indexer::default();
    index_recording(&sealed.path, &mut ix)?;
    let _ = ix.finish();
    Ok((wall, cpu, size, cpu_seconds() - ix0, !v.truncated))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// [`RUNS`] runs of one case, as a table row of medians.
fn run(label: &str, mib: usize, source: &[u8]) -> Result<String> {
    let source = Bytes::copy_from_slice(source);
    let runs = (0..RUNS)
        .map(|_| run_once(label, mib, &source))
        .collect::<Result<Vec<Run>>>()?;
    let gib = (mib << 20) as f64 / (1u64 << 30) as f64;
    let pick = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let wall = pick(|r| r.0);
    Ok(format!(
        "| {label} | {mib} | {:.2} | {:.0} | {:.2} | {:.2}–{:.2} | {:.1} | {:.2} | {} |",
        wall,
        mib as f64 / wall,
        pick(|r| r.1) / gib,
        runs.iter().map(|r| r.1).fold(f64::INFINITY, f64::min) / gib,
        runs.iter().map(|r| r.1).fold(0.0, f64::max) / gib,
        pick(|r| r.2 as f64) / (1 << 20) as f64 / gib,
        pick(|r| r.3) / gib,
        if runs.iter().all(|r| r.4) {
            "sealed, verifies"
        } else {
            "NOT sealed"
        }
    ))
}

fn uuid_like(label: &str) -> String {
    let n = label
        .bytes()
        .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
    format!("00000000-0000-4000-8000-{:012x}", n & 0xffff_ffff_ffff)
}

fn main() -> Result<()> {
    let mib: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1024);
    let zeros = vec![0u8; 32 * 1024];
    let mut text = Vec::with_capacity(32 * 1024);
    let mut i = 0u64;
    while text.len() < 32 * 1024 {
        text.extend_from_slice(
            format!("{i:>8} drwxr-xr-x root root 4096 Nov 25 12:00 /var/lib/thing-{i}\r\n").as_bytes(),
        );
        i += 1;
    }
    text.truncate(32 * 1024);
    // 8 MiB of noise, so that no chunk holds a repeat of another piece.
    let mut random = vec![0u8; 8 << 20];
    let mut x = 0x9e3779b97f4a7c15u64;
    for b in random.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut rows = vec![
        "| output | MiB | wall s | MiB/s | CPU s per GiB | CPU s per GiB, min–max | MiB on disk per GiB | indexer CPU s per GiB | result |".to_string(),
        "|---|---:|---:|---:|---:|---:|---:|---:|---|".to_string(),
    ];
    rows.push(run("zeros (head -c N /dev/zero)", mib, &zeros)?);
    rows.push(run("text (ls -l like lines)", mib, &text)?);
    rows.push(run("random bytes", mib / 4, &random)?);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let body = format!(
        "## Recorder\n\nProduced by `cargo run --release -p postern-bench --bin recorder-bench` on {} (load average \
         then: {}). Output is fed straight into a `Recording` in 32 KiB pieces of a shared buffer (`output_bytes`), \
         as the relay hands over SSH data messages, waiting for the writer's backpressure like the relay does; the \
         recording is then sealed and verified. CPU is the whole process (session side and writer thread), per GiB \
         of output recorded: the recorder's own cost, which a session pays on top of the relay. Medians of {RUNS} \
         runs per case (the spread of the CPU figure is shown: it moves with the machine's other load). The \
         indexer column is the CPU of the search indexer over the sealed recording, with its default limits (it \
         reads the whole recording for markers and scans at most 64 MiB of output text); Postern runs it after the \
         seal on a background thread under `SCHED_IDLE`, so it takes only CPU time that sessions leave unused. Format version 2 (binary events, zstd); \
         version 1 (asciicast text, deflate) measured 7.7 CPU s and 33 MB per GiB of zeros, 16 CPU s and 2.3 GB \
         per GiB of random bytes.\n\n{}\n",
        std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d %H:%M UTC")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        rows.join("\n")
    );
    println!("{body}");
    if !std::env::args().any(|a| a == "--no-write") {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, postern_bench::set_block(&doc, "recorder-bench", &body))?;
        eprintln!("written to {}", path.display());
    }
    Ok(())
}
