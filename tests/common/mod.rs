//! Test harness: a whole Postern server in-process on 127.0.0.1:0, or the real
//! binary as a child process, each with its own temporary data directory.
#![allow(dead_code)]

pub mod rdp;
pub mod rdp_env;
pub mod sshd;
pub mod ws;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postern::app::{App, Running};
use postern::config::{Config, Sources};
use serde_json::{json, Value};

pub const ADMIN_PW: &str = "admin passphrase for tests";

/// Builder for an in-process server.
#[derive(Default)]
pub struct Builder {
    overrides: Vec<(String, String)>,
    dir: Option<tempfile::TempDir>,
}

impl Builder {
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.overrides.push((key.into(), value.into()));
        self
    }

    /// Starts on the data of an earlier (stopped) server: its `dir`.
    pub fn reuse_dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    pub async fn start(self) -> TestServer {
        let dir = match self.dir {
            Some(d) => d,
            None => tempfile::tempdir().unwrap(),
        };
        let mut cli = vec![
            ("data_dir".to_string(), dir.path().join("data").display().to_string()),
            ("web.listen".to_string(), "127.0.0.1:0".to_string()),
            ("ssh.listen".to_string(), "127.0.0.1:0".to_string()),
            ("rdp.listen".to_string(), "127.0.0.1:0".to_string()),
        ];
        cli.extend(self.overrides);
        let cfg = Config::load(&Sources {
            file: None,
            env: &[],
            cli: &cli,
        })
        .expect("test config");
        let running = App::start(&cfg).await.expect("server starts");
        let base = format!("https://127.0.0.1:{}", running.web_addr.port());
        let client = client_for(&cfg.web.tls_cert);
        TestServer {
            running: Some(running),
            cfg,
            dir,
            base,
            client,
        }
    }
}

/// A client that trusts the server's generated certificate (and nothing is disabled).
pub fn client_for(cert: &Path) -> reqwest::Client {
    let pem = std::fs::read(cert).expect("generated certificate");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub struct TestServer {
    pub running: Option<Running>,
    pub cfg: Config,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub client: reqwest::Client,
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub content_type: String,
}

impl TestServer {
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.cfg.data_dir.clone()
    }

    pub fn initial_password(&self) -> String {
        std::fs::read_to_string(self.cfg.data_dir.join("initial-admin-password"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub async fn req(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.client.request(m, format!("{}{}", self.base, path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("request");
        Self::read(r).await
    }

    /// The audit events whose action starts with `action` (newest first, at most 1000), as `token` sees them.
    pub async fn audit(&self, token: &str, action: &str) -> Vec<Value> {
        let r = self
            .req(
                "GET",
                &format!("/api/v1/audit?action={action}&limit=1000"),
                Some(token),
                None,
            )
            .await;
        r.body.as_array().cloned().unwrap_or_default()
    }

    /// The details of recording `id` (`GET /api/v1/recordings/{id}`) once `ready` holds for them, polled every
    /// 100 ms for up to 20 s; `Value::Null` if it never did.
    pub async fn recording_when(&self, id: &str, token: &str, ready: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let d = self
                .req("GET", &format!("/api/v1/recordings/{id}"), Some(token), None)
                .await;
            if d.status == 200 && ready(&d.body) {
                return d.body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Value::Null
    }

    pub async fn read(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            body,
            text,
            content_type,
        }
    }

    pub async fn login(&self, user: &str, pw: &str) -> Resp {
        self.req(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"username": user, "password": pw})),
        )
        .await
    }

    /// Logs in as the first admin, changes the generated password to ADMIN_PW, returns a token.
    pub async fn admin_token(&self) -> String {
        let first = self.login("admin", &self.initial_password()).await;
        assert_eq!(first.status, 200, "{}", first.text);
        let t = first.body["token"].as_str().unwrap().to_owned();
        let r = self
            .req(
                "POST",
                "/api/v1/me/password",
                Some(&t),
                Some(json!({"current_password": self.initial_password(), "new_password": ADMIN_PW})),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        let again = self.login("admin", ADMIN_PW).await;
        assert_eq!(again.status, 200, "{}", again.text);
        again.body["token"].as_str().unwrap().to_owned()
    }

    /// Creates a user (no forced password change) and logs them in; returns (user id, token).
    pub async fn create_user(&self, admin: &str, name: &str, role: &str, pw: &str) -> (String, String) {
        let r = self
            .req(
                "POST",
                "/api/v1/users",
                Some(admin),
                Some(json!({"username": name, "role": role, "password": pw, "must_change_password": false})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let t = self.login(name, pw).await;
        assert_eq!(t.status, 200, "{}", t.text);
        (
            r.body["id"].as_str().unwrap().to_owned(),
            t.body["token"].as_str().unwrap().to_owned(),
        )
    }

    /// Enrols the token's user in TOTP with a code from `oathtool` (must succeed); returns the secret.
    pub async fn enroll_totp(&self, token: &str) -> String {
        let en = self.req("POST", "/api/v1/me/totp", Some(token), None).await;
        assert_eq!(en.status, 200, "{}", en.text);
        let secret = en.body["secret"].as_str().unwrap().to_owned();
        let o = Command::new("oathtool")
            .args(["--totp", "-b", &secret])
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        let c = self
            .req(
                "POST",
                "/api/v1/me/totp/confirm",
                Some(token),
                Some(json!({"code": code})),
            )
            .await;
        assert_eq!(c.status, 204, "{}", c.text);
        secret
    }

    /// Creates a resource from `body` (must succeed); returns its id.
    pub async fn create_resource(&self, token: &str, body: Value) -> String {
        let r = self.req("POST", "/api/v1/resources", Some(token), Some(body)).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["id"].as_str().unwrap().to_owned()
    }

    /// Adds a password account to resource `rid` (must succeed); returns its id.
    pub async fn create_account(&self, token: &str, rid: &str, login: &str, password: &str) -> String {
        let a = self
            .req(
                "POST",
                &format!("/api/v1/resources/{rid}/accounts"),
                Some(token),
                Some(json!({"login": login, "password": password})),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        a.body["id"].as_str().unwrap().to_owned()
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            assert!(r.shutdown().await, "server stops within the grace period");
        }
    }
}

/// The real binary as a child process.
pub struct Proc {
    pub child: Child,
    pub stderr_path: PathBuf,
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_postern"));
    c.env_clear();
    c.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c
}

/// Starts `postern run` with a data dir, logging to a file; waits until the web listens.
pub fn spawn_server(data_dir: &Path, log_file: &Path, extra_env: &[(&str, &str)]) -> (Proc, u16) {
    let err = std::fs::File::create(log_file).unwrap();
    let mut c = bin();
    c.args([
        "--data-dir",
        data_dir.to_str().unwrap(),
        "run",
        "--web-listen",
        "127.0.0.1:0",
        "--ssh-listen",
        "127.0.0.1:0",
        "--rdp-listen",
        "127.0.0.1:0",
    ])
    .env("POSTERN_LOG_FORMAT", "json")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(err);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let child = c.spawn().unwrap();
    let mut p = Proc {
        child,
        stderr_path: log_file.to_owned(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(log_file).unwrap_or_default();
        for line in log.lines() {
            if line.contains("web console and API listening") {
                let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                let addr = v["fields"]["addr"].as_str().unwrap_or_default().to_owned();
                if let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse().ok()) {
                    return (p, port);
                }
            }
        }
        if let Ok(Some(status)) = p.child.try_wait() {
            panic!("server exited early ({status}); log:\n{log}");
        }
        assert!(Instant::now() < deadline, "server did not start; log:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Proc {
    /// SIGTERM, then wait; returns the exit status and how long it took.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let t0 = Instant::now();
        unsafe_kill(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s, t0.elapsed());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server ignored SIGTERM for 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal with the `kill` command (no libc dependency in tests).
pub fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub fn contains_bytes(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A random canary secret.
pub fn canary() -> String {
    format!("CANARY-{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    u64::from_le_bytes(b)
}

/// `tests/e2e` (the browser tests' scripts and their npm dependencies).
pub fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("e2e")
}

/// `npm ci` in tests/e2e when its node_modules is missing or stale.
pub fn ensure_e2e_deps() {
    let dir = e2e_dir();
    let lock = std::fs::read(dir.join("package-lock.json")).expect("tests/e2e/package-lock.json");
    let stamp = dir.join("node_modules").join(".postern-lock");
    if std::fs::read(&stamp).ok().as_deref() == Some(lock.as_slice()) {
        return;
    }
    let st = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .expect("npm (Node.js) is needed for the browser tests: run tests/run.sh or apt-get install nodejs npm");
    assert!(st.success(), "npm ci in tests/e2e failed");
    std::fs::write(&stamp, &lock).unwrap();
}
