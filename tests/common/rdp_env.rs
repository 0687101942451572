//! What the RDP gateway tests share: an in-process Postern with alice (a password administrator) and her
//! token, the gateway's RDP port, a temporary directory for client logs, and the capture of this test
//! binary's log lines for canary and message checks. Each test file adds its own helpers in an `impl RdpEnv`.

use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use super::rdp;
use super::{Builder, TestServer};

/// An in-process Postern for RDP tests.
pub struct RdpEnv {
    pub s: TestServer,
    pub admin: String,
    pub alice: String,
    pub rdp_port: u16,
    pub tmp: tempfile::TempDir,
}

impl RdpEnv {
    /// Starts Postern with alice (password `alice_pw`); the test binary's logs are captured from the first
    /// call on, at `log_filter` (an `EnvFilter` directive string).
    pub async fn new(alice_pw: &str, log_filter: &str) -> RdpEnv {
        Self::with(TestServer::builder(), alice_pw, log_filter).await
    }

    /// [`RdpEnv::new`] with a server built by `builder` (settings of its own).
    pub async fn with(builder: Builder, alice_pw: &str, log_filter: &str) -> RdpEnv {
        rdp::available().expect("xrdp, FreeRDP and Xvfb are needed (run the suite with tests/run.sh as root)");
        log_buffer(log_filter);
        let s = builder.start().await;
        let admin = s.admin_token().await;
        let (_, alice) = s.create_user(&admin, "alice", "password_administrator", alice_pw).await;
        let rdp_port = s.running.as_ref().unwrap().rdp_addr.port();
        RdpEnv {
            s,
            admin,
            alice,
            rdp_port,
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    /// A Windows-type resource (RDP) at `127.0.0.1:port`, owned by alice; returns its id.
    pub async fn windows_resource(&self, name: &str, port: u16) -> String {
        windows_resource(&self.s, &self.alice, name, port).await
    }

    /// The audit events whose action starts with `action`, as the admin sees them.
    pub async fn audit(&self, action: &str) -> Vec<Value> {
        self.s.audit(&self.admin, action).await
    }
}

/// A Windows-type resource (RDP) at `127.0.0.1:port`, created with `token`; returns its id.
pub async fn windows_resource(s: &TestServer, token: &str, name: &str, port: u16) -> String {
    let body = serde_json::json!({"name": name, "type": "windows", "host": "127.0.0.1", "port": port});
    s.create_resource(token, body).await
}

/// Waits (without blocking the runtime) until `f` holds; false after `timeout`.
pub async fn eventually(timeout: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Panics when `secret` is in the command line of any process on the machine.
pub fn no_canary_in_any_argv(secret: &str) {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            assert!(
                !super::contains_bytes(&cmdline, secret),
                "canary in {}/cmdline",
                entry.path().display()
            );
        }
    }
}

/// Every log line of this test binary's in-process servers since the first [`RdpEnv::new`].
pub fn logs() -> String {
    String::from_utf8_lossy(&log_buffer("debug").lock().unwrap()).into_owned()
}

fn log_buffer(filter: &str) -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(move || LogWriter(w.clone()))
            .try_init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
