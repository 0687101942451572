//! Recordings end to end: real OpenSSH sessions through the gateway are cataloged, exported
//! as asciicast (read by Debian's `asciinema cat`), searchable, watched live over a WebSocket
//! (a stalled viewer is dropped and never slows the session), and purged by retention.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::sshd::{self, SshClient, SshTarget, TargetOptions, TargetUser};
use common::ws;
use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const ALICE_PW: &str = "alice passphrase 123";

struct Env {
    s: TestServer,
    admin: String,
    ssh_port: u16,
    secret: String,
    client: SshClient,
    _target: SshTarget,
}

impl Env {
    async fn new(b: Builder) -> Env {
        sshd::available().expect("real sshd targets are needed (run the suite with tests/run.sh as root)");
        let s = b.start().await;
        let admin = s.admin_token().await;
        let r = s
            .req("POST", "/api/v1/users", Some(&admin), Some(json!({"username": "alice", "role": "password_administrator", "password": ALICE_PW, "must_change_password": false})))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let alice = s.login("alice", ALICE_PW).await.body["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let secret = common::canary();
        let target = SshTarget::start(TargetOptions {
            users: vec![TargetUser::password("ops", &secret)],
            allow_tcp_forwarding: false,
            extra_config: String::new(),
        });
        let r = s
            .req(
                "POST",
                "/api/v1/resources",
                Some(&alice),
                Some(json!({"name": "web", "type": "linux", "host": "127.0.0.1", "port": target.port})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let rid = r.body["id"].as_str().unwrap().to_owned();
        let a = s
            .req(
                "POST",
                &format!("/api/v1/resources/{rid}/accounts"),
                Some(&alice),
                Some(json!({"login": "ops", "password": secret})),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        let ssh_port = s.running.as_ref().unwrap().ssh_addr.port();
        Env {
            s,
            admin,
            ssh_port,
            secret,
            client: SshClient::new().with_password(ALICE_PW),
            _target: target,
        }
    }

    fn ssh(&self, args: &[&str]) -> Command {
        self.client.ssh(self.ssh_port, "alice#ops@web", args)
    }

    async fn get(&self, path: &str) -> Resp {
        self.s.req("GET", path, Some(&self.admin), None).await
    }

    async fn audit(&self, action: &str) -> Vec<Value> {
        self.s.audit(&self.admin, action).await
    }

    /// The id of the live session that is not in `before`, waiting for it.
    async fn new_live_session(&self, before: &[String]) -> String {
        let registry = self.s.running.as_ref().unwrap().registry.clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(x) = registry.list().into_iter().find(|x| !before.contains(&x.id)) {
                return x.id;
            }
            assert!(Instant::now() < deadline, "the session never went live");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn live_ids(&self) -> Vec<String> {
        self.s
            .running
            .as_ref()
            .unwrap()
            .registry
            .list()
            .into_iter()
            .map(|x| x.id)
            .collect()
    }

    /// Waits until the recording is cataloged as ended (not live) and returns its row.
    async fn ended_recording(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.get("/api/v1/recordings").await;
            assert_eq!(r.status, 200, "{}", r.text);
            if let Some(row) = r.body.as_array().unwrap().iter().find(|x| x["id"] == id) {
                if row["status"] != "live" {
                    return row.clone();
                }
            }
            assert!(Instant::now() < deadline, "recording {id} never ended: {}", r.text);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A WebSocket to `/api/v1/sessions/{id}/watch`; a refused upgrade gives its HTTP status.
async fn watch(s: &TestServer, id: &str, token: Option<&str>) -> Result<ws::Ws, u16> {
    ws::connect(s, &format!("/api/v1/sessions/{id}/watch"), token, None)
        .await
        .map_err(|(status, _)| status)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_is_cataloged_exported_for_asciinema_and_searchable() {
    let mut env = Env::new(TestServer::builder()).await;
    let before = env.live_ids();
    // An interactive shell: wait for the prompt before typing, as a person would.
    let mut cmd = env.ssh(&["-tt"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let id = env.new_live_session(&before).await;
    let mut stdin = child.stdin.take().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stdin.write_all(b"echo needle-$((6*7)) done\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stdin.write_all(b"exit 3\n").unwrap();
    drop(stdin);
    let o = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("needle-42 done"));

    // Listed, sealed, with its final hash; filters work.
    let row = env.ended_recording(&id).await;
    assert_eq!(row["status"], "sealed", "{row}");
    assert_eq!(row["user"], "alice");
    assert_eq!(row["target"], "ops@web");
    assert_eq!(row["protocol"], "ssh");
    assert_eq!(row["exit_info"], "exit status 3");
    assert!(row["size"].as_u64().unwrap() > 0);
    let final_hash = row["final_hash"].as_str().unwrap().to_owned();
    assert_eq!(final_hash.len(), 64);
    assert!(row.get("path").is_none(), "server paths are not shown");
    let ends = env.audit("session.end").await;
    assert!(ends
        .iter()
        .any(|e| e["detail"].as_str().unwrap_or("").contains(&final_hash)));
    let mine = env
        .get("/api/v1/recordings?user=alice&protocol=ssh&target=ops%40web")
        .await;
    assert_eq!(mine.body.as_array().unwrap().len(), 1, "{}", mine.text);
    let none = env.get("/api/v1/recordings?user=bob").await;
    assert_eq!(none.body.as_array().unwrap().len(), 0);
    let bad = env.get("/api/v1/recordings?from=last-week").await;
    assert_eq!(bad.status, 422, "{}", bad.text);

    // Detail: verified with the server's key.
    let d = env.get(&format!("/api/v1/recordings/{id}")).await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body["verification"]["ok"], true, "{}", d.text);
    assert_eq!(d.body["verification"]["truncated"], false);
    assert_eq!(d.body["verification"]["final_hash"], final_hash.as_str());
    let unknown = env.get("/api/v1/recordings/00000000-0000-4000-8000-000000000000").await;
    assert_eq!(unknown.status, 404);

    // The cast: plain asciicast v2 that Debian's asciinema reads, with the typed text.
    let cast = env.get(&format!("/api/v1/recordings/{id}/cast")).await;
    assert_eq!(cast.status, 200);
    assert_eq!(cast.content_type, "application/x-asciicast");
    assert!(
        cast.text.starts_with("{\"version\":2"),
        "{}",
        &cast.text[..100.min(cast.text.len())]
    );
    assert!(
        !cast.text.contains("\"i\","),
        "no input events without [recording] record_input"
    );
    let file = env.s.dir.path().join("session.cast");
    std::fs::write(&file, &cast.text).unwrap();
    // `asciinema cat` needs a terminal: `script` (util-linux) gives it a pty.
    let o = Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!("asciinema cat '{}'", file.display()))
        .arg("/dev/null")
        .env("HOME", env.s.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("script and asciinema are installed (Debian packages bsdutils, asciinema)");
    assert!(o.status.success(), "asciinema cat failed: {}", stderr(&o));
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(shown.contains("echo needle-$((6*7)) done"), "{shown}");
    assert!(shown.contains("needle-42 done"), "{shown}");

    // Search finds the command typed at the prompt, with its offset, once indexed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let hits = loop {
        let r = env.get("/api/v1/recordings/search?q=echo%20needle").await;
        assert_eq!(r.status, 200, "{}", r.text);
        if let Some(res) = r.body.as_array().unwrap().first() {
            break res.clone();
        }
        assert!(Instant::now() < deadline, "never indexed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(hits["recording"]["id"], id.as_str());
    let cmd_hit = hits["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["kind"] == "command")
        .unwrap_or_else(|| panic!("no command hit: {hits}"));
    assert!(cmd_hit["snippet"].as_str().unwrap().contains("echo needle"), "{hits}");
    let offset = cmd_hit["offset"].as_f64().unwrap();
    assert!(offset > 0.5 && offset < 60.0, "typed ~1.5 s in: {offset}");
    let out = env.get("/api/v1/recordings/search?q=needle-42").await;
    assert!(out.body[0]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["kind"] == "output" && h["snippet"].as_str().unwrap().contains("needle-42 done")));
    let nothing = env.get("/api/v1/recordings/search?q=haystack").await;
    assert_eq!(nothing.body.as_array().unwrap().len(), 0);
    let empty = env.get("/api/v1/recordings/search?q=").await;
    assert_eq!(empty.status, 422);
    let d = env.get(&format!("/api/v1/recordings/{id}")).await;
    assert_eq!(d.body["recording"]["indexed"], true);
    assert!(
        d.body["markers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["kind"] == "exit" && m["detail"] == "3"),
        "{}",
        d.text
    );

    // Every read is audited with who and which recording; the chain holds.
    for action in [
        "recording.list",
        "recording.read",
        "recording.download",
        "recording.search",
    ] {
        let ev = env.audit(action).await;
        assert!(ev.iter().any(|e| e["actor_name"] == "admin"), "{action}: {ev:?}");
    }
    assert!(env
        .audit("recording.download")
        .await
        .iter()
        .any(|e| e["object_id"] == id.as_str()));
    let v = env.get("/api/v1/audit/verify").await;
    assert!(v.body["first_broken"].is_null(), "{}", v.text);

    // The target's vaulted password is in no listing, detail, search result or cast.
    for text in [
        env.get("/api/v1/recordings").await.text,
        env.get(&format!("/api/v1/recordings/{id}")).await.text,
        env.get("/api/v1/recordings/search?q=needle").await.text,
        cast.text.clone(),
    ] {
        assert!(!text.contains(&env.secret), "canary leaked: {text}");
    }
    // A user without the View sessions permission is refused.
    let r = env
        .s
        .req("POST", "/api/v1/users", Some(&env.admin), Some(json!({"username": "pu", "role": "password_user", "password": "pu passphrase 123", "must_change_password": false})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let pu = env.s.login("pu", "pu passphrase 123").await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        "/api/v1/recordings".to_string(),
        format!("/api/v1/recordings/{id}"),
        format!("/api/v1/recordings/{id}/cast"),
        "/api/v1/recordings/search?q=needle".to_string(),
    ] {
        let r = env.s.req("GET", &path, Some(&pu), None).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
    }
    env.s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn live_watch_follows_output_and_a_stalled_viewer_never_slows_the_session() {
    let mut env = Env::new(TestServer::builder()).await;

    // 1. A viewer follows a running session live and is told when it ends.
    let before = env.live_ids();
    let mut child = env
        .ssh(&["sleep 1; for i in $(seq 1 20); do echo tick-$i; sleep 0.1; done"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = env.new_live_session(&before).await;
    let mut ws = watch(&env.s, &id, Some(&env.admin)).await.expect("watch");
    let mut seen = Vec::new();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => seen.extend_from_slice(&b),
            Ok(Some(Ok(Message::Close(f)))) => break f,
            Ok(Some(Ok(_))) => {}
            other => panic!("watch ended without a close frame: {other:?}"),
        }
    };
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("tick-1\r\n") || seen.contains("tick-1\n"), "{seen}");
    assert!(seen.contains("tick-20"), "{seen}");
    let close = close.expect("a close frame with a reason");
    assert_eq!(u16::from(close.code), 1000);
    assert_eq!(close.reason.as_str(), "the session ended");
    assert!(tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap()
        .success());
    let watched = env.audit("session.watch").await;
    assert!(
        watched
            .iter()
            .any(|e| e["actor_name"] == "admin" && e["object_id"] == id.as_str()),
        "{watched:?}"
    );
    // A session that is not live cannot be watched.
    match watch(&env.s, &id, Some(&env.admin)).await {
        Err(status) => assert_eq!(status, 404),
        Ok(_) => panic!("the upgrade was accepted"),
    }

    // 2. A viewer that never reads while the session sends 256 MiB: the transfer completes,
    //    the viewer is dropped while the session is still running.
    const TOTAL: u64 = 256 << 20;
    let before = env.live_ids();
    let mut child = env
        .ssh(&[&format!("sleep 2; head -c {TOTAL} /dev/zero")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => return n,
                Ok(k) => n += k as u64,
            }
        }
    });
    let id = env.new_live_session(&before).await;
    let stalled = watch(&env.s, &id, Some(&env.admin)).await.expect("watch");
    let hubs = env.s.running.as_ref().unwrap().hubs.clone();
    let hub = hubs.get(&id).expect("the session's hub");
    assert_eq!(hub.subscriber_count(), 1, "the stalled viewer is subscribed");
    // Poll the hub while the transfer runs: the viewer is dropped before the session ends.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut dropped_while_live = false;
    while !reader.is_finished() {
        if hub.subscriber_count() == 0 && hubs.get(&id).is_some() {
            dropped_while_live = true;
            break;
        }
        assert!(Instant::now() < deadline, "the transfer never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        dropped_while_live,
        "the stalled viewer was not dropped while the session ran"
    );
    // The viewer, reading at last, gets part of the output and then the reason it was dropped.
    let mut stalled = stalled;
    let mut received = 0u64;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(60), stalled.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => received += b.len() as u64,
            Ok(Some(Ok(Message::Close(f)))) => break f,
            Ok(Some(Ok(_))) => {}
            other => panic!("no close frame after {received} bytes: {other:?}"),
        }
    };
    assert!(received < TOTAL, "the stalled viewer got everything ({received})");
    let close = close.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.as_str().contains("fell behind"), "{}", close.reason);
    // The session was never slowed to the viewer's pace: the whole transfer completes.
    let got = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(status.status.success(), "{}", stderr(&status));
    assert_eq!(got, TOTAL, "the whole transfer reached the client");
    let row = env.ended_recording(&id).await;
    assert_eq!(row["status"], "sealed", "{row}");
    env.s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_purges_old_recordings_with_an_audit_event() {
    let mut env = Env::new(TestServer::builder()).await;
    let before = env.live_ids();
    let o = env.ssh(&["echo old-session"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = before;
    let rows = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = env.get("/api/v1/recordings").await;
            let rows = r.body.as_array().cloned().unwrap_or_default();
            if rows.len() == 1 && rows[0]["status"] != "live" {
                break rows;
            }
            assert!(Instant::now() < deadline, "{}", r.text);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let old_id = rows[0]["id"].as_str().unwrap().to_owned();
    let file = env.s.data_dir().join("recordings").join(format!("{old_id}.pcast"));
    assert!(file.exists());
    // A second, recent recording that must survive the purge.
    let o = env.ssh(&["echo new-session"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_id = loop {
        let r = env.get("/api/v1/recordings").await;
        let rows = r.body.as_array().cloned().unwrap_or_default();
        if let Some(x) = rows
            .iter()
            .find(|x| x["id"] != old_id.as_str() && x["status"] != "live")
        {
            break x["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "{}", r.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    env.s.stop().await;

    // Age the first recording by 40 days in the catalog, then restart with a 30-day retention.
    let url = env.s.cfg.vault.database_url.clone();
    {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let n = sqlx::query(
            "UPDATE recordings SET started_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-40 days'), \
             ended_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-40 days') WHERE id = $1",
        )
        .bind(&old_id)
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(n, 1);
        pool.close().await;
    }
    let Env { s, _target, .. } = env;
    let TestServer { dir, .. } = s;
    let mut s = TestServer::builder()
        .reuse_dir(dir)
        .set("recording.retention_days", "30")
        .start()
        .await;
    let r = s.login("admin", ADMIN_PW).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let admin = r.body["token"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let purge = loop {
        let r = s
            .req("GET", "/api/v1/audit?action=recording.purge", Some(&admin), None)
            .await;
        if let Some(e) = r.body.as_array().and_then(|a| a.first()) {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "no purge event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let detail = purge["detail"].as_str().unwrap();
    assert!(detail.contains("purged 1 recording(s)"), "{detail}");
    assert!(detail.contains(&old_id), "{detail}");
    assert!(!detail.contains(&new_id), "{detail}");
    assert_eq!(purge["actor_name"], "system");
    assert!(!file.exists(), "the file is deleted");
    let gone = s
        .req("GET", &format!("/api/v1/recordings/{old_id}"), Some(&admin), None)
        .await;
    assert_eq!(gone.status, 404);
    let list = s.req("GET", "/api/v1/recordings", Some(&admin), None).await;
    let ids: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [new_id.as_str()]);
    let v = s.req("GET", "/api/v1/audit/verify", Some(&admin), None).await;
    assert!(v.body["first_broken"].is_null(), "{}", v.text);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_new_route_needs_authentication() {
    let mut s = TestServer::builder().start().await;
    let id = "00000000-0000-4000-8000-000000000000";
    for path in [
        "/api/v1/recordings".to_string(),
        "/api/v1/recordings/search?q=x".to_string(),
        format!("/api/v1/recordings/{id}"),
        format!("/api/v1/recordings/{id}/cast"),
        format!("/api/v1/sessions/{id}/watch"),
    ] {
        let r = s.req("GET", &path, None, None).await;
        assert_eq!(r.status, 401, "{path}: {}", r.text);
        let r = s.req("GET", &path, Some("pst_not-a-token"), None).await;
        assert_eq!(r.status, 401, "{path}: {}", r.text);
    }
    // A WebSocket upgrade without a token is refused before any upgrade.
    match watch(&s, id, None).await {
        Err(status) => assert_eq!(status, 401),
        Ok(_) => panic!("the upgrade was accepted"),
    }
    match watch(&s, id, Some("pst_not-a-token")).await {
        Err(status) => assert_eq!(status, 401),
        Ok(_) => panic!("the upgrade was accepted"),
    }
    // With a token: unknown session → 404; not a WebSocket request → 400.
    let admin = s.admin_token().await;
    match watch(&s, id, Some(&admin)).await {
        Err(status) => assert_eq!(status, 404),
        Ok(_) => panic!("the upgrade was accepted"),
    }
    let r = s
        .req("GET", &format!("/api/v1/sessions/{id}/watch"), Some(&admin), None)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keystrokes_are_recorded_only_when_record_input_is_on() {
    let mut env = Env::new(TestServer::builder().set("recording.record_input", "true")).await;
    let before = env.live_ids();
    let mut cmd = env.ssh(&["-tt"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let id = env.new_live_session(&before).await;
    let mut stdin = child.stdin.take().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Typed with the terminal's echo off: only the input events can show it.
    stdin.write_all(b"stty -echo\n").unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stdin.write_all(b"true unechoed-keystrokes\n").unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stdin.write_all(b"exit\n").unwrap();
    drop(stdin);
    let o = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("unechoed-keystrokes"));
    env.ended_recording(&id).await;
    let cast = env.get(&format!("/api/v1/recordings/{id}/cast")).await;
    assert!(cast.text.lines().next().unwrap().contains("\"input_recorded\":true"));
    let typed: String = cast
        .text
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<(f64, String, String)>(l).ok())
        .filter(|(_, code, _)| code == "i")
        .map(|(_, _, d)| d)
        .collect();
    assert!(typed.contains("true unechoed-keystrokes"), "{typed:?}");
    // The typed command is searchable as a command.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = env.get("/api/v1/recordings/search?q=unechoed-keystrokes").await;
        if let Some(h) = r.body[0]["hits"].as_array() {
            assert!(h.iter().any(|h| h["kind"] == "command"), "{}", r.text);
            break;
        }
        assert!(Instant::now() < deadline, "never indexed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.s.stop().await;
}
