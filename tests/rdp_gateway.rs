//! The RDP gateway against real peers: `xfreerdp` under Xvfb in, a real xrdp (private mount namespace) out.

mod common;

use std::time::Duration;

use common::rdp::{self, FreeRdp, Log, XrdpTarget, Xvfb};
use common::rdp_env::{eventually, logs, no_canary_in_any_argv, RdpEnv};
use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// The harness itself: xfreerdp straight to xrdp logs in with the right password (autologon, no dialog) and is
/// refused with a wrong one (xrdp keeps the connection open on its login dialog; the logs tell).
#[test]
fn direct_xfreerdp_to_xrdp_autologon_and_wrong_password() {
    rdp::available().expect("xrdp targets are needed (run the suite with tests/run.sh as root)");
    let t = XrdpTarget::start(&[("bob", "bob target pw 1"), ("carol", "carol target pw 2")]);
    let x = Xvfb::start();
    let tmp = tempfile::tempdir().unwrap();

    let _ok = FreeRdp::connect(&x, t.port, "bob", "bob target pw 1", &[], &tmp.path().join("ok.log"));
    assert!(
        t.wait_for_log(Log::Xrdp, "login successful for user bob on display", WAIT),
        "{}",
        t.logs()
    );
    assert!(t.wait_for_log(Log::Sesman, "++ created session (access granted): username bob", WAIT));
    assert!(!t.log(Log::Sesman).contains("AUTHFAIL: user=bob"));

    let x2 = Xvfb::start();
    let _bad = FreeRdp::connect(
        &x2,
        t.port,
        "carol",
        "not her password",
        &[],
        &tmp.path().join("bad.log"),
    );
    assert!(
        t.wait_for_log(Log::Sesman, "AUTHFAIL: user=carol", WAIT),
        "{}",
        t.logs()
    );
    assert!(
        t.wait_for_log(Log::Xrdp, "login failed for user carol", WAIT),
        "{}",
        t.logs()
    );
    assert!(!t.log(Log::Xrdp).contains("login successful for user carol"));
    // What the clients show (screenshots of their displays): xrdp's own "login failed" dialog (its grey,
    // #DEDEDE, in the middle of the dialog) on carol's; bob's desktop is not that dialog.
    let png = tmp.path().join("bad.png");
    let grey = "#DEDEDE".to_string();
    let mut seen = String::new();
    for _ in 0..50 {
        x2.screenshot(&png);
        seen = rdp::pixel(&png, 200, 200);
        if seen == grey {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(seen, grey, "carol's screen does not show xrdp's login dialog");
    let ok_png = tmp.path().join("ok.png");
    x.screenshot(&ok_png);
    assert_ne!(rdp::pixel(&ok_png, 200, 200), grey, "bob's screen shows a login dialog");
}

const ALICE_PW: &str = "alice passphrase 123";

type Env = RdpEnv;

impl RdpEnv {
    /// A Windows-type resource for `t`, owned by alice; returns its id.
    async fn add_resource(&self, name: &str, t: &XrdpTarget) -> String {
        self.windows_resource(name, t.port).await
    }

    async fn add_account(&self, rid: &str, login: &str, password: &str) {
        self.s.create_account(&self.alice, rid, login, password).await;
    }

    fn connect(&self, x: &Xvfb, user: &str, password: &str, log: &str) -> FreeRdp {
        FreeRdp::connect(x, self.rdp_port, user, password, &[], &self.tmp.path().join(log))
    }
}

/// xfreerdp → Postern as `alice#winuser@rdp1` with alice's Postern password → xrdp logs in as the vaulted account
/// (autologon, no dialog); the client never had the target password. The session is live in the registry and
/// audited; the vaulted password is in no argv and no audit event.
#[tokio::test(flavor = "multi_thread")]
async fn autologon_through_postern_with_the_vaulted_password() {
    let mut env = RdpEnv::new(ALICE_PW, "debug").await;
    let secret = common::canary();
    let t = XrdpTarget::start(&[("winuser", &secret)]);
    let rid = env.add_resource("rdp1", &t).await;
    env.add_account(&rid, "winuser", &secret).await;
    let cert_fp = t.cert_fingerprint();
    let x = Xvfb::start();
    let mut c = env.connect(&x, "alice#winuser@rdp1", ALICE_PW, "alice.log");
    let ok = t.wait_for_log(
        Log::Sesman,
        "++ created session (access granted): username winuser",
        WAIT,
    );
    assert!(
        ok,
        "{}\n--- xfreerdp ---\n{}\n--- audit ---\n{:?}",
        t.logs(),
        c.log(),
        env.audit("session.").await
    );
    assert!(
        t.wait_for_log(Log::Xrdp, "login successful for user winuser on display", WAIT),
        "{}",
        t.logs()
    );
    // xrdp saw the vaulted account and the autologon flag, not the Postern login.
    assert!(!t.log(Log::Xrdp).contains("alice#"), "{}", t.logs());
    let registry = env.s.running.as_ref().unwrap().registry.clone();
    assert!(
        eventually(WAIT, || registry.list().iter().any(|s| s.protocol == "rdp"
            && s.user == "alice"
            && s.target == "winuser@rdp1"))
        .await,
        "{:?}",
        registry.list()
    );
    no_canary_in_any_argv(&secret);
    let starts = env.audit("session.start").await;
    assert!(
        starts.iter().any(|e| e["actor_name"] == "alice"
            && e["object_name"] == "winuser@rdp1"
            && e["detail"].as_str().unwrap_or_default().starts_with("rdp session")
            && e["detail"].as_str().unwrap_or_default().contains(&cert_fp)),
        "{starts:?}"
    );
    // Terminated from the web: the client is disconnected, the session leaves the registry, and session.end
    // says who ended it, with the byte counts.
    let id = registry.list()[0].id.clone();
    let r = env
        .s
        .req(
            "DELETE",
            &format!("/api/v1/sessions/{id}"),
            Some(&env.admin),
            Some(json!({"reason": "maintenance"})),
        )
        .await;
    assert!(r.status < 300, "{} {}", r.status, r.text);
    assert!(
        c.wait_exit(WAIT).is_some(),
        "xfreerdp still connected after the termination"
    );
    // It was told why, in RDP's terms.
    assert!(c.log().contains("ERRINFO_RPC_INITIATED_DISCONNECT"), "{}", c.log());
    assert!(
        eventually(WAIT, || registry.list().is_empty()).await,
        "{:?}",
        registry.list()
    );
    let mut ends = Vec::new();
    for _ in 0..50 {
        ends = env.audit("session.end").await;
        if !ends.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ends.iter().any(|e| e["object_name"] == "winuser@rdp1"
            && e["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("terminated by admin: maintenance")
            && e["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("bytes from the target")),
        "{ends:?}"
    );
    // A plain USER with one RDP account goes straight to it (the picker is for several: tests/rdp_picker.rs).
    let plain = env.connect(&x, "alice", ALICE_PW, "alice-plain.log");
    assert!(
        eventually(WAIT, || registry.list().iter().any(|s| s.protocol == "rdp"
            && s.user == "alice"
            && s.target == "winuser@rdp1"))
        .await,
        "{:?}\n{}",
        registry.list(),
        plain.log()
    );
    drop(plain);
    assert!(env.audit("rdp.pick").await.is_empty(), "no picker for one account");
    let all = env.audit("session.").await;
    assert!(!all.iter().any(|e| e.to_string().contains(&secret)));
    env.s.stop().await;
    // Canary: Postern's debug logs covered the session and never show the vaulted (or the user's) password.
    let text = logs();
    assert!(
        text.contains("rdp_session") && text.contains("session started"),
        "{text}"
    );
    assert!(!text.contains(&secret), "the vaulted password is in Postern's log");
    assert!(!text.contains(ALICE_PW), "the user's password is in Postern's log");
}

/// Refusals never reach the target: a forbidden or unknown target, a wrong Postern password, a TOTP user; each
/// ends the client's connection, with audit events where an actor is known. A wrong vaulted password reaches
/// xrdp, which shows it in its log (xrdp keeps its login dialog open), and the session is in the audit.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_and_a_wrong_vaulted_password() {
    let mut env = RdpEnv::new(ALICE_PW, "debug").await;
    let t = XrdpTarget::start(&[("winuser", "winuser target pw"), ("badpw", "the real target pw")]);
    let rid = env.add_resource("rdp2", &t).await;
    env.add_account(&rid, "winuser", "winuser target pw").await;
    env.add_account(&rid, "badpw", "a stale vaulted pw").await;
    for (name, role) in [("bob", "password_user"), ("carol", "password_administrator")] {
        let r = env
            .s
            .req("POST", "/api/v1/users", Some(&env.admin), Some(json!({"username": name, "role": role, "password": format!("{name} passphrase 12"), "must_change_password": false})))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    // carol enrols TOTP.
    let carol = env.s.login("carol", "carol passphrase 12").await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    env.s.enroll_totp(&carol).await;

    let x = Xvfb::start();
    let insufficient = "ERRINFO_SERVER_INSUFFICIENT_PRIVILEGES";
    let denied = "ERRINFO_SERVER_DENIED_CONNECTION";
    for (user, pw, why, errinfo) in [
        (
            "bob#winuser@rdp2",
            "bob passphrase 12",
            "no such target, or you may not use it: winuser@rdp2",
            insufficient,
        ),
        (
            "alice#nobody@rdp2",
            ALICE_PW,
            "no such target, or you may not use it: nobody@rdp2",
            insufficient,
        ),
        (
            "alice#winuser@rdp2",
            "not alice's password",
            "authentication failed for alice",
            denied,
        ),
        (
            "carol#winuser@rdp2",
            "carol passphrase 12",
            "carol has two-factor authentication",
            denied,
        ),
    ] {
        let mut c = env.connect(&x, user, pw, "refused.log");
        let st = c.wait_exit(WAIT);
        assert!(
            st.is_some_and(|s| !s.success()),
            "{user}: xfreerdp still connected or succeeded: {st:?}\n{}",
            c.log()
        );
        assert!(logs().contains(why), "{user}: no {why:?} in the gateway log");
        // The client was told why, in RDP's reason codes.
        assert!(
            c.log().contains(errinfo),
            "{user}: xfreerdp did not report {errinfo}:\n{}",
            c.log()
        );
    }
    // None of them reached the target.
    assert!(!t.log(Log::Xrdp).contains("receive connection request"), "{}", t.logs());
    let authz = env.audit("session.authorize").await;
    assert!(
        authz
            .iter()
            .any(|e| e["actor_name"] == "bob" && e["outcome"] == "denied"),
        "{authz:?}"
    );
    assert!(
        authz
            .iter()
            .any(|e| e["actor_name"] == "alice" && e["outcome"] == "denied"),
        "{authz:?}"
    );
    let logins = env.audit("auth.login").await;
    assert!(
        logins
            .iter()
            .any(|e| e["actor_name"] == "alice" && e["outcome"] == "failure"),
        "{logins:?}"
    );
    assert!(env.s.running.as_ref().unwrap().registry.list().is_empty());

    // A wrong vaulted password: xrdp refuses it (its log), the session is audited with the account.
    let _c = env.connect(&x, "alice#badpw@rdp2", ALICE_PW, "badpw.log");
    assert!(
        t.wait_for_log(Log::Sesman, "AUTHFAIL: user=badpw", WAIT),
        "{}",
        t.logs()
    );
    assert!(
        t.wait_for_log(Log::Xrdp, "login failed for user badpw", WAIT),
        "{}",
        t.logs()
    );
    let starts = env.audit("session.start").await;
    assert!(
        starts
            .iter()
            .any(|e| e["actor_name"] == "alice" && e["object_name"] == "badpw@rdp2"),
        "{starts:?}"
    );
    assert!(!logs().contains("a stale vaulted pw"));
    env.s.stop().await;
}

/// Bad input on the RDP port (TLS or HTTP instead of RDP, a truncated or oversized frame, silence) ends that
/// connection only: the gateway still serves the next client. And a client that offers only standard RDP
/// security is told the gateway needs TLS.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_on_the_rdp_port_is_refused_cleanly() {
    use std::io::{Read, Write};
    let mut env = RdpEnv::new(ALICE_PW, "debug").await;
    let port = env.rdp_port;
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x16, 3, 1, 0, 0x20, 1, 2, 3][..],
        &[3, 0, 0xff, 0xff, 0, 0, 0][..],
        &[3, 0, 0, 19, 14, 0xe0, 0, 0, 0, 0, 0][..],
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let _ = s.write_all(junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    // A standard-RDP-security-only request gets an RDP_NEG_FAILURE (SSL_REQUIRED_BY_SERVER).
    let x224_rdp_only = [3, 0, 0, 19, 14, 0xe0, 0, 0, 0, 0, 0, 1, 0, 8, 0, 0, 0, 0, 0];
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&x224_rdp_only).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert_eq!(buf.len(), 19, "{buf:?}");
    assert_eq!(
        (buf[11], buf[15]),
        (3, 1),
        "RDP_NEG_FAILURE with SSL_REQUIRED_BY_SERVER: {buf:?}"
    );
    // (Logged once the connection is over, which may be just after the client read the refusal.)
    assert!(eventually(WAIT, || logs().contains("the gateway needs TLS security")).await);
    // Still serving: a real client gets through the whole negotiation to the refusal of its unknown target.
    let x = Xvfb::start();
    let mut c = env.connect(&x, "alice#nobody@nowhere", ALICE_PW, "after-junk.log");
    assert!(c.wait_exit(WAIT).is_some_and(|s| !s.success()));
    assert!(logs().contains("no such target, or you may not use it: nobody@nowhere"));
    env.s.stop().await;
}

/// Waits until an audit event of `action` whose detail contains `needle` exists.
async fn audited(env: &Env, action: &str, needle: &str) -> bool {
    for _ in 0..200 {
        if env
            .audit(action)
            .await
            .iter()
            .any(|e| e["detail"].as_str().unwrap_or_default().contains(needle))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn clipboard_and_drive_are_blocked_unless_the_resource_allows_them() {
    let env = RdpEnv::new(ALICE_PW, "debug").await;
    let secret = common::canary();
    let t = XrdpTarget::start(&[("winuser", &secret)]);
    let rid = env.add_resource("rdp1", &t).await;
    env.add_account(&rid, "winuser", &secret).await;
    let share = env.tmp.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let drive = format!("/drive:pshare,{}", share.display());
    let x = Xvfb::start();
    // Off by default: the first data on each channel is dropped and audited.
    let c = FreeRdp::connect(
        &x,
        env.rdp_port,
        "alice#winuser@rdp1",
        ALICE_PW,
        &["+clipboard", &drive],
        &env.tmp.path().join("blocked.log"),
    );
    assert!(
        t.wait_for_log(Log::Xrdp, "login successful for user winuser on display", WAIT),
        "{}",
        t.logs()
    );
    let blocked = audited(&env, "session.channel_blocked", "clipboard blocked").await
        || audited(&env, "session.channel_blocked", "drive redirection blocked").await;
    assert!(
        blocked,
        "no channel was blocked: {:?}\n{}\n{}",
        env.audit("session.").await,
        c.log(),
        t.logs()
    );
    assert!(env
        .audit("session.channel")
        .await
        .iter()
        .all(|e| e["action"] != "session.channel"));
    drop(c);

    // Allowed on the resource: the channels work and their first use is audited.
    let r = env
        .s
        .req(
            "PATCH",
            &format!("/api/v1/resources/{rid}"),
            Some(&env.alice),
            Some(json!({"allow_clipboard": true, "allow_drive": true})),
        )
        .await;
    assert!(r.status < 300, "{} {}", r.status, r.text);
    assert_eq!(r.body["allow_clipboard"], true, "{}", r.text);
    let x2 = Xvfb::start();
    let c2 = FreeRdp::connect(
        &x2,
        env.rdp_port,
        "alice#winuser@rdp1",
        ALICE_PW,
        &["+clipboard", &drive],
        &env.tmp.path().join("allowed.log"),
    );
    let used = audited(&env, "session.channel", "clipboard used").await
        || audited(&env, "session.channel", "drive redirection used").await;
    assert!(
        used,
        "no channel use audited: {:?}\n{}",
        env.audit("session.").await,
        c2.log()
    );
    // The recording notes what the allowed channels carried (clipboard formats, drive paths; never their
    // content) as markers, and the search index finds them.
    let registry = env.s.running.as_ref().unwrap().registry.clone();
    let id = registry.list().last().expect("a live session").id.clone();
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(c2);
    let indexed = env
        .s
        .recording_when(&id, &env.admin, |d| d["recording"]["indexed"] == true)
        .await;
    let markers = indexed["markers"].as_array().cloned().unwrap_or_default();
    // (FreeRDP 2.11 offers its formats as soon as the clipboard channel is up.)
    assert!(
        markers.iter().any(|m| m["kind"] == "clipboard"
            && m["detail"]
                .as_str()
                .unwrap_or_default()
                .starts_with("the client offers")
            && m["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("FileGroupDescriptorW")),
        "{markers:?}\n{}",
        env.s
            .req("GET", &format!("/api/v1/recordings/{id}/cast"), Some(&env.admin), None)
            .await
            .text
    );
    let hits = env
        .s
        .req(
            "GET",
            "/api/v1/recordings/search?q=FileGroupDescriptorW",
            Some(&env.admin),
            None,
        )
        .await;
    assert!(hits.text.contains(&id), "{}", hits.text);
}

/// How often `needle` occurs in one of the target's logs.
fn log_count(t: &XrdpTarget, which: Log, needle: &str) -> usize {
    t.log(which).matches(needle).count()
}

/// Target certificates are trusted on first use and pinned per resource: the first session pins xrdp's
/// certificate; after xrdp restarts with a new certificate the gateway refuses in the TLS handshake (nothing,
/// least of all the vaulted password, reaches the target), tells the client, and audits
/// `session.host_key_mismatch` with both fingerprints; clearing the pin (the host-key route, as for SSH) lets the
/// next session pin the new one; with `[rdp.dangerous] accept_any_target_certificate` a changed certificate is
/// accepted, the pin stays, and `session.start` says so.
#[tokio::test(flavor = "multi_thread")]
async fn target_certificate_is_pinned_on_first_use_and_a_changed_one_is_refused() {
    let env = RdpEnv::new(ALICE_PW, "debug").await;
    let secret = common::canary();
    let mut t = XrdpTarget::start(&[("winuser", &secret)]);
    let rid = env.add_resource("rdp-pin", &t).await;
    env.add_account(&rid, "winuser", &secret).await;
    let ok_line = "login successful for user winuser on display";
    let x = Xvfb::start();

    // 1. First use: the session starts and the certificate is pinned.
    let first = t.cert_fingerprint();
    let c = env.connect(&x, "alice#winuser@rdp-pin", ALICE_PW, "pin-1.log");
    assert!(t.wait_for_log(Log::Xrdp, ok_line, WAIT), "{}\n{}", t.logs(), c.log());
    assert!(audited(&env, "resource.host_key_pinned", &first).await);
    assert!(
        audited(
            &env,
            "session.start",
            &format!("target certificate {first}, pinned on this first use")
        )
        .await
    );
    drop(c);

    // 2. xrdp restarts with a new certificate: refused before anything reaches the target.
    let second = t.renew_certificate();
    let logins = log_count(&t, Log::Xrdp, ok_line);
    let mut c = env.connect(&x, "alice#winuser@rdp-pin", ALICE_PW, "pin-2.log");
    let status = c.wait_exit(WAIT);
    assert!(status.is_some_and(|s| !s.success()), "{status:?}\n{}", c.log());
    assert!(
        c.log().contains("ERRINFO_SERVER_DENIED_CONNECTION"),
        "the client is told the connection was denied:\n{}",
        c.log()
    );
    assert!(
        audited(
            &env,
            "session.host_key_mismatch",
            &format!("its TLS certificate changed (pinned {first}, presented {second})")
        )
        .await,
        "{:?}",
        env.audit("session.").await
    );
    assert!(logs().contains(&format!("presented {second}")));
    assert_eq!(log_count(&t, Log::Xrdp, ok_line), logins, "{}", t.logs());
    assert!(
        !env.audit("session.start")
            .await
            .iter()
            .any(|e| e["detail"].as_str().unwrap_or_default().contains(&second)),
        "a session started with the changed certificate"
    );

    // 3. The owner clears the pin (the same route as an SSH host key): the next session pins the new certificate.
    let r = env
        .s
        .req(
            "DELETE",
            &format!("/api/v1/resources/{rid}/host-key"),
            Some(&env.alice),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let c = env.connect(&x, "alice#winuser@rdp-pin", ALICE_PW, "pin-3.log");
    assert!(
        eventually(WAIT, || log_count(&t, Log::Xrdp, ok_line) > logins).await,
        "{}\n{}",
        t.logs(),
        c.log()
    );
    assert!(audited(&env, "resource.host_key_pinned", &second).await);
    drop(c);

    // 4. With [rdp.dangerous] accept_any_target_certificate (same data, restarted), a changed certificate is
    //    accepted; the pin stays as it was and session.start names both.
    let third = t.renew_certificate();
    let Env {
        mut s,
        admin,
        alice,
        tmp,
        ..
    } = env;
    s.stop().await;
    let TestServer { dir, .. } = s;
    let s = TestServer::builder()
        .reuse_dir(dir)
        .set("rdp.dangerous.accept_any_target_certificate", "true")
        .start()
        .await;
    let rdp_port = s.running.as_ref().unwrap().rdp_addr.port();
    let mut env = Env {
        s,
        admin,
        alice,
        rdp_port,
        tmp,
    };
    let logins = log_count(&t, Log::Xrdp, ok_line);
    let c = env.connect(&x, "alice#winuser@rdp-pin", ALICE_PW, "pin-4.log");
    assert!(
        eventually(WAIT, || log_count(&t, Log::Xrdp, ok_line) > logins).await,
        "{}\n{}",
        t.logs(),
        c.log()
    );
    assert!(
        audited(
            &env,
            "session.start",
            &format!("target certificate {third}, NOT the pinned {second}: accepted because [rdp.dangerous] accept_any_target_certificate is on")
        )
        .await,
        "{:?}",
        env.audit("session.start").await
    );
    assert!(!audited_now(&env, "resource.host_key_pinned", &third).await);
    drop(c);
    no_canary_in_any_argv(&secret);
    assert!(!logs().contains(&secret));
    env.s.stop().await;
}

/// Whether an audit event of `action` whose detail contains `needle` exists now.
async fn audited_now(env: &Env, action: &str, needle: &str) -> bool {
    env.audit(action)
        .await
        .iter()
        .any(|e| e["detail"].as_str().unwrap_or_default().contains(needle))
}
