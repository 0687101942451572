//! Vault workflows end to end: shares through the API obeyed by the SSH gateway
//! (real OpenSSH target in a private mount namespace), access requests with
//! check-out windows, and the audit chain checked by `postern verify --audit`.

mod common;

use std::process::{Command, Output};

use common::sshd::{self, SshClient, SshTarget, TargetOptions, TargetUser};
use common::*;
use serde_json::{json, Value};

const ALICE_PW: &str = "alice passphrase 123";
const BOB_PW: &str = "bob passphrase 4567";
const CAROL_PW: &str = "carol passphrase 890";

struct Env {
    s: TestServer,
    admin: String,
    alice: String,
    bob: String,
    bob_id: String,
    carol: String,
    carol_id: String,
    ssh_port: u16,
}

impl Env {
    async fn new() -> Env {
        let s = TestServer::builder().start().await;
        let admin = s.admin_token().await;
        let mut tokens = Vec::new();
        let mut ids = Vec::new();
        for (name, role, pw) in [
            ("alice", "password_administrator", ALICE_PW),
            ("bob", "password_user", BOB_PW),
            ("carol", "administrator", CAROL_PW),
        ] {
            let r = s
                .req(
                    "POST",
                    "/api/v1/users",
                    Some(&admin),
                    Some(json!({"username": name, "role": role, "password": pw, "must_change_password": false})),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            ids.push(r.body["id"].as_str().unwrap().to_owned());
            let t = s.login(name, pw).await;
            assert_eq!(t.status, 200, "{}", t.text);
            tokens.push(t.body["token"].as_str().unwrap().to_owned());
        }
        let ssh_port = s.running.as_ref().unwrap().ssh_addr.port();
        Env {
            s,
            admin,
            alice: tokens[0].clone(),
            bob: tokens[1].clone(),
            bob_id: ids[1].clone(),
            carol: tokens[2].clone(),
            carol_id: ids[2].clone(),
            ssh_port,
        }
    }

    /// A resource owned by alice with one password account; returns (resource id, account id).
    async fn add_target(&self, name: &str, port: u16, login: &str, password: &str) -> (String, String) {
        let r = self
            .s
            .req(
                "POST",
                "/api/v1/resources",
                Some(&self.alice),
                Some(json!({"name": name, "type": "linux", "host": "127.0.0.1", "port": port})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let rid = r.body["id"].as_str().unwrap().to_owned();
        let a = self
            .s
            .req(
                "POST",
                &format!("/api/v1/resources/{rid}/accounts"),
                Some(&self.alice),
                Some(json!({"login": login, "password": password})),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        (rid, a.body["id"].as_str().unwrap().to_owned())
    }

    async fn retrieve(&self, token: &str, account: &str) -> Resp {
        self.s
            .req(
                "POST",
                &format!("/api/v1/accounts/{account}/retrieve"),
                Some(token),
                Some(json!({"reason": "test"})),
            )
            .await
    }

    /// Stops the server and runs `postern verify --audit` on its data directory.
    async fn stop_and_verify_audit(mut self) {
        let data = self.s.data_dir();
        self.s.stop().await;
        let o = bin()
            .args(["--data-dir", data.to_str().unwrap(), "verify", "--audit"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
        assert!(out.contains("audit chain OK"), "{out}");
    }
}

fn run(mut c: Command) -> Output {
    c.output().expect("spawn")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn target(users: Vec<TargetUser>) -> SshTarget {
    SshTarget::start(TargetOptions {
        users,
        allow_tcp_forwarding: false,
        extra_config: String::new(),
    })
}

fn actions(events: &Value) -> Vec<String> {
    events
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "{}:{}",
                        e["action"].as_str().unwrap_or(""),
                        e["outcome"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_only_share_opens_a_session_but_never_retrieves_the_password() {
    sshd::available().expect("real sshd targets are needed (run the suite with tests/run.sh as root)");
    let env = Env::new().await;
    let secret = canary();
    let t = target(vec![TargetUser::password("deploy", &secret)]);
    let (_rid, aid) = env.add_target("web1", t.port, "deploy", &secret).await;
    let bob_ssh = SshClient::new().with_password(BOB_PW);
    // Not shared yet: the gateway refuses bob.
    let o = run(bob_ssh.ssh(env.ssh_port, "bob#deploy@web1", &["id -un"]));
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    // Share through a user group at connect level.
    let g = env
        .s
        .req(
            "POST",
            "/api/v1/user-groups",
            Some(&env.carol),
            Some(json!({"name": "contractors"})),
        )
        .await;
    assert_eq!(g.status, 201, "{}", g.text);
    let gid = g.body["id"].as_str().unwrap().to_owned();
    let m = env
        .s
        .req(
            "POST",
            &format!("/api/v1/user-groups/{gid}/members/{}", env.bob_id),
            Some(&env.carol),
            None,
        )
        .await;
    assert_eq!(m.status, 200, "{}", m.text);
    // bob cannot share to himself; a level outside the four is refused.
    let r = env
        .s
        .req(
            "POST",
            "/api/v1/shares",
            Some(&env.bob),
            Some(json!({"user_id": env.bob_id, "account_id": aid, "level": "full"})),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = env
        .s
        .req(
            "POST",
            "/api/v1/shares",
            Some(&env.alice),
            Some(json!({"group_id": gid, "account_id": aid, "level": "root"})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let sh = env
        .s
        .req(
            "POST",
            "/api/v1/shares",
            Some(&env.alice),
            Some(json!({"group_id": gid, "account_id": aid, "level": "connect"})),
        )
        .await;
    assert_eq!(sh.status, 201, "{}", sh.text);
    assert_eq!(sh.body["level"], "connect");
    let share_id = sh.body["id"].as_str().unwrap().to_owned();
    // bob sees the share granted to him, and the account.
    let mine = env.s.req("GET", "/api/v1/shares", Some(&env.bob), None).await;
    assert_eq!(mine.body.as_array().unwrap().len(), 1, "{}", mine.text);
    let acc = env
        .s
        .req("GET", &format!("/api/v1/accounts/{aid}"), Some(&env.bob), None)
        .await;
    assert_eq!(acc.status, 200, "{}", acc.text);
    // A session through the gateway with auto-logon works.
    let o = run(bob_ssh.ssh(env.ssh_port, "bob#deploy@web1", &["id -un"]));
    assert_eq!(o.status.code(), Some(0), "{} {}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o).trim(), "deploy");
    // But the password is never handed out.
    let r = env.retrieve(&env.bob, &aid).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(!r.text.contains(&secret));
    // Revoked: the gateway refuses again and the account is invisible.
    let d = env
        .s
        .req("DELETE", &format!("/api/v1/shares/{share_id}"), Some(&env.alice), None)
        .await;
    assert_eq!(d.status, 204, "{}", d.text);
    let o = run(bob_ssh.ssh(env.ssh_port, "bob#deploy@web1", &["id -un"]));
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(env.retrieve(&env.bob, &aid).await.status, 404);
    let ev = env
        .s
        .req("GET", "/api/v1/audit?action=share.&limit=100", Some(&env.admin), None)
        .await;
    let acts = actions(&ev.body);
    assert!(acts.contains(&"share.create:success".to_string()), "{acts:?}");
    assert!(acts.contains(&"share.revoke:success".to_string()), "{acts:?}");
    drop(t);
    env.stop_and_verify_audit().await;
}
