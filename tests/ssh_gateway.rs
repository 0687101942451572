//! The SSH gateway against real OpenSSH: stock `ssh`/`scp`/`sftp` clients in,
//! real `sshd` targets (private mount namespaces) out.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::sshd::{self, SshClient, SshTarget, TargetOptions, TargetUser};
use common::*;
use serde_json::{json, Value};

const ALICE_PW: &str = "alice passphrase 123";

struct Env {
    s: TestServer,
    admin: String,
    alice: String,
    ssh_port: u16,
}

impl Env {
    async fn new() -> Env {
        sshd::available().expect("real sshd targets are needed (run the suite with tests/run.sh as root)");
        let s = TestServer::builder().start().await;
        let admin = s.admin_token().await;
        let (_, alice) = s.create_user(&admin, "alice", "password_administrator", ALICE_PW).await;
        let ssh_port = s.running.as_ref().unwrap().ssh_addr.port();
        Env {
            s,
            admin,
            alice,
            ssh_port,
        }
    }

    /// A resource for `t` with one account, owned by alice; returns (resource id, account id).
    async fn add_target(
        &self,
        name: &str,
        t: &SshTarget,
        login: &str,
        password: &str,
        extra: Value,
    ) -> (String, String) {
        let mut body = json!({"name": name, "type": "linux", "host": "127.0.0.1", "port": t.port});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        let rid = self.s.create_resource(&self.alice, body).await;
        let aid = self.s.create_account(&self.alice, &rid, login, password).await;
        (rid, aid)
    }

    fn client(&self) -> SshClient {
        SshClient::new().with_password(ALICE_PW)
    }

    async fn audit(&self, action: &str) -> Vec<Value> {
        self.s.audit(&self.admin, action).await
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

fn target(users: Vec<TargetUser>, forwarding: bool) -> SshTarget {
    SshTarget::start(TargetOptions {
        users,
        allow_tcp_forwarding: forwarding,
        extra_config: String::new(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_shell_and_exit_codes_with_autologon() {
    let mut env = Env::new().await;
    let secret = common::canary();
    let t = target(vec![TargetUser::password("deploy", &secret)], false);
    env.add_target("web1", &t, "deploy", &secret, json!({})).await;
    let c = env.client();
    let login = "alice#deploy@web1";
    // exec: output, exit status, stderr.
    let o = run(c.ssh(env.ssh_port, login, &["id -un; echo oops >&2; exit 7"]));
    assert_eq!(o.status.code(), Some(7), "{} {}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o).trim(), "deploy");
    assert!(stderr(&o).contains("oops"));
    // An interactive shell through a pty.
    let mut cmd = c.ssh(env.ssh_port, login, &["-tt"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo pty-$((40+2)) $(tty)\nexit 5\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = stdout(&o);
    assert!(out.contains("pty-42 /dev/pts/"), "{out}");
    assert_eq!(o.status.code(), Some(5));
    // The vaulted password never appears in any process's argv while sessions run.
    let mut bg = c.ssh(env.ssh_port, login, &["sleep 3"]);
    let mut bg = bg.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            assert!(
                !contains_bytes(&cmdline, &secret),
                "canary in {}/cmdline",
                entry.path().display()
            );
        }
    }
    bg.wait().unwrap();
    let starts = env.audit("session.start").await;
    assert!(
        starts
            .iter()
            .any(|e| e["actor_name"] == "alice" && e["object_name"] == "deploy@web1"),
        "{starts:?}"
    );
    assert!(!env
        .audit("session.")
        .await
        .iter()
        .any(|e| e.to_string().contains(&secret)));
    env.s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scp_both_ways_and_sftp_keep_checksums() {
    let mut env = Env::new().await;
    let t = target(vec![TargetUser::password("files", "files-secret-1")], false);
    env.add_target("store", &t, "files", "files-secret-1", json!({})).await;
    let c = env.client();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    let st = Command::new("dd")
        .args([
            "if=/dev/urandom",
            &format!("of={}", src.display()),
            "bs=1M",
            "count=100",
            "status=none",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let sum = |p: &std::path::Path| {
        let o = Command::new("sha256sum").arg(p).output().unwrap();
        stdout(&o).split_whitespace().next().unwrap().to_owned()
    };
    let want = sum(&src);
    let remote = "alice#files@store@127.0.0.1";
    let home = t.home("files");
    // scp up (OpenSSH 9 uses the sftp protocol) and down; then the legacy protocol (-O).
    let o = run(c.scp(env.ssh_port, &[src.to_str().unwrap(), &format!("{remote}:up.bin")]));
    assert!(o.status.success(), "scp up: {}", stderr(&o));
    assert_eq!(sum(&home.join("up.bin")), want);
    // OpenSSH's scp refuses '#' in the user part of a *source* `user@host:path`
    // ("invalid user name"); `-o User=` passes the same login through intact.
    let back = dir.path().join("back.bin");
    let o = run(c.scp_as(
        env.ssh_port,
        "alice#files@store",
        &["127.0.0.1:up.bin", back.to_str().unwrap()],
    ));
    assert!(o.status.success(), "scp down: {}", stderr(&o));
    assert_eq!(sum(&back), want);
    let legacy = dir.path().join("legacy.bin");
    let o = run(c.scp_as(
        env.ssh_port,
        "alice#files@store",
        &["-O", "127.0.0.1:up.bin", legacy.to_str().unwrap()],
    ));
    assert!(o.status.success(), "legacy scp: {}", stderr(&o));
    assert_eq!(sum(&legacy), want);
    // sftp put/get.
    let got = dir.path().join("sftp.bin");
    let batch = format!("put {} put.bin\nget put.bin {}\n", src.display(), got.display());
    let o = run(c.sftp(env.ssh_port, "alice#files@store", &batch));
    assert!(o.status.success(), "sftp: {} {}", stdout(&o), stderr(&o));
    assert_eq!(sum(&home.join("put.bin")), want);
    assert_eq!(sum(&got), want);
    assert!(!env.audit("session.sftp").await.is_empty());
    env.s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clear_errors_forbidden_wrong_password_changed_host_key_and_down_target() {
    let mut env = Env::new().await;
    let mut t = target(vec![TargetUser::password("ops", "right-password-1")], false);
    env.add_target("db", &t, "ops", "wrong-password-1", json!({})).await;
    let c = env.client();
    let o = run(c.ssh(env.ssh_port, "alice#ops@db", &["true"]));
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("target ops@db") && stderr(&o).contains("rejected the vaulted password"),
        "{}",
        stderr(&o)
    );
    // Unknown and forbidden targets: the same message.
    let o1 = run(c.ssh(env.ssh_port, "alice#nobody@db", &["true"]));
    let o2 = run(c.ssh(env.ssh_port, "alice#ops@nowhere", &["true"]));
    assert!(
        stderr(&o1).contains("no such target, or you may not use it"),
        "{}",
        stderr(&o1)
    );
    assert_eq!(
        stderr(&o1).replace("nobody@db", "X"),
        stderr(&o2).replace("ops@nowhere", "X")
    );
    // A user without rights on alice's resource gets the same message.
    let r = env
        .s
        .req("POST", "/api/v1/users", Some(&env.admin), Some(json!({"username": "bob", "role": "password_user", "password": "bob passphrase 12", "must_change_password": false})))
        .await;
    assert_eq!(r.status, 201);
    let bob = SshClient::new().with_password("bob passphrase 12");
    let o = run(bob.ssh(env.ssh_port, "bob#ops@db", &["true"]));
    assert!(
        stderr(&o).contains("no such target, or you may not use it"),
        "{}",
        stderr(&o)
    );
    // Fix the password: works, and the host key is pinned on first use.
    let (_, acc) = {
        let list = env.s.req("GET", "/api/v1/resources", Some(&env.alice), None).await;
        let rid = list.body[0]["id"].as_str().unwrap().to_owned();
        let accs = env
            .s
            .req(
                "GET",
                &format!("/api/v1/resources/{rid}/accounts"),
                Some(&env.alice),
                None,
            )
            .await;
        (rid, accs.body[0]["id"].as_str().unwrap().to_owned())
    };
    let r = env
        .s
        .req(
            "PATCH",
            &format!("/api/v1/accounts/{acc}"),
            Some(&env.alice),
            Some(json!({"password": "right-password-1"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let o = run(c.ssh(env.ssh_port, "alice#ops@db", &["echo fine"]));
    assert_eq!(stdout(&o).trim(), "fine", "{}", stderr(&o));
    assert!(!env.audit("resource.host_key_pinned").await.is_empty());
    // A changed host key is refused with a clear message and an audit event.
    t.rotate_host_key();
    let o = run(c.ssh(env.ssh_port, "alice#ops@db", &["echo should-not-run"]));
    assert!(!stdout(&o).contains("should-not-run"));
    assert!(stderr(&o).contains("host key changed"), "{}", stderr(&o));
    assert!(!env.audit("session.host_key_mismatch").await.is_empty());
    // A target that is down: a clear message within the connect timeout.
    drop(t);
    let t0 = Instant::now();
    let o = run(c.ssh(env.ssh_port, "alice#ops@db", &["true"]));
    assert!(stderr(&o).contains("target ops@db"), "{}", stderr(&o));
    assert!(t0.elapsed() < Duration::from_secs(15));
    env.s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hop_landing_chain() {
    let mut env = Env::new().await;
    let hop1 = target(vec![TargetUser::password("jump1", "jump-one-pw")], true);
    let hop2 = target(vec![TargetUser::password("jump2", "jump-two-pw")], true);
    let dest = target(vec![TargetUser::password("app", "app-pw-123")], false);
    let (_, j1) = env
        .add_target("bastion1", &hop1, "jump1", "jump-one-pw", json!({}))
        .await;
    let (_, j2) = env
        .add_target("bastion2", &hop2, "jump2", "jump-two-pw", json!({}))
        .await;
    env.add_target("inner", &dest, "app", "app-pw-123", json!({"landing_chain": [j1, j2]}))
        .await;
    let c = env.client();
    let o = run(c.ssh(env.ssh_port, "alice#app@inner", &["id -un"]));
    assert_eq!(stdout(&o).trim(), "app", "{}", stderr(&o));
    assert!(hop1.log().contains("jump1"), "hop 1 was used");
    assert!(hop2.log().contains("jump2"), "hop 2 was used");
    // The hop that fails is named.
    drop(hop2);
    let o = run(c.ssh(env.ssh_port, "alice#app@inner", &["id -un"]));
    assert!(
        stderr(&o).contains("landing server 2 of 2 (jump2@bastion2)"),
        "{}",
        stderr(&o)
    );
    env.s.stop().await;
}

async fn forward_reads_banner(c: &SshClient, port: u16, login: &str, dest_port: u16) -> bool {
    let local = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = c.ssh(
        port,
        login,
        &[
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            &format!("{local}:127.0.0.1:{dest_port}"),
        ],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut banner = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && banner.is_empty() {
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", local)) {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = [0u8; 64];
            if let Ok(n) = std::io::Read::read(&mut s, &mut buf) {
                banner = String::from_utf8_lossy(&buf[..n]).into_owned();
            }
            if banner.is_empty() {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    banner.starts_with("SSH-2.0-OpenSSH")
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forwarding_only_where_allowed_and_audited() {
    let mut env = Env::new().await;
    let open = target(vec![TargetUser::password("fw", "fw-pw-12345")], true);
    let closed = target(vec![TargetUser::password("fw", "fw-pw-12345")], true);
    env.add_target(
        "fw-open",
        &open,
        "fw",
        "fw-pw-12345",
        json!({"allow_port_forwarding": true}),
    )
    .await;
    env.add_target("fw-closed", &closed, "fw", "fw-pw-12345", json!({}))
        .await;
    let c = env.client();
    assert!(
        forward_reads_banner(&c, env.ssh_port, "alice#fw@fw-open", open.port).await,
        "allowed forward works"
    );
    assert!(
        !forward_reads_banner(&c, env.ssh_port, "alice#fw@fw-closed", closed.port).await,
        "denied forward carries nothing"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fwd = env.audit("session.forward").await;
    assert!(
        fwd.iter()
            .any(|e| e["detail"].as_str().unwrap_or("").contains("bytes up")),
        "{fwd:?}"
    );
    assert!(!env.audit("session.forward_denied").await.is_empty());
    env.s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_parallel_sessions_and_hostile_clients() {
    let mut env = Env::new().await;
    // The target's own sshd must accept 50 simultaneous logins.
    let t = SshTarget::start(TargetOptions {
        users: vec![TargetUser::password("par", "par-pw-12345")],
        allow_tcp_forwarding: false,
        extra_config: "MaxStartups 200:30:400\n".into(),
    });
    env.add_target("par", &t, "par", "par-pw-12345", json!({})).await;
    // 100 connections that never authenticate (some send garbage) do not stop the gateway.
    let mut idle = Vec::new();
    for i in 0..100 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", env.ssh_port)).unwrap();
        if i % 2 == 0 {
            let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n\x00\xff\xff\xff\xff garbage");
        }
        idle.push(s);
    }
    let c = env.client();
    let mut children = Vec::new();
    for i in 0..50 {
        let mut cmd = c.ssh(env.ssh_port, "alice#par@par", &[&format!("echo session-{i}")]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        children.push((i, cmd.spawn().unwrap()));
    }
    for (i, ch) in children {
        let o = ch.wait_with_output().unwrap();
        assert_eq!(stdout(&o).trim(), format!("session-{i}"), "{}", stderr(&o));
    }
    drop(idle);
    // Malformed login names and empty passwords never authenticate.
    let o = run(SshClient::new()
        .with_password("")
        .ssh(env.ssh_port, "alice#par@par", &["true"]));
    assert_ne!(o.status.code(), Some(0));
    let o = run(c.ssh(env.ssh_port, "alice#@", &["true"]));
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    env.s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn login_grace_time_drops_silent_clients_not_sessions_and_terminate_reaches_the_user() {
    sshd::available().expect("real sshd targets are needed");
    let s = TestServer::builder().set("ssh.login_grace_time", "2s").start().await;
    let admin = s.admin_token().await;
    let r = s
        .req("POST", "/api/v1/users", Some(&admin), Some(json!({"username": "alice", "role": "password_administrator", "password": ALICE_PW, "must_change_password": false})))
        .await;
    assert_eq!(r.status, 201);
    let env = Env {
        alice: s.login("alice", ALICE_PW).await.body["token"]
            .as_str()
            .unwrap()
            .to_owned(),
        admin,
        ssh_port: s.running.as_ref().unwrap().ssh_addr.port(),
        s,
    };
    let t = target(vec![TargetUser::password("slow", "slow-pw-12345")], false);
    env.add_target("slow", &t, "slow", "slow-pw-12345", json!({})).await;
    // A client that says nothing is disconnected after the grace time.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", env.ssh_port)).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut silent, &mut buf);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "silent client kept for {:?}",
        t0.elapsed()
    );
    // An authenticated session outlives the grace time.
    let c = env.client();
    let o = run(c.ssh(env.ssh_port, "alice#slow@slow", &["sleep 3; echo still-here"]));
    assert_eq!(stdout(&o).trim(), "still-here", "{}", stderr(&o));
    // Terminating through the registry ends the session with a message to the user.
    let registry = env.s.running.as_ref().unwrap().registry.clone();
    // The previous session may still be leaving the list: look for a new id.
    let before: Vec<String> = registry.list().into_iter().map(|x| x.id).collect();
    let mut cmd = c.ssh(env.ssh_port, "alice#slow@slow", &["sleep 30"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        if let Some(sess) = registry.list().into_iter().find(|x| !before.contains(&x.id)) {
            assert_eq!(sess.user, "alice");
            assert_eq!(sess.target, "slow@slow");
            break sess.id;
        }
        assert!(Instant::now() < deadline, "session never listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(registry.terminate(&id, "admin", "maintenance window"));
    let t0 = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}: {}",
        t0.elapsed(),
        stderr(&o)
    );
    assert!(stderr(&o).contains("maintenance window"), "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !registry.list().is_empty() {
        assert!(
            Instant::now() < deadline,
            "a closed session leaves the live list within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut s = env.s;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn user_keys_totp_and_vaulted_private_keys() {
    let mut env = Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    // The target account logs in with a vaulted private key.
    let (target_key, target_pub) = sshd::keygen(dir.path(), "target_key");
    let t = target(vec![TargetUser::key("keyed", &target_pub)], false);
    let r = env
        .s
        .req(
            "POST",
            "/api/v1/resources",
            Some(&env.alice),
            Some(json!({"name": "kt", "type": "linux", "host": "127.0.0.1", "port": t.port})),
        )
        .await;
    let rid = r.body["id"].as_str().unwrap().to_owned();
    let pem = std::fs::read_to_string(&target_key).unwrap();
    let a = env
        .s
        .req(
            "POST",
            &format!("/api/v1/resources/{rid}/accounts"),
            Some(&env.alice),
            Some(json!({"login": "keyed", "private_key": pem})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert!(!a.text.contains("PRIVATE KEY"));
    // Alice logs in to Postern with her own registered key (no password).
    let (alice_key, alice_pub) = sshd::keygen(dir.path(), "alice_key");
    let vault = env.s.running.as_ref().unwrap().vault.clone();
    let alice = vault.authenticate_token(&env.alice).await.unwrap();
    let ctx = postern_vault::RequestContext::default();
    vault
        .add_user_key(
            &alice,
            &alice.id,
            &postern_vault::NewUserKey {
                public_key: alice_pub.clone(),
            },
            &ctx,
        )
        .await
        .unwrap();
    let by_key = SshClient::new().with_identity(&alice_key);
    let o = run(by_key.ssh(env.ssh_port, "alice#keyed@kt", &["id -un"]));
    assert_eq!(stdout(&o).trim(), "keyed", "{}", stderr(&o));
    // Someone else's key is not alice's.
    let (other_key, _) = sshd::keygen(dir.path(), "other_key");
    let o = run(SshClient::new()
        .with_identity(&other_key)
        .ssh(env.ssh_port, "alice#keyed@kt", &["true"]));
    assert_ne!(o.status.code(), Some(0));
    // Enrol TOTP: from now on a password or a key alone is not enough.
    let en = env.s.req("POST", "/api/v1/me/totp", Some(&env.alice), None).await;
    assert_eq!(en.status, 200, "{}", en.text);
    let secret = en.body["secret"].as_str().unwrap().to_owned();
    let code = |when: &str| {
        let o = Command::new("oathtool")
            .args(["--totp", "-b", "--now", when, &secret])
            .output()
            .unwrap();
        stdout(&o).trim().to_owned()
    };
    let c = env
        .s
        .req(
            "POST",
            "/api/v1/me/totp/confirm",
            Some(&env.alice),
            Some(json!({"code": code("60 seconds ago")})),
        )
        .await;
    // Outside the ±1 step window: refused; then the previous step's code is accepted.
    assert_eq!(c.status, 422, "{}", c.text);
    let c = env
        .s
        .req(
            "POST",
            "/api/v1/me/totp/confirm",
            Some(&env.alice),
            Some(json!({"code": code("30 seconds ago")})),
        )
        .await;
    assert_eq!(c.status, 204, "{}", c.text);
    let o = run(by_key.ssh(env.ssh_port, "alice#keyed@kt", &["id -un"]));
    assert_ne!(o.status.code(), Some(0), "a key alone no longer suffices");
    let o = run(env.client().ssh(
        env.ssh_port,
        "alice#keyed@kt",
        &["-o", "PreferredAuthentications=password", "id -un"],
    ));
    assert_ne!(o.status.code(), Some(0), "the password method cannot carry the code");
    // An askpass that answers the code prompt with oathtool and the password prompt with the password.
    let askpass = dir.path().join("askpass");
    std::fs::write(dir.path().join("pw"), ALICE_PW).unwrap();
    std::fs::write(
        &askpass,
        format!(
            "#!/bin/sh\ncase \"$1\" in *code*) oathtool --totp -b {secret} ;; *) cat {} ;; esac\n",
            dir.path().join("pw").display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let key_and_code = SshClient::new()
        .with_identity(&alice_key)
        .with_option("KbdInteractiveAuthentication", "yes")
        .with_option("BatchMode", "no");
    let mut cmd = key_and_code.ssh(env.ssh_port, "alice#keyed@kt", &["id -un"]);
    cmd.env("SSH_ASKPASS", &askpass).env("SSH_ASKPASS_REQUIRE", "force");
    let o = run(cmd);
    if stdout(&o).trim() != "keyed" {
        let ev = env.audit("auth.").await;
        panic!("key + TOTP: {} {:#?}", stderr(&o), &ev[..ev.len().min(4)]);
    }
    // Password + TOTP through keyboard-interactive (a fresh step: the last code was used).
    tokio::time::sleep(Duration::from_secs(31)).await;
    let pw_client = env.client();
    let mut cmd = pw_client.ssh(env.ssh_port, "alice#keyed@kt", &["id -un"]);
    cmd.env("SSH_ASKPASS", &askpass);
    let o = run(cmd);
    assert_eq!(stdout(&o).trim(), "keyed", "password + TOTP: {}", stderr(&o));
    env.s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_user_gets_the_account_picker() {
    let mut env = Env::new().await;
    let t = target(vec![TargetUser::password("pick", "pick-pw-12345")], false);
    env.add_target("pickme", &t, "pick", "pick-pw-12345", json!({})).await;
    let c = env.client();
    let mut cmd = c.ssh(env.ssh_port, "alice", &["-tt"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Filter, then pick; what follows on the same line goes to the target's shell.
    stdin.write_all(b"pick\n1\necho picked-$(id -un)\nexit\n").unwrap();
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    let out = stdout(&o);
    assert!(
        out.contains("Accounts you may use") && out.contains("pick@pickme"),
        "{out}"
    );
    assert!(out.contains("picked-pick"), "{out}");
    // exec without a target asks for one.
    let o = run(c.ssh(env.ssh_port, "alice", &["id"]));
    assert!(stderr(&o).contains("USER#ACCOUNT@RESOURCE"), "{}", stderr(&o));
    env.s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_stalling_mid_kex_is_dropped_after_the_grace_time() {
    let mut s = TestServer::builder().set("ssh.login_grace_time", "2s").start().await;
    let port = s.running.as_ref().unwrap().ssh_addr.port();
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"SSH-2.0-OpenSSH_9.2p1 stalling\r\n").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c, &mut buf);
    assert!(t0.elapsed() < Duration::from_secs(8), "held for {:?}", t0.elapsed());
    assert!(buf.starts_with(b"SSH-2.0-Postern"), "the gateway identified itself");
    // A huge packet length does not make the gateway allocate or hang.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n\xff\xff\xff\xf0\x00\x00\x00\x00")
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let t0 = Instant::now();
    let _ = std::io::Read::read_to_end(&mut c, &mut buf);
    assert!(t0.elapsed() < Duration::from_secs(8));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_sends_nonsense_or_nothing_gets_a_clear_message() {
    let mut env = Env::new().await;
    for (name, payload) in [
        ("noise", &b"HTTP/1.1 400 Bad Request\r\n\r\n\x00\x01garbage"[..]),
        ("mute", &b""[..]),
    ] {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let payload = payload.to_vec();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let _ = s.write_all(&payload);
                std::thread::sleep(Duration::from_secs(20));
            }
        });
        let r = env
            .s
            .req(
                "POST",
                "/api/v1/resources",
                Some(&env.alice),
                Some(json!({"name": name, "type": "linux", "host": "127.0.0.1", "port": port})),
            )
            .await;
        let rid = r.body["id"].as_str().unwrap().to_owned();
        env.s
            .req(
                "POST",
                &format!("/api/v1/resources/{rid}/accounts"),
                Some(&env.alice),
                Some(json!({"login": "x", "password": "pw"})),
            )
            .await;
    }
    let c = env.client();
    let t0 = Instant::now();
    let o = run(c.ssh(env.ssh_port, "alice#x@noise", &["true"]));
    assert!(stderr(&o).contains("postern: target x@noise"), "{}", stderr(&o));
    let o = run(c.ssh(env.ssh_port, "alice#x@mute", &["true"]));
    assert!(
        stderr(&o).contains("postern: target x@mute: no answer within 10s"),
        "{}",
        stderr(&o)
    );
    assert!(t0.elapsed() < Duration::from_secs(30));
    env.s.stop().await;
}

/// Serves one greeting per connection on a fresh loopback port.
fn greeter(text: &'static str) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(text.as_bytes());
        }
    });
    port
}

fn read_greeting(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut out = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut out);
            if !out.is_empty() {
                return out;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    String::new()
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_and_agent_forwarding_only_where_allowed() {
    let mut env = Env::new().await;
    let open = target(vec![TargetUser::password("fw", "fw-pw-12345")], true);
    let closed = target(vec![TargetUser::password("fw", "fw-pw-12345")], true);
    env.add_target(
        "rf-open",
        &open,
        "fw",
        "fw-pw-12345",
        json!({"allow_port_forwarding": true, "allow_agent_forwarding": true}),
    )
    .await;
    env.add_target("rf-closed", &closed, "fw", "fw-pw-12345", json!({}))
        .await;
    let c = env.client();
    // Remote forward: the target's port P reaches a listener on the user's side.
    for (name, allowed) in [("rf-open", true), ("rf-closed", false)] {
        let local = greeter("hello-remote");
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = c.ssh(
            env.ssh_port,
            &format!("alice#fw@{name}"),
            &["-N", "-R", &format!("127.0.0.1:{p}:127.0.0.1:{local}")],
        );
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let got = if allowed {
            read_greeting(p)
        } else {
            std::thread::sleep(Duration::from_secs(3));
            read_greeting_once(p)
        };
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(got == "hello-remote", allowed, "{name}: {got:?}");
    }
    // Agent forwarding: the target sees the user's agent only where allowed.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    // Killed even when an assertion fails first.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let agent = KillOnDrop(
        Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (key, _) = sshd::keygen(dir.path(), "agent_key");
    assert!(Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap()
        .status
        .success());
    let ac = SshClient::new()
        .with_password(ALICE_PW)
        .with_option("ForwardAgent", "yes")
        .with_option("IdentityAgent", sock.to_str().unwrap());
    let o = run(ac.ssh(env.ssh_port, "alice#fw@rf-open", &["ssh-add -l"]));
    assert!(
        stdout(&o).contains("agent_key") || stdout(&o).contains("ED25519"),
        "allowed: {} {}",
        stdout(&o),
        stderr(&o)
    );
    let o = run(ac.ssh(env.ssh_port, "alice#fw@rf-closed", &["ssh-add -l; echo rc=$?"]));
    assert!(
        !stdout(&o).contains("ED25519") && stdout(&o).contains("rc=2"),
        "denied: {} {}",
        stdout(&o),
        stderr(&o)
    );
    drop(agent);
    assert!(!env.audit("session.agent_forward").await.is_empty());
    env.s.stop().await;
}

fn read_greeting_once(port: u16) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_recorded_sealed_and_verifiable() {
    let mut env = Env::new().await;
    let t = target(vec![TargetUser::password("rec", "rec-pw-12345")], false);
    env.add_target("rec", &t, "rec", "rec-pw-12345", json!({})).await;
    let c = env.client();
    let o = run(c.ssh(env.ssh_port, "alice#rec@rec", &["echo recorded-$((6*7))"]));
    assert_eq!(stdout(&o).trim(), "recorded-42", "{}", stderr(&o));
    let data = env.s.data_dir();
    let dir = data.join("recordings");
    let deadline = Instant::now() + Duration::from_secs(10);
    let file = loop {
        let ends = env.audit("session.end").await;
        if let Some(e) = ends.first() {
            assert!(e["detail"].as_str().unwrap_or("").contains("final hash"), "{e}");
            break files_under(&dir)
                .into_iter()
                .find(|p| p.extension().is_some_and(|x| x == "pcast"))
                .expect("a recording");
        }
        assert!(Instant::now() < deadline, "no session.end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let key = postern::recording::load_public_key(&data).unwrap();
    let v = postern_recorder::verify(&file, &key).unwrap();
    assert!(!v.truncated);
    let mut cast = Vec::new();
    postern_recorder::export_cast(&file, &mut cast).unwrap();
    let cast = String::from_utf8_lossy(&cast);
    assert!(cast.contains("recorded-42") && cast.contains("echo recorded"), "{cast}");
    // One flipped byte is detected.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let bad = file.with_extension("bad");
    std::fs::write(&bad, &bytes).unwrap();
    assert!(postern_recorder::verify(&bad, &key).is_err());
    env.s.stop().await;
}
