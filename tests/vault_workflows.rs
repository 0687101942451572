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
            let (id, token) = s.create_user(&admin, name, role, pw).await;
            ids.push(id);
            tokens.push(token);
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
        let body = json!({"name": name, "type": "linux", "host": "127.0.0.1", "port": port});
        let rid = self.s.create_resource(&self.alice, body).await;
        let aid = self.s.create_account(&self.alice, &rid, login, password).await;
        (rid, aid)
    }

    /// alice creates the share `body` (`POST /api/v1/shares`), which must succeed.
    async fn share(&self, body: Value) -> Resp {
        let r = self
            .s
            .req("POST", "/api/v1/shares", Some(&self.alice), Some(body))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r
    }

    /// alice sets the access policy `body` of resource `rid`, which must succeed.
    async fn set_access_policy(&self, rid: &str, body: Value) {
        let p = self
            .s
            .req(
                "PUT",
                &format!("/api/v1/resources/{rid}/access-policy"),
                Some(&self.alice),
                Some(body),
            )
            .await;
        assert_eq!(p.status, 200, "{}", p.text);
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
        .share(json!({"group_id": gid, "account_id": aid, "level": "connect"}))
        .await;
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

/// A port on 127.0.0.1 where nothing listens.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Logs in to the target directly (not through the gateway) with `password`.
fn direct_login_works(t: &SshTarget, user: &str, password: &str) -> bool {
    let c = SshClient::new().with_password(password);
    let o = run(c.ssh(t.port, user, &["id -un"]));
    o.status.success() && stdout(&o).trim() == user
}

#[tokio::test(flavor = "multi_thread")]
async fn access_request_dual_approval_checkout_and_checkin_resets_the_password_on_the_target() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    sshd::available().expect("real sshd targets are needed (run the suite with tests/run.sh as root)");
    let env = Env::new().await;
    let old = canary();
    let t = target(vec![TargetUser::password("deploy", &old)]);
    let (rid, aid) = env.add_target("db1", t.port, "deploy", &old).await;
    // bob may open sessions only; carol is a second approver (full share).
    for (who, level) in [(&env.bob_id, "connect"), (&env.carol_id, "full")] {
        env.share(json!({"user_id": who, "resource_id": rid, "level": level}))
            .await;
    }
    // bob connects once before access control: this pins the target's host key.
    let bob_ssh = SshClient::new().with_password(BOB_PW);
    let o = run(bob_ssh.ssh(env.ssh_port, "bob#deploy@db1", &["true"]));
    assert!(o.status.success(), "{}", stderr(&o));
    env.set_access_policy(
        &rid,
        json!({"require_request": true, "dual_approval": true, "exclusive": true, "max_window_minutes": 30}),
    )
    .await;
    // Without a checked-out request the gateway refuses bob.
    let o = run(bob_ssh.ssh(env.ssh_port, "bob#deploy@db1", &["true"]));
    assert!(!o.status.success());
    // A reason is required.
    let r = env
        .s
        .req(
            "POST",
            "/api/v1/access-requests",
            Some(&env.bob),
            Some(json!({"account_id": aid, "reason": " "})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = env
        .s
        .req(
            "POST",
            "/api/v1/access-requests",
            Some(&env.bob),
            Some(json!({"account_id": aid, "reason": "db patch", "ticket_id": "CHG-42", "window_minutes": 4})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let req = r.body["id"].as_str().unwrap().to_owned();
    let step = |who: &str, what: &str| {
        let (s, who, req) = (&env.s, who.to_owned(), req.clone());
        let what = what.to_owned();
        async move {
            s.req(
                "POST",
                &format!("/api/v1/access-requests/{req}/{what}"),
                Some(&who),
                None,
            )
            .await
        }
    };
    // The requester never approves; not yet approved: no check-out.
    assert_eq!(step(&env.bob, "approve").await.status, 403);
    assert_eq!(step(&env.bob, "checkout").await.status, 409);
    // Dual approval: alice, alice again (refused), carol.
    let a1 = step(&env.alice, "approve").await;
    assert_eq!(
        (a1.status, a1.body["state"].as_str()),
        (200, Some("requested")),
        "{}",
        a1.text
    );
    assert_eq!(step(&env.alice, "approve").await.status, 403);
    let a2 = step(&env.carol, "approve").await;
    assert_eq!(a2.body["state"], "approved", "{}", a2.text);
    let out = step(&env.bob, "checkout").await;
    assert_eq!(out.body["state"], "checked_out", "{}", out.text);
    // Inside the window: a session works, and (4 min left < 5) the warning comes at once.
    let o = run(bob_ssh.ssh(env.ssh_port, "bob#deploy@db1", &["id -un"]));
    assert_eq!(stdout(&o).trim(), "deploy", "{}", stderr(&o));
    let mut cmd = bob_ssh.ssh(env.ssh_port, "bob#deploy@db1", &["echo started; sleep 120"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut stderr_lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stderr_lines.iter().any(|l: &String| l.contains("access window ends")) {
        assert!(Instant::now() < deadline, "no window warning: {stderr_lines:?}");
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            stderr_lines.push(l);
        }
    }
    // bob never sees the password.
    let r = env.retrieve(&env.bob, &aid).await;
    assert_eq!(r.status, 403, "{}", r.text);
    // Check-in: the session ends, the password is reset on the target.
    let t0 = Instant::now();
    let back = step(&env.bob, "checkin").await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!(back.body["state"], "checked_in");
    assert_eq!(back.body["reset_outcome"], "ok", "{}", back.text);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the session survived the check-in"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
        stderr_lines.push(l);
    }
    assert!(
        stderr_lines.iter().any(|l| l.contains("checked in")),
        "{stderr_lines:?}"
    );
    // The old password no longer logs in; the new (vaulted) one does.
    assert!(!direct_login_works(&t, "deploy", &old), "the old password still works");
    let new = env.retrieve(&env.alice, &aid).await; // the owner is exempt from access control
    assert_eq!(new.status, 200, "{}", new.text);
    let new_pw = new.body["password"].as_str().unwrap().to_owned();
    assert_ne!(new_pw, old);
    assert!(new_pw.len() >= 20);
    assert!(
        direct_login_works(&t, "deploy", &new_pw),
        "the new password does not log in"
    );
    // After check-in bob is refused again.
    let o = run(bob_ssh.ssh(env.ssh_port, "bob#deploy@db1", &["true"]));
    assert!(!o.status.success());
    // A reset that fails (target unreachable) keeps the vaulted password usable.
    let r = env
        .s
        .req(
            "POST",
            "/api/v1/access-requests",
            Some(&env.bob),
            Some(json!({"account_id": aid, "reason": "again", "window_minutes": 10})),
        )
        .await;
    let req2 = r.body["id"].as_str().unwrap().to_owned();
    for who in [&env.alice, &env.carol] {
        let a = env
            .s
            .req(
                "POST",
                &format!("/api/v1/access-requests/{req2}/approve"),
                Some(who),
                None,
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    let o2 = env
        .s
        .req(
            "POST",
            &format!("/api/v1/access-requests/{req2}/checkout"),
            Some(&env.bob),
            None,
        )
        .await;
    assert_eq!(o2.body["state"], "checked_out", "{}", o2.text);
    let port = dead_port();
    let pt = env
        .s
        .req(
            "PATCH",
            &format!("/api/v1/resources/{rid}"),
            Some(&env.alice),
            Some(json!({"port": port})),
        )
        .await;
    assert_eq!(pt.status, 200, "{}", pt.text);
    let back = env
        .s
        .req(
            "POST",
            &format!("/api/v1/access-requests/{req2}/checkin"),
            Some(&env.bob),
            None,
        )
        .await;
    assert_eq!(back.body["state"], "checked_in", "{}", back.text);
    let outcome = back.body["reset_outcome"].as_str().unwrap_or_default().to_owned();
    assert!(
        outcome.starts_with("failed") && outcome.contains("connecting"),
        "{outcome}"
    );
    let pt = env
        .s
        .req(
            "PATCH",
            &format!("/api/v1/resources/{rid}"),
            Some(&env.alice),
            Some(json!({"port": t.port})),
        )
        .await;
    assert_eq!(pt.status, 200);
    let still = env.retrieve(&env.alice, &aid).await;
    assert_eq!(still.body["password"].as_str(), Some(new_pw.as_str()));
    assert!(direct_login_works(&t, "deploy", &new_pw));
    // Every step is in the audit chain; the canary never appears in it.
    let ev = env
        .s
        .req("GET", "/api/v1/audit?limit=1000", Some(&env.admin), None)
        .await;
    let acts = actions(&ev.body);
    for want in [
        "resource.access_policy:success",
        "access_request.create:success",
        "access_request.approve:denied",
        "access_request.approve:success",
        "access_request.checkout:success",
        "access_request.checkin:success",
        "account.reset:success",
        "account.reset:failure",
        "session.authorize:denied",
    ] {
        assert!(acts.iter().any(|a| a == want), "{want} missing: {acts:?}");
    }
    assert!(!ev.text.contains(&old) && !ev.text.contains(&new_pw));
    drop(t);
    env.stop_and_verify_audit().await;
}

#[tokio::test]
async fn custom_role_needs_a_second_administrator_before_it_takes_effect() {
    let env = Env::new().await;
    // bob (password user) cannot read the audit trail.
    assert_eq!(
        env.s.req("GET", "/api/v1/audit", Some(&env.bob), None).await.status,
        403
    );
    let cat = env.s.req("GET", "/api/v1/roles/catalogue", Some(&env.bob), None).await;
    assert!(
        cat.body.as_array().unwrap().iter().any(|o| o["id"] == "view_audit"),
        "{}",
        cat.text
    );
    let r = env
        .s
        .req(
            "POST",
            "/api/v1/roles",
            Some(&env.carol),
            Some(json!({"name": "auditor-lite", "operations": ["view_audit", "view_passwords", "remote_access"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let rid = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["operations"].as_array().unwrap().len(), 0);
    // Not approved: cannot be given to anyone.
    let a = env
        .s
        .req(
            "POST",
            &format!("/api/v1/roles/{rid}/assign"),
            Some(&env.carol),
            Some(json!({"user_ids": [env.bob_id]})),
        )
        .await;
    assert_eq!(a.status, 409, "{}", a.text);
    // The author cannot approve; the other administrator can.
    assert_eq!(
        env.s
            .req("POST", &format!("/api/v1/roles/{rid}/approve"), Some(&env.carol), None)
            .await
            .status,
        403
    );
    let ok = env
        .s
        .req("POST", &format!("/api/v1/roles/{rid}/approve"), Some(&env.admin), None)
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["operations"].as_array().unwrap().len(), 3);
    let a = env
        .s
        .req(
            "POST",
            &format!("/api/v1/roles/{rid}/assign"),
            Some(&env.carol),
            Some(json!({"user_ids": [env.bob_id]})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body[0]["outcome"], "ok");
    // The role filter finds bob under the custom role, not under password_user.
    let by_role = env
        .s
        .req("GET", &format!("/api/v1/users?role={rid}"), Some(&env.carol), None)
        .await;
    let names: Vec<&str> = by_role
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["bob"], "{}", by_role.text);
    let pus = env
        .s
        .req("GET", "/api/v1/users?role=password_user", Some(&env.carol), None)
        .await;
    assert!(
        pus.body.as_array().unwrap().iter().all(|u| u["username"] != "bob"),
        "{}",
        pus.text
    );
    // Now bob reads the audit trail (the token resolves to the new role at once).
    assert_eq!(
        env.s.req("GET", "/api/v1/audit", Some(&env.bob), None).await.status,
        200
    );
    // Unknown roles are 404; deleting moves users first.
    let nf = env
        .s
        .req(
            "POST",
            "/api/v1/roles/root/assign",
            Some(&env.carol),
            Some(json!({"user_ids": [env.bob_id]})),
        )
        .await;
    assert_eq!(nf.status, 404);
    assert_eq!(
        env.s
            .req("DELETE", &format!("/api/v1/roles/{rid}"), Some(&env.carol), None)
            .await
            .status,
        409
    );
    let d = env
        .s
        .req(
            "DELETE",
            &format!("/api/v1/roles/{rid}?move_to=password_user"),
            Some(&env.carol),
            None,
        )
        .await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(
        env.s.req("GET", "/api/v1/audit", Some(&env.bob), None).await.status,
        403
    );
    let ev = env
        .s
        .req("GET", "/api/v1/audit?action=role.&limit=100", Some(&env.admin), None)
        .await;
    let acts = actions(&ev.body);
    for want in [
        "role.propose:success",
        "role.approve:denied",
        "role.approve:success",
        "role.delete:success",
    ] {
        assert!(acts.iter().any(|a| a == want), "{want}: {acts:?}");
    }
    env.stop_and_verify_audit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn window_end_checks_in_ends_the_session_and_resets_through_root_with_chpasswd() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    sshd::available().expect("real sshd targets are needed (run the suite with tests/run.sh as root)");
    let env = Env::new().await;
    let old = canary();
    let root_pw = canary();
    let t = SshTarget::start(TargetOptions {
        users: vec![TargetUser::password("deploy", &old)],
        allow_tcp_forwarding: false,
        extra_config: "PermitRootLogin yes\n".into(),
    });
    t.set_password("root", &root_pw);
    let (rid, aid) = env.add_target("app1", t.port, "deploy", &old).await;
    let a = env
        .s
        .req(
            "POST",
            &format!("/api/v1/resources/{rid}/accounts"),
            Some(&env.alice),
            Some(json!({"login": "root", "password": root_pw})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    // Resets of this resource go through root (chpasswd, new password on stdin).
    let p = env
        .s
        .req(
            "PATCH",
            &format!("/api/v1/resources/{rid}"),
            Some(&env.alice),
            Some(json!({"extra": {"reset_with": "root"}})),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.text);
    env.share(json!({"user_id": env.bob_id, "account_id": aid, "level": "connect"}))
        .await;
    env.set_access_policy(&rid, json!({"require_request": true, "max_window_minutes": 60}))
        .await;
    let r = env
        .s
        .req(
            "POST",
            "/api/v1/access-requests",
            Some(&env.bob),
            Some(json!({"account_id": aid, "reason": "deploy"})),
        )
        .await;
    let req = r.body["id"].as_str().unwrap().to_owned();
    let ok = env
        .s
        .req(
            "POST",
            &format!("/api/v1/access-requests/{req}/approve"),
            Some(&env.alice),
            None,
        )
        .await;
    assert_eq!(ok.body["state"], "approved", "{}", ok.text);
    let out = env
        .s
        .req(
            "POST",
            &format!("/api/v1/access-requests/{req}/checkout"),
            Some(&env.bob),
            None,
        )
        .await;
    assert_eq!(out.body["state"], "checked_out", "{}", out.text);
    let bob_ssh = SshClient::new().with_password(BOB_PW);
    let mut cmd = bob_ssh.ssh(env.ssh_port, "bob#deploy@app1", &["echo started; sleep 120"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut first = [0u8; 8];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"started\n");
    // The window ends (the sweep's work, run here with a clock two hours ahead).
    let vault = env.s.running.as_ref().unwrap().vault.clone();
    assert_eq!(
        vault
            .expire_checkouts(time::OffsetDateTime::now_utc() + time::Duration::hours(2))
            .await
            .unwrap(),
        1
    );
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the session survived the end of the window"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = env.s.req("GET", "/api/v1/access-requests", Some(&env.bob), None).await;
    let mine = &list.body[0];
    assert_eq!(
        (mine["state"].as_str(), mine["checked_in_by"].as_str()),
        (Some("checked_in"), Some("system"))
    );
    assert_eq!(mine["reset_outcome"], "ok", "{}", list.text);
    assert!(!direct_login_works(&t, "deploy", &old));
    let new = env.retrieve(&env.alice, &aid).await.body["password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(direct_login_works(&t, "deploy", &new));
    // Only deploy's password changed: root's still logs in.
    assert!(direct_login_works(&t, "root", &root_pw));
    // "Randomize now" for a resource group: a job with progress and one result per account.
    let g = env
        .s
        .req(
            "POST",
            "/api/v1/resource-groups",
            Some(&env.alice),
            Some(json!({"name": "apps"})),
        )
        .await;
    let gid = g.body["id"].as_str().unwrap().to_owned();
    let m = env
        .s
        .req(
            "POST",
            &format!("/api/v1/resource-groups/{gid}/members/{rid}"),
            Some(&env.alice),
            None,
        )
        .await;
    assert_eq!(m.status, 200, "{}", m.text);
    let job = env
        .s
        .req(
            "POST",
            &format!("/api/v1/resource-groups/{gid}/randomize"),
            Some(&env.alice),
            None,
        )
        .await;
    assert_eq!(job.status, 202, "{}", job.text);
    assert_eq!(job.body["total"], 2);
    let jid = job.body["id"].as_str().unwrap().to_owned();
    // bob may not watch alice's job.
    assert_eq!(
        env.s
            .req("GET", &format!("/api/v1/jobs/{jid}"), Some(&env.bob), None)
            .await
            .status,
        404
    );
    let t0 = Instant::now();
    let done = loop {
        let j = env
            .s
            .req("GET", &format!("/api/v1/jobs/{jid}"), Some(&env.alice), None)
            .await;
        if j.body["finished"] == true {
            break j;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "job did not finish: {}", j.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let outcomes: Vec<(String, String)> = done.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["account"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("deploy@app1".to_string(), "ok".to_string()),
            ("root@app1".to_string(), "ok".to_string())
        ],
        "{}",
        done.text
    );
    let newest = env.retrieve(&env.alice, &aid).await.body["password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(newest, new);
    assert!(direct_login_works(&t, "deploy", &newest));
    assert!(!direct_login_works(&t, "root", &root_pw));
    drop(t);
    env.stop_and_verify_audit().await;
}

#[tokio::test]
async fn exclusive_checkout_with_two_users_is_refused_then_queued() {
    let env = Env::new().await;
    // No target needed: nothing is reset here.
    let (rid, aid) = env.add_target("db9", 22, "oracle", "pw").await;
    for who in [&env.bob_id, &env.carol_id] {
        env.share(json!({"user_id": who, "account_id": aid, "level": "connect"}))
            .await;
    }
    let policy = |mode: &str| json!({"require_request": true, "exclusive": true, "exclusive_mode": mode, "reset_on_checkin": false});
    env.set_access_policy(&rid, policy("refuse")).await;
    let mut ids = Vec::new();
    for who in [&env.bob, &env.carol] {
        let r = env
            .s
            .req(
                "POST",
                "/api/v1/access-requests",
                Some(who),
                Some(json!({"account_id": aid, "reason": "maintenance"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let id = r.body["id"].as_str().unwrap().to_owned();
        let a = env
            .s
            .req(
                "POST",
                &format!("/api/v1/access-requests/{id}/approve"),
                Some(&env.alice),
                None,
            )
            .await;
        assert_eq!(a.body["state"], "approved", "{}", a.text);
        ids.push(id);
    }
    let go = |who: &str, id: &str, what: &str| {
        let (s, who, path) = (&env.s, who.to_owned(), format!("/api/v1/access-requests/{id}/{what}"));
        async move { s.req("POST", &path, Some(&who), None).await }
    };
    assert_eq!(go(&env.bob, &ids[0], "checkout").await.body["state"], "checked_out");
    // Refuse mode: carol gets 409.
    let r = go(&env.carol, &ids[1], "checkout").await;
    assert_eq!(r.status, 409, "{}", r.text);
    // Queue mode: carol waits, and gets the account when bob checks in.
    env.set_access_policy(&rid, policy("queue")).await;
    assert_eq!(go(&env.carol, &ids[1], "checkout").await.body["state"], "queued");
    // Nobody checks in someone else's request without being an approver.
    assert_eq!(go(&env.carol, &ids[0], "checkin").await.status, 404);
    assert_eq!(go(&env.bob, &ids[0], "checkin").await.body["state"], "checked_in");
    let list = env
        .s
        .req("GET", "/api/v1/access-requests", Some(&env.carol), None)
        .await;
    let carol_req = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == ids[1].as_str())
        .unwrap()
        .clone();
    assert_eq!(carol_req["state"], "checked_out", "{}", list.text);
    assert!(carol_req["window_end"].is_string());
    // Invalid transitions are 409 problems.
    let again = go(&env.bob, &ids[0], "checkout").await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["type"], "urn:postern:problem:invalid-transition");
    env.stop_and_verify_audit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn require_reason_makes_sessions_and_retrievals_state_a_reason() {
    sshd::available().expect("real sshd targets are needed (run the suite with tests/run.sh as root)");
    let env = Env::new().await;
    let secret = canary();
    let t = target(vec![TargetUser::password("deploy", &secret)]);
    let (_rid, aid) = env.add_target("web7", t.port, "deploy", &secret).await;
    env.share(json!({"user_id": env.bob_id, "account_id": aid, "level": "view"}))
        .await;
    let bob_ssh = SshClient::new().with_password(BOB_PW);
    // Off: a session needs no stated reason.
    let o = run(bob_ssh.ssh(env.ssh_port, "bob#deploy@web7", &["true"]));
    assert!(o.status.success(), "{}", stderr(&o));
    // On (as `[vault] require_reason = true` wires it).
    let vault = env.s.running.as_ref().unwrap().vault.clone();
    vault.set_require_reason(true);
    let o = run(bob_ssh.ssh(env.ssh_port, "bob#deploy@web7", &["true"]));
    assert!(!o.status.success(), "a session without a reason was let in");
    // The reason is stated with a request, approved at once on an account without access control.
    let r = env
        .s
        .req(
            "POST",
            "/api/v1/access-requests",
            Some(&env.bob),
            Some(json!({"account_id": aid, "reason": "INC-7 disk full", "window_minutes": 30})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["state"], "approved");
    let id = r.body["id"].as_str().unwrap().to_owned();
    let c = env
        .s
        .req(
            "POST",
            &format!("/api/v1/access-requests/{id}/checkout"),
            Some(&env.bob),
            None,
        )
        .await;
    assert_eq!(c.body["state"], "checked_out", "{}", c.text);
    let o = run(bob_ssh.ssh(env.ssh_port, "bob#deploy@web7", &["id -un"]));
    assert_eq!(stdout(&o).trim(), "deploy", "{}", stderr(&o));
    // The session's lease carries the reason in the audit.
    let ev = env
        .s
        .req(
            "GET",
            "/api/v1/audit?action=session.lease&limit=10",
            Some(&env.admin),
            None,
        )
        .await;
    assert_eq!(ev.body[0]["reason"], "INC-7 disk full", "{}", ev.text);
    // Retrieval always states a reason on the web; the reason is in the audit too.
    let ret = env.retrieve(&env.bob, &aid).await;
    assert_eq!(ret.status, 200, "{}", ret.text);
    // Check-in: no access control, so no reset; the session gate closes again.
    let back = env
        .s
        .req(
            "POST",
            &format!("/api/v1/access-requests/{id}/checkin"),
            Some(&env.bob),
            None,
        )
        .await;
    assert_eq!(back.body["state"], "checked_in");
    assert!(back.body["reset_outcome"].is_null(), "{}", back.text);
    let o = run(bob_ssh.ssh(env.ssh_port, "bob#deploy@web7", &["true"]));
    assert!(!o.status.success());
    assert!(direct_login_works(&t, "deploy", &secret));
    drop(t);
    env.stop_and_verify_audit().await;
}
