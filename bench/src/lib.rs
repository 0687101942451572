//! Shared by the benchmark programs: Postern started in the benchmark process and set up through its HTTPS API,
//! the measuring helpers (CPU, memory, load, statistics), and `docs/benchmarks.md`, which more than one program
//! writes, each owning a block between HTML comment markers that the others keep as it is.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------------------------
// docs/benchmarks.md blocks

/// The start and end markers of program `name`'s block.
fn markers(name: &str) -> (String, String) {
    (format!("<!-- {name}:start -->"), format!("<!-- {name}:end -->"))
}

/// The block of `name` in `doc` (markers included), if any.
pub fn block<'a>(doc: &'a str, name: &str) -> Option<&'a str> {
    let (start, end) = markers(name);
    let a = doc.find(&start)?;
    let b = a + doc[a..].find(&end)? + end.len();
    Some(&doc[a..b])
}

/// `doc` with the block of `name` replaced by `body` (appended when absent).
pub fn set_block(doc: &str, name: &str, body: &str) -> String {
    let (start, end) = markers(name);
    let new = format!("{start}\n{}\n{end}", body.trim_end());
    match block(doc, name) {
        Some(old) => doc.replacen(old, &new, 1),
        None => format!("{}\n\n{new}\n", doc.trim_end()),
    }
}

/// The programs that own a block of `docs/benchmarks.md` (ssh-bench owns the rest of the file).
pub const BLOCK_OWNERS: [&str; 2] = ["recorder-bench", "rdp-bench"];

/// `new` (ssh-bench's whole report) followed by every other program's block found in `old`, unchanged.
pub fn keep_blocks(new: &str, old: &str) -> String {
    let mut text = new.trim_end().to_owned();
    for name in BLOCK_OWNERS {
        if let Some(b) = block(old, name) {
            text = format!("{text}\n\n{b}");
        }
    }
    text.push('\n');
    text
}

// ---------------------------------------------------------------------------------------------------------------
// Statistics

/// Sorted copy.
pub fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    s
}

/// Median (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile (NaN when empty).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

// ---------------------------------------------------------------------------------------------------------------
// CPU, memory, load

/// Clock ticks per second (`getconf CLK_TCK`, 100 when unknown).
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU time (user + system) of process `pid` (or this process: "self") so far, in seconds.
pub fn cpu_seconds(pid: &str, tck: f64) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" of the comm: state is field 3; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i - 3).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(14) + ticks(15)) / tck
}

/// CPU time (user + system) this process used so far, in seconds.
pub fn self_cpu_seconds(tck: f64) -> f64 {
    cpu_seconds("self", tck)
}

/// CPU seconds the whole machine spent busy so far (all cores; /proc/stat minus idle and iowait).
pub fn machine_busy_seconds(tck: f64) -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already inside user and nice).
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle) / tck
}

/// Cores the machine keeps busy over `window` while this program does nothing.
pub fn background_cores(tck: f64, window: Duration) -> f64 {
    let b0 = machine_busy_seconds(tck);
    std::thread::sleep(window);
    (machine_busy_seconds(tck) - b0) / window.as_secs_f64()
}

/// Waits (at most `max_wait`) until others keep less than 0.15 cores busy; returns the last load seen.
pub fn wait_for_quiet(tck: f64, max_wait: Duration) -> f64 {
    let mut quiet = background_cores(tck, Duration::from_secs(3));
    let until = std::time::Instant::now() + max_wait;
    while quiet > 0.15 && std::time::Instant::now() < until {
        eprintln!("the machine is busy ({quiet:.2} cores in use by others); waiting for it to be quiet ...");
        std::thread::sleep(Duration::from_secs(10));
        quiet = background_cores(tck, Duration::from_secs(3));
    }
    quiet
}

/// (Pss, Rss) in KiB from the text of a `smaps_rollup`.
pub fn smaps_rollup(text: &str) -> Result<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("no {name} in smaps_rollup"))
    };
    Ok((field("Pss:")?, field("Rss:")?))
}

/// (Pss, Rss) of this process in KiB.
pub fn smaps_rollup_self() -> Result<(u64, u64)> {
    smaps_rollup(&fs::read_to_string("/proc/self/smaps_rollup")?)
}

extern "C" {
    /// glibc: returns free memory of every malloc arena to the kernel.
    fn malloc_trim(pad: usize) -> i32;
}

/// Returns free heap memory to the kernel. A diagnostic only: Postern itself never calls it.
pub fn trim_heap() {
    // SAFETY: malloc_trim takes no pointers and locks each arena itself.
    unsafe {
        malloc_trim(0);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Report helpers

/// Stdout of `sh -c cmd`, trimmed ("" on failure).
pub fn sh(cmd: &str) -> String {
    Command::new("/bin/sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// What was measured: $POSTERN_BENCH_REVISION, else the git commit of the source tree (with "+ local changes"
/// when it has any).
pub fn revision() -> String {
    if let Ok(r) = std::env::var("POSTERN_BENCH_REVISION") {
        return r;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            format!("commit {c}{}", if dirty { " + local changes" } else { "" })
        }
        None => "(revision unknown)".into(),
    }
}

/// `docs/benchmarks.md` of this source tree.
pub fn default_report_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md")
}

// ---------------------------------------------------------------------------------------------------------------
// Postern in-process

/// The admin's password once the bootstrap changed it.
pub const ADMIN_PW: &str = "admin bench passphrase 1";

/// Postern running in this process on its own tokio runtime (multi-thread, one worker per core, as `postern run`),
/// all listeners on 127.0.0.1:0, data in a temp dir, the admin bootstrapped.
pub struct InProcess {
    /// The runtime Postern runs on (the driver thread only waits).
    pub rt: tokio::runtime::Runtime,
    /// The running server.
    pub running: Option<postern::app::Running>,
    /// Its data directory's parent (removed on drop).
    pub dir: tempfile::TempDir,
    /// `https://127.0.0.1:PORT`.
    pub base: String,
    /// A client trusting Postern's generated certificate.
    pub client: reqwest::Client,
    /// The admin's bearer token.
    pub admin: String,
}

/// One API call; (status, JSON body or the text as a JSON string).
pub async fn api(
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let mut rb = client.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.with_context(|| format!("API {path}"))?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// The body when the status is `want`, else an error naming `what`.
pub fn expect(what: &str, want: u16, got: (u16, Value)) -> Result<Value> {
    if got.0 != want {
        bail!("{what}: HTTP {} (wanted {want}): {}", got.0, got.1);
    }
    Ok(got.1)
}

impl InProcess {
    /// Starts Postern with `extra` configuration keys (dotted, as on the command line) on top of the listeners
    /// and data dir, and bootstraps the admin (initial password changed to [`ADMIN_PW`]).
    pub fn start(extra: &[(&str, &str)]) -> Result<InProcess> {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let dir = tempfile::Builder::new().prefix("postern-bench-").tempdir()?;
        let mut cli = vec![
            ("data_dir".to_string(), dir.path().join("data").display().to_string()),
            ("web.listen".to_string(), "127.0.0.1:0".to_string()),
            ("ssh.listen".to_string(), "127.0.0.1:0".to_string()),
            ("rdp.listen".to_string(), "127.0.0.1:0".to_string()),
        ];
        cli.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let cfg = postern::config::Config::load(&postern::config::Sources {
            file: None,
            env: &[],
            cli: &cli,
        })
        .map_err(|e| anyhow!("config: {e}"))?;
        let running = rt.block_on(postern::app::App::start(&cfg))?;
        let base = format!("https://127.0.0.1:{}", running.web_addr.port());
        let pem = fs::read(&cfg.web.tls_cert).context("generated TLS certificate")?;
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .timeout(Duration::from_secs(30))
            .build()?;
        let initial = fs::read_to_string(cfg.data_dir.join("initial-admin-password"))
            .context("initial-admin-password")?
            .trim()
            .to_owned();
        let mut p = InProcess {
            rt,
            running: Some(running),
            dir,
            base,
            client,
            admin: String::new(),
        };
        let first = p.login("admin", &initial)?;
        p.call(
            "change the admin password",
            reqwest::Method::POST,
            "/api/v1/me/password",
            &first,
            json!({"current_password": initial, "new_password": ADMIN_PW}),
            204,
        )?;
        p.admin = p.login("admin", ADMIN_PW)?;
        Ok(p)
    }

    /// The running server (until [`InProcess::stop`]).
    pub fn running(&self) -> &postern::app::Running {
        self.running.as_ref().expect("Postern is running")
    }

    /// A bearer token for `user`.
    pub fn login(&self, user: &str, password: &str) -> Result<String> {
        let v = self.rt.block_on(async {
            expect(
                &format!("login {user}"),
                200,
                api(
                    &self.client,
                    &self.base,
                    reqwest::Method::POST,
                    "/api/v1/auth/login",
                    None,
                    Some(json!({"username": user, "password": password})),
                )
                .await?,
            )
        })?;
        v["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no token"))
    }

    /// One API call that must answer `want`; returns the body.
    pub fn call(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Value,
        want: u16,
    ) -> Result<Value> {
        self.rt.block_on(async {
            expect(
                what,
                want,
                api(&self.client, &self.base, method, path, Some(token), Some(body)).await?,
            )
        })
    }

    /// Creates a user (no forced password change); returns (id, bearer token).
    pub fn create_user(&self, name: &str, role: &str, password: &str) -> Result<(String, String)> {
        let created = self.call(
            &format!("create {name}"),
            reqwest::Method::POST,
            "/api/v1/users",
            &self.admin,
            json!({"username": name, "role": role, "password": password, "must_change_password": false}),
            201,
        )?;
        let id = created["id"].as_str().ok_or_else(|| anyhow!("no user id"))?.to_owned();
        Ok((id, self.login(name, password)?))
    }

    /// Creates a resource as `token`'s user; returns its id.
    pub fn create_resource(&self, token: &str, name: &str, kind: &str, port: u16) -> Result<String> {
        let r = self.call(
            "create resource",
            reqwest::Method::POST,
            "/api/v1/resources",
            token,
            json!({"name": name, "type": kind, "host": "127.0.0.1", "port": port}),
            201,
        )?;
        r["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no resource id"))
    }

    /// Creates a password account on resource `rid` as `token`'s user.
    pub fn create_account(&self, token: &str, rid: &str, login: &str, password: &str) -> Result<()> {
        self.call(
            "create account",
            reqwest::Method::POST,
            &format!("/api/v1/resources/{rid}/accounts"),
            token,
            json!({"login": login, "password": password}),
            201,
        )?;
        Ok(())
    }

    /// Sessions in Postern's live registry.
    pub fn live_sessions(&self) -> usize {
        self.running.as_ref().map(|r| r.registry.list().len()).unwrap_or(0)
    }

    /// Session recordings in the data directory: files named `*.pcast` or under a directory named `record*`;
    /// (count, bytes).
    pub fn recordings(&self) -> (usize, u64) {
        let mut n = 0;
        let mut bytes = 0;
        let mut stack = vec![(self.dir.path().to_owned(), false)];
        while let Some((d, in_rec)) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().to_lowercase();
                let Ok(meta) = e.metadata() else { continue };
                if meta.is_dir() {
                    stack.push((p, in_rec || name.starts_with("record")));
                } else if in_rec || name.ends_with(".pcast") {
                    n += 1;
                    bytes += meta.len();
                }
            }
        }
        (n, bytes)
    }

    /// Shuts Postern down (bounded by its shutdown grace).
    pub fn stop(mut self) {
        if let Some(r) = self.running.take() {
            let _ = self.rt.block_on(r.shutdown());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_replaced_or_appended() {
        let doc = "# Benchmarks\n\ntext\n";
        let one = set_block(doc, "recorder-bench", "## Recorder\n| a |");
        assert!(one.ends_with("<!-- recorder-bench:start -->\n## Recorder\n| a |\n<!-- recorder-bench:end -->\n"));
        let two = set_block(&one, "recorder-bench", "## Recorder\n| b |");
        assert!(two.contains("| b |") && !two.contains("| a |"));
        assert_eq!(two.matches("recorder-bench:start").count(), 1);
        assert_eq!(block(&two, "recorder-bench").unwrap().lines().count(), 4);
        assert_eq!(block(doc, "recorder-bench"), None);
    }

    #[test]
    fn the_ssh_report_keeps_the_other_programs_blocks() {
        let old = set_block(
            &set_block("# old ssh figures\n", "recorder-bench", "rec"),
            "rdp-bench",
            "rdp",
        );
        let new = keep_blocks("# new ssh figures\n", &old);
        assert!(new.starts_with("# new ssh figures\n\n"));
        assert!(!new.contains("old ssh"));
        assert_eq!(block(&new, "recorder-bench"), block(&old, "recorder-bench"));
        assert_eq!(block(&new, "rdp-bench"), block(&old, "rdp-bench"));
        assert_eq!(keep_blocks("# only\n", "nothing"), "# only\n");
    }

    #[test]
    fn statistics() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(
            percentile(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 90.0),
            9.0
        );
    }

    #[test]
    fn smaps_fields() {
        let t = "55-66 ---p 0 0:0 0 [rollup]\nRss:  2048 kB\nPss:  1024 kB\n";
        assert_eq!(smaps_rollup(t).unwrap(), (1024, 2048));
        assert!(smaps_rollup("Rss: 1 kB\n").is_err());
    }
}
