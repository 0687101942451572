//! Tests of the real `postern` binary: first start, config check, master key
//! handling, signals, tokens, audit verification, master-key rotation killed
//! mid-way, and TOTP against Debian's oathtool.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn out(c: &mut Command) -> (i32, String, String) {
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

struct Remote {
    base: String,
    client: reqwest::Client,
}

impl Remote {
    fn new(data: &std::path::Path, port: u16) -> Self {
        Remote {
            base: format!("https://127.0.0.1:{port}"),
            client: client_for(&data.join("tls/cert.pem")),
        }
    }
    async fn req(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.base),
        );
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let st = r.status().as_u16();
        let text = r.text().await.unwrap();
        (st, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
    async fn admin(&self, data: &std::path::Path) -> String {
        let initial = std::fs::read_to_string(data.join("initial-admin-password"))
            .unwrap()
            .trim()
            .to_owned();
        let (_, b) = self
            .req(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"username": "admin", "password": initial})),
            )
            .await;
        let t = b["token"].as_str().unwrap().to_owned();
        let (st, _) = self
            .req(
                "POST",
                "/api/v1/me/password",
                Some(&t),
                Some(json!({"current_password": initial, "new_password": ADMIN_PW})),
            )
            .await;
        assert_eq!(st, 204);
        let (_, b) = self
            .req(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"username": "admin", "password": ADMIN_PW})),
            )
            .await;
        b["token"].as_str().unwrap().to_owned()
    }
}

#[test]
fn check_reports_every_error_with_its_line_or_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("postern.toml");
    std::fs::write(
        &f,
        "[web]\nlisten = \"nowhere\"\n\n[auth]\nlockout_threshold = -1\ncolour = \"red\"\n",
    )
    .unwrap();
    let (code, _, err) = out(bin().args(["check", "--config", f.to_str().unwrap()]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("postern.toml:2"), "{err}");
    assert!(err.contains("postern.toml:5"), "{err}");
    assert!(err.contains("postern.toml:6") && err.contains("colour"), "{err}");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[web]\nlisten = \"127.0.0.1:9443\"\n").unwrap();
    let (code, stdout, err) = out(bin()
        .args(["check", "--config", good.to_str().unwrap()])
        .env("POSTERN_SSH_LISTEN", "127.0.0.1:2200"));
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("127.0.0.1:9443") && stdout.contains("127.0.0.1:2200"),
        "{stdout}"
    );
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/postern.example.toml");
    let (code, _, err) = out(bin().args(["check", "--config", example]));
    assert_eq!(code, 0, "the documented example config is valid: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn first_start_logs_paths_wrong_key_refuses_and_sigterm_is_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let canary = canary();
    let (p, port) = spawn_server(&data, &dir.path().join("1.log"), &[("POSTERN_LOG_LEVEL", "debug")]);
    let log = p.log();
    for what in [
        "master key",
        "SSH host key",
        "self-signed TLS certificate",
        "first administrator",
        "initial-admin-password",
    ] {
        assert!(log.contains(what), "first start does not log {what:?}:\n{log}");
    }
    let api = Remote::new(&data, port);
    let t = api.admin(&data).await;
    let (st, r) = api
        .req(
            "POST",
            "/api/v1/resources",
            Some(&t),
            Some(json!({"name": "t", "type": "linux", "host": "127.0.0.1"})),
        )
        .await;
    assert_eq!(st, 201);
    let (st, a) = api
        .req(
            "POST",
            &format!("/api/v1/resources/{}/accounts", r["id"].as_str().unwrap()),
            Some(&t),
            Some(json!({"login": "root", "password": canary})),
        )
        .await;
    assert_eq!(st, 201);
    let (st, _) = api
        .req(
            "POST",
            &format!("/api/v1/accounts/{}/retrieve", a["id"].as_str().unwrap()),
            Some(&t),
            Some(json!({"reason": "test"})),
        )
        .await;
    assert_eq!(st, 200);
    let (status, took) = p.terminate();
    assert!(status.success(), "clean exit on SIGTERM");
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
    let log = std::fs::read_to_string(dir.path().join("1.log")).unwrap();
    assert!(!log.contains(&canary), "canary secret in the debug log");
    for f in files_under(&data) {
        assert!(
            !contains_bytes(&std::fs::read(&f).unwrap(), &canary),
            "canary in {}",
            f.display()
        );
    }
    // Wrong master key: refuses to start with a clear message, writes nothing.
    let key = data.join("master.key");
    let good = std::fs::read(&key).unwrap();
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let (code, _, err) = out(bin().args([
        "--data-dir",
        data.to_str().unwrap(),
        "run",
        "--web-listen",
        "127.0.0.1:0",
    ]));
    assert_ne!(code, 0);
    assert!(err.contains("does not match this database"), "{err}");
    // Missing key: refuses, and does not create a new one.
    std::fs::remove_file(&key).unwrap();
    let (code, _, err) = out(bin().args([
        "--data-dir",
        data.to_str().unwrap(),
        "run",
        "--web-listen",
        "127.0.0.1:0",
    ]));
    assert_ne!(code, 0);
    assert!(err.contains("missing"), "{err}");
    assert!(!key.exists());
    std::fs::write(&key, good).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (p, _) = spawn_server(&data, &dir.path().join("2.log"), &[]);
    assert!(!p.log().contains("generated a new master key"));
    p.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn token_create_and_verify_audit_finds_a_modified_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (p, port) = spawn_server(&data, &dir.path().join("s.log"), &[]);
    let api = Remote::new(&data, port);
    api.admin(&data).await;
    let (code, token, err) = out(bin().args([
        "--data-dir",
        data.to_str().unwrap(),
        "token",
        "create",
        "--user",
        "admin",
        "--ttl",
        "1h",
    ]));
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("pst_"));
    let (st, me) = api.req("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(st, 200);
    assert_eq!(me["username"], "admin");
    let (code, _, _) = out(bin().args([
        "--data-dir",
        data.to_str().unwrap(),
        "token",
        "create",
        "--user",
        "nobody",
    ]));
    assert_ne!(code, 0);
    p.terminate();
    let (code, stdout, err) = out(bin().args(["--data-dir", data.to_str().unwrap(), "verify", "--audit"]));
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(stdout.contains("audit chain OK"), "{stdout}");
    let db = data.join("postern.db");
    let st = Command::new("sqlite3")
        .arg(&db)
        .arg("UPDATE audit_events SET actor_name = 'mallory' WHERE seq = 2;")
        .status()
        .unwrap();
    assert!(st.success());
    let (code, stdout, _) = out(bin().args(["--data-dir", data.to_str().unwrap(), "verify", "--audit"]));
    assert_eq!(code, 1);
    assert!(stdout.contains("BROKEN at event 2"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn master_key_rotation_survives_a_kill_in_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (p, port) = spawn_server(&data, &dir.path().join("s.log"), &[]);
    let api = Remote::new(&data, port);
    let t = api.admin(&data).await;
    let (_, r) = api
        .req(
            "POST",
            "/api/v1/resources",
            Some(&t),
            Some(json!({"name": "many", "type": "linux", "host": "127.0.0.1"})),
        )
        .await;
    let rid = r["id"].as_str().unwrap().to_owned();
    let mut accounts = Vec::new();
    for i in 0..40 {
        let pw = format!("secret-{i}-{}", canary());
        let (st, a) = api
            .req(
                "POST",
                &format!("/api/v1/resources/{rid}/accounts"),
                Some(&t),
                Some(json!({"login": format!("u{i}"), "password": pw})),
            )
            .await;
        assert_eq!(st, 201);
        accounts.push((a["id"].as_str().unwrap().to_owned(), pw));
    }
    // Rotation refuses while the server runs.
    let (code, _, err) = out(bin().args(["--data-dir", data.to_str().unwrap(), "rotate-master-key"]));
    assert_ne!(code, 0);
    assert!(err.contains("locked"), "{err}");
    p.terminate();
    let old_key = std::fs::read_to_string(data.join("master.key")).unwrap();
    let mut child = bin()
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "rotate-master-key",
            "--batch-size",
            "1",
            "--pause-ms",
            "40",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some but not all rows are re-wrapped, then kill -9.
    let db = data.join("postern.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let o = Command::new("sqlite3")
            .arg(&db)
            .arg("SELECT COUNT(DISTINCT key_id) FROM sealed;")
            .output()
            .unwrap();
        if String::from_utf8_lossy(&o.stdout).trim() == "2" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "rotation never got under way");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    let o = Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT COUNT(DISTINCT key_id) FROM sealed;")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "2",
        "killed mid-way: rows under both keys"
    );
    assert!(data.join("master.key.next").exists());
    assert_eq!(std::fs::read_to_string(data.join("master.key")).unwrap(), old_key);
    // Every secret is readable after the crash.
    let check_all = |port: u16| {
        let api = Remote::new(&data, port);
        let accounts = accounts.clone();
        async move {
            let (_, b) = api
                .req(
                    "POST",
                    "/api/v1/auth/login",
                    None,
                    Some(json!({"username": "admin", "password": ADMIN_PW})),
                )
                .await;
            let t = b["token"].as_str().unwrap().to_owned();
            for (id, pw) in &accounts {
                let (st, got) = api
                    .req(
                        "POST",
                        &format!("/api/v1/accounts/{id}/retrieve"),
                        Some(&t),
                        Some(json!({"reason": "rotation test"})),
                    )
                    .await;
                assert_eq!(st, 200, "{got}");
                assert_eq!(got["password"].as_str(), Some(pw.as_str()));
            }
        }
    };
    let (p, port) = spawn_server(&data, &dir.path().join("s2.log"), &[]);
    assert!(p.log().contains("interrupted master-key rotation"), "{}", p.log());
    check_all(port).await;
    p.terminate();
    // Running it again completes it.
    let (code, stdout, err) = out(bin().args(["--data-dir", data.to_str().unwrap(), "rotate-master-key"]));
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("resumed"), "{stdout}");
    assert!(!data.join("master.key.next").exists());
    assert_ne!(std::fs::read_to_string(data.join("master.key")).unwrap(), old_key);
    let (p, port) = spawn_server(&data, &dir.path().join("s3.log"), &[]);
    check_all(port).await;
    p.terminate();
    let (code, stdout, _) = out(bin().args(["--data-dir", data.to_str().unwrap(), "verify", "--audit"]));
    assert_eq!(code, 0, "{stdout}");
}

fn oathtool(secret: &str, when: &str) -> String {
    let o = Command::new("oathtool")
        .args(["--totp", "-b", "--now", when, secret])
        .output()
        .expect("oathtool is installed (tests/run.sh installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn totp_codes_match_oathtool() {
    let mut s = TestServer::builder().start().await;
    let t = s.admin_token().await;
    let r = s.req("POST", "/api/v1/me/totp", Some(&t), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let secret = r.body["secret"].as_str().unwrap().to_owned();
    let uri = r.body["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/") && uri.contains(&format!("secret={secret}")),
        "{uri}"
    );
    // Confirm with the code of the previous 30 s step (accepted within ±1 step),
    // so the current step's code is still fresh for the login below.
    let prev = oathtool(&secret, "30 seconds ago");
    let c = s
        .req("POST", "/api/v1/me/totp/confirm", Some(&t), Some(json!({"code": prev})))
        .await;
    assert_eq!(c.status, 204, "{}", c.text);
    let no_code = s.login("admin", ADMIN_PW).await;
    assert_eq!(no_code.status, 401);
    assert!(no_code.text.contains("totp-required"), "{}", no_code.text);
    let wrong = s
        .req(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": ADMIN_PW, "totp": "000000"})),
        )
        .await;
    if oathtool(&secret, "now") != "000000" {
        assert_eq!(wrong.status, 401);
    }
    let code = oathtool(&secret, "now");
    let ok = s
        .req(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": ADMIN_PW, "totp": code})),
        )
        .await;
    if ok.status != 200 {
        // The step may have rolled over between the two calls: use the new code.
        let code = oathtool(&secret, "now");
        let ok = s
            .req(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"username": "admin", "password": ADMIN_PW, "totp": code})),
            )
            .await;
        assert_eq!(ok.status, 200, "{}", ok.text);
    }
    // The same code cannot be replayed.
    let replay = s
        .req(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": ADMIN_PW, "totp": oathtool(&secret, "now")})),
        )
        .await;
    assert_eq!(replay.status, 401);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn target_canary_password_never_reaches_debug_logs() {
    use common::sshd::{self, SshClient, SshTarget, TargetOptions, TargetUser};
    sshd::available().expect("real sshd targets are needed");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("debug.log");
    let (p, port) = spawn_server(&data, &log, &[("POSTERN_LOG_LEVEL", "debug")]);
    let ssh_port: u16 = p
        .log()
        .lines()
        .filter(|l| l.contains("SSH gateway listening"))
        .find_map(|l| {
            serde_json::from_str::<Value>(l).ok()?["fields"]["addr"]
                .as_str()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .expect("SSH listener address in the log");
    let api = Remote::new(&data, port);
    let t = api.admin(&data).await;
    let secret = canary();
    let target = SshTarget::start(TargetOptions {
        users: vec![TargetUser::password("canary", &secret)],
        ..Default::default()
    });
    let (_, r) = api
        .req(
            "POST",
            "/api/v1/resources",
            Some(&t),
            Some(json!({"name": "c1", "type": "linux", "host": "127.0.0.1", "port": target.port})),
        )
        .await;
    let rid = r["id"].as_str().unwrap().to_owned();
    let (st, _) = api
        .req(
            "POST",
            &format!("/api/v1/resources/{rid}/accounts"),
            Some(&t),
            Some(json!({"login": "canary", "password": secret})),
        )
        .await;
    assert_eq!(st, 201);
    let c = SshClient::new().with_password(ADMIN_PW);
    let o = c.ssh(ssh_port, "admin#canary@c1", &["id -un"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "canary",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (status, _) = p.terminate();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("session started"), "the debug log covers the session");
    assert!(!text.contains(&secret), "the target's password is in the debug log");
    assert!(!text.contains(ADMIN_PW), "the user's password is in the debug log");
    for f in files_under(&data) {
        assert!(
            !contains_bytes(&std::fs::read(&f).unwrap(), &secret),
            "canary in {}",
            f.display()
        );
    }
}
