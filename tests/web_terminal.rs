//! One-click logon: the browser terminal WebSocket goes through the same
//! gateway pipeline as `ssh` (authorization, auto-logon, registry, recording,
//! audit), against a real sshd target.

mod common;

use std::time::Duration;

use common::sshd::{self, SshTarget, TargetOptions, TargetUser};
use common::ws::{connect, Ws};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const ALICE_PW: &str = "alice passphrase 123";

async fn user(s: &TestServer, admin: &str, name: &str, role: &str) -> String {
    s.create_user(admin, name, role, ALICE_PW).await.1
}

/// Reads frames until the terminal text contains `needle`; returns all text seen.
async fn read_until(ws: &mut Ws, seen: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.contains(needle) {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {needle:?}; seen: {seen}"));
        match msg {
            Some(Ok(Message::Binary(b))) => seen.push_str(&String::from_utf8_lossy(&b)),
            Some(Ok(Message::Text(t))) => seen.push_str(&format!("[text {t}]")),
            Some(Ok(Message::Close(c))) => seen.push_str(&format!("[close {c:?}]")),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("WebSocket error {e}; seen: {seen}"),
            None => panic!("WebSocket ended before {needle:?}; seen: {seen}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_terminal_is_a_gateway_session() {
    sshd::available().expect("real sshd targets are needed (run the suite with tests/run.sh as root)");
    let mut s = TestServer::builder().start().await;
    let admin = s.admin_token().await;
    let alice = user(&s, &admin, "alice", "password_administrator").await;
    let bob = user(&s, &admin, "bob", "password_user").await;
    let secret = canary();
    let t = SshTarget::start(TargetOptions {
        users: vec![TargetUser::password("deploy", &secret)],
        allow_tcp_forwarding: false,
        extra_config: String::new(),
    });
    let body = json!({"name": "web1", "type": "linux", "host": "127.0.0.1", "port": t.port});
    let rid = s.create_resource(&alice, body).await;
    let aid = s.create_account(&alice, &rid, "deploy", &secret).await;
    let path = format!("/api/v1/accounts/{aid}/terminal?cols=100&rows=30");

    // Refusals: no credentials, a user without access, another origin, bad sizes, unknown account.
    assert_eq!(connect(&s, &path, None, None).await.err().map(|e| e.0), Some(401));
    assert_eq!(connect(&s, &path, Some(&bob), None).await.err().map(|e| e.0), Some(404));
    let cross = connect(&s, &path, Some(&alice), Some("https://evil.example"))
        .await
        .err()
        .unwrap();
    assert_eq!(cross.0, 403, "{}", cross.1);
    let big = format!("/api/v1/accounts/{aid}/terminal?cols=0");
    assert_eq!(
        connect(&s, &big, Some(&alice), None).await.err().map(|e| e.0),
        Some(422)
    );
    let unknown = "/api/v1/accounts/00000000-0000-4000-8000-000000000000/terminal";
    assert_eq!(
        connect(&s, unknown, Some(&alice), None).await.err().map(|e| e.0),
        Some(404)
    );

    // A terminal: runs commands as the vaulted account, without the browser seeing the password.
    let same_origin = format!("https://127.0.0.1:{}", s.running.as_ref().unwrap().web_addr.port());
    let mut ws = connect(&s, &path, Some(&alice), Some(&same_origin))
        .await
        .expect("terminal opens");
    let mut seen = String::new();
    ws.send(Message::Text(r#"{"type":"resize","cols":120,"rows":40}"#.into()))
        .await
        .unwrap();
    ws.send(Message::Binary(
        b"echo term-$((6*7)) $(id -un) $(stty size)\n".to_vec().into(),
    ))
    .await
    .unwrap();
    read_until(&mut ws, &mut seen, "term-42 deploy 40 120").await;

    // It is a live gateway session: listed, and the audit says it came from the web terminal.
    let live = s.req("GET", "/api/v1/sessions", Some(&admin), None).await;
    let sessions = live.body.as_array().cloned().unwrap_or_default();
    let mine: Vec<&Value> = sessions.iter().filter(|x| x["target"] == "deploy@web1").collect();
    assert_eq!(mine.len(), 1, "{}", live.text);
    assert_eq!(mine[0]["user"], "alice");
    let id = mine[0]["id"].as_str().unwrap().to_owned();
    let audit = s
        .req(
            "GET",
            "/api/v1/audit?action=session.start&limit=100",
            Some(&admin),
            None,
        )
        .await;
    assert!(audit.text.contains("web terminal session"), "{}", audit.text);

    // The shell's exit status reaches the browser, then the socket closes.
    ws.send(Message::Binary(b"exit 3\n".to_vec().into())).await.unwrap();
    read_until(&mut ws, &mut seen, r#"{"type":"exit","status":3}"#).await;
    read_until(&mut ws, &mut seen, "[close").await;
    assert!(!seen.contains(&secret), "the vaulted password reached the browser");

    // An admin terminates a second terminal; its user sees who and why.
    let mut ws2 = connect(&s, &path, Some(&alice), None).await.expect("terminal opens");
    let mut seen2 = String::new();
    ws2.send(Message::Binary(b"echo ready-$((1+1))\n".to_vec().into()))
        .await
        .unwrap();
    read_until(&mut ws2, &mut seen2, "ready-2").await;
    let live = s.req("GET", "/api/v1/sessions", Some(&admin), None).await;
    let id2 = live
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] != id.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .req(
            "DELETE",
            &format!("/api/v1/sessions/{id2}"),
            Some(&admin),
            Some(json!({"reason": "maintenance window"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    read_until(&mut ws2, &mut seen2, "maintenance window").await;
    read_until(&mut ws2, &mut seen2, "[close").await;

    // The sessions leave the live list, and their recordings exist.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let live = s.req("GET", "/api/v1/sessions", Some(&admin), None).await;
        if live.body.as_array().map(|a| a.is_empty()).unwrap_or(false) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sessions still live: {}",
            live.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rec = s.data_dir().join("recordings").join(format!("{id}.pcast"));
    assert!(rec.exists(), "recording {} missing", rec.display());
    for f in files_under(&s.data_dir()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(!contains_bytes(&bytes, &secret), "canary in {}", f.display());
    }
    s.stop().await;
}
