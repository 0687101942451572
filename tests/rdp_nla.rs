//! NLA through the RDP gateway: towards a target that requires CredSSP (IronRDP's acceptor, in this process)
//! with the vaulted credentials, and towards clients with one-time RDP tickets (`/sec:nla` and TLS), `xfreerdp`
//! under Xvfb as the client.

mod common;
#[path = "common/rdp_nla.rs"]
mod rdp_nla;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::rdp::{self, FreeRdp, Xvfb};
use common::rdp_env::{logs, no_canary_in_any_argv, RdpEnv};
use common::*;
use rdp_nla::NlaTarget;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const ALICE_PW: &str = "alice passphrase 123";

/// The log filter of this binary: debug, with the directives the binary always adds. The target's crate
/// (`ironrdp_acceptor`) logs its own credentials at debug level: they are not Postern and are filtered out.
const LOG_FILTER: &str = "debug,ironrdp_acceptor=off,sspi=warn";

type Env = RdpEnv;

impl RdpEnv {
    /// A Windows resource for the NLA target owned by alice, with one account; returns the account id.
    async fn add_target(&self, name: &str, t: &NlaTarget, login: &str, password: &str) -> String {
        let rid = self.windows_resource(name, t.port).await;
        self.s.create_account(&self.alice, &rid, login, password).await
    }

    fn connect(&self, x: &Xvfb, user: &str, password: &str, extra: &[&str], log: &str) -> FreeRdp {
        FreeRdp::connect(x, self.rdp_port, user, password, extra, &self.tmp.path().join(log))
    }

    async fn ticket(&self, token: &str, account: &str) -> Value {
        let r = self
            .s
            .req(
                "POST",
                &format!("/api/v1/accounts/{account}/rdp-ticket"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    }
}

/// Waits until the client's screen shows the target's picture (left and right halves).
fn shows_the_picture(x: &Xvfb, png: &std::path::Path) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        x.screenshot(png);
        let (l, r) = (rdp::pixel(png, 200, 300), rdp::pixel(png, 600, 300));
        if close(&l, rdp_nla::LEFT) && close(&r, rdp_nla::RIGHT) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    false
}

/// Two `#RRGGBB` colours within 8 per channel (the session may run at 16 bits per pixel).
fn close(a: &str, b: &str) -> bool {
    let ch = |s: &str, i: usize| i32::from_str_radix(&s[1 + 2 * i..3 + 2 * i], 16).unwrap_or(-100);
    (0..3).all(|i| (ch(a, i) - ch(b, i)).abs() <= 8)
}

/// xfreerdp (TLS, alice's Postern password) → Postern → a target that requires NLA: the gateway does CredSSP with
/// the vaulted credentials, the target accepts them and the client reaches the active stage (its screen shows
/// the target's picture). The vaulted password is in no log line of Postern, no argv, no audit event.
#[tokio::test(flavor = "multi_thread")]
async fn nla_target_autologon_with_the_vaulted_password() {
    let mut env = RdpEnv::new(ALICE_PW, LOG_FILTER).await;
    let secret = common::canary();
    let t = NlaTarget::start("winadmin", &secret).await;
    env.add_target("nla1", &t, "winadmin", &secret).await;
    let x = Xvfb::start();
    let mut c = env.connect(&x, "alice#winadmin@nla1", ALICE_PW, &[], "alice.log");
    let png = env.tmp.path().join("alice.png");
    assert!(
        shows_the_picture(&x, &png),
        "the client does not show the target's picture\nclient: {}\ntarget failures: {:?}\n{}",
        c.log(),
        t.failures.lock().unwrap(),
        logs()
    );
    assert!(c.try_wait().is_none(), "xfreerdp exited: {}", c.log());
    assert_eq!(
        t.active.load(Ordering::SeqCst),
        1,
        "the target's connection sequence did not complete"
    );
    assert!(
        t.failures.lock().unwrap().is_empty(),
        "{:?}",
        t.failures.lock().unwrap()
    );
    let starts = env.audit("session.start").await;
    assert!(
        starts.iter().any(|e| e["actor_name"] == "alice"
            && e["object_name"] == "winadmin@nla1"
            && e["detail"].as_str().unwrap_or_default().contains("NLA (CredSSP/NTLM)")),
        "{starts:?}"
    );
    no_canary_in_any_argv(&secret);
    drop(c);
    // The session was recorded like any other: the recording is sealed, verifies, renders the target's two
    // squares, and holds neither password (CredSSP happened before the relay and its recording started).
    let mut rec = Value::Null;
    for _ in 0..100 {
        let l = env
            .s
            .req("GET", "/api/v1/recordings?protocol=rdp", Some(&env.admin), None)
            .await;
        if let Some(r) = l
            .body
            .as_array()
            .and_then(|a| a.first())
            .filter(|r| r["status"] == "sealed")
        {
            rec = r.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = rec["id"].as_str().expect("a sealed RDP recording").to_owned();
    let d = env
        .s
        .req("GET", &format!("/api/v1/recordings/{id}"), Some(&env.admin), None)
        .await;
    assert_eq!(d.body["verification"]["ok"], true, "{}", d.text);
    let path = env.s.data_dir().join("recordings").join(format!("{id}.pcast"));
    let frame = postern_recorder::rdp::render_at(&path, u64::MAX / 2).unwrap();
    assert_eq!((frame.width, frame.height), (rdp_nla::WIDTH, rdp_nla::HEIGHT));
    let hex = |x: usize, y: usize| {
        let p = &frame.rgba[(y * usize::from(frame.width) + x) * 4..][..3];
        format!("#{:02X}{:02X}{:02X}", p[0], p[1], p[2])
    };
    assert_eq!(
        (hex(200, 300), hex(600, 300)),
        (rdp_nla::LEFT.into(), rdp_nla::RIGHT.into())
    );
    let (server, client) = postern_recorder::rdp::streams(&path).unwrap();
    for pw in [secret.as_str(), ALICE_PW] {
        let utf16: Vec<u8> = pw.encode_utf16().flat_map(u16::to_le_bytes).collect();
        for stream in [&server, &client] {
            assert!(!contains_bytes(stream, pw) && !stream.windows(utf16.len()).any(|w| w == utf16));
        }
    }
    let everything = env
        .s
        .req("GET", "/api/v1/audit?limit=1000", Some(&env.admin), None)
        .await;
    assert!(!everything.text.contains(&secret));
    env.s.stop().await;
    let all = logs();
    assert!(all.contains("winadmin@nla1"), "the log has the session");
    assert!(!all.contains(&secret), "the vaulted password is in the log");
    // Nor in the encodings libraries print buffers in: UTF-16LE as hex, or as a list of byte values.
    let utf16: Vec<u8> = secret.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let hex: String = utf16.iter().map(|b| format!("{b:02X}")).collect();
    let list = utf16.iter().map(u8::to_string).collect::<Vec<_>>().join(", ");
    assert!(
        !all.to_uppercase().contains(&hex),
        "the vaulted password is in the log (UTF-16 hex)"
    );
    assert!(!all.contains(&list), "the vaulted password is in the log (byte list)");
}

/// A wrong vaulted password: the target refuses CredSSP; the client is told (a Set Error Info PDU, then a
/// disconnect; xfreerdp prints the code and exits) and the failure is audited with the account. A forbidden
/// target is refused before any target is contacted.
#[tokio::test(flavor = "multi_thread")]
async fn nla_target_wrong_vaulted_password_and_forbidden_target() {
    let mut env = RdpEnv::new(ALICE_PW, LOG_FILTER).await;
    let t = NlaTarget::start("winadmin", "the real target pw").await;
    env.add_target("nla2", &t, "winadmin", "a stale vaulted pw").await;
    let x = Xvfb::start();
    let mut c = env.connect(&x, "alice#winadmin@nla2", ALICE_PW, &[], "bad.log");
    let st = c.wait_exit(WAIT);
    assert!(st.is_some_and(|s| !s.success()), "{st:?}\n{}", c.log());
    assert!(
        c.log().contains("ERRINFO_SERVER_DENIED_CONNECTION"),
        "xfreerdp did not report the refusal:\n{}",
        c.log()
    );
    assert!(
        logs().contains("the credentials were refused"),
        "no clear error in the gateway log"
    );
    let failed = env.audit("session.connect_failed").await;
    assert!(
        failed.iter().any(|e| e["actor_name"] == "alice"
            && e["object_name"] == "winadmin@nla2"
            && e["detail"].as_str().unwrap_or_default().contains("NLA")),
        "{failed:?}"
    );
    assert_eq!(t.connections.load(Ordering::SeqCst), 1);
    assert_eq!(t.active.load(Ordering::SeqCst), 0);
    assert!(
        t.failures.lock().unwrap().iter().any(|f| f.starts_with("CredSSP")),
        "the target did not refuse CredSSP: {:?}",
        t.failures.lock().unwrap()
    );

    // bob may not use alice's target: refused with insufficient privileges, the target never contacted.
    let (_, _bob) = env
        .s
        .create_user(&env.admin, "bob", "password_user", "bob passphrase 12")
        .await;
    let mut c = env.connect(&x, "bob#winadmin@nla2", "bob passphrase 12", &[], "bob.log");
    let st = c.wait_exit(WAIT);
    assert!(st.is_some_and(|s| !s.success()), "{st:?}\n{}", c.log());
    assert!(
        c.log().contains("ERRINFO_SERVER_INSUFFICIENT_PRIVILEGES"),
        "{}",
        c.log()
    );
    assert_eq!(
        t.connections.load(Ordering::SeqCst),
        1,
        "the forbidden target was contacted"
    );
    assert!(!logs().contains("a stale vaulted pw"));
    env.s.stop().await;
}

/// A one-time ticket works once with `/sec:nla` (the gateway is the CredSSP server towards the client) and
/// reaches the NLA target with the vaulted credentials; the second use is refused; an expired ticket is
/// refused; issue, use and refusals are audited; a ticket is not issued for an account the user may not use.
#[tokio::test(flavor = "multi_thread")]
async fn one_time_ticket_with_nla() {
    let mut env = RdpEnv::new(ALICE_PW, LOG_FILTER).await;
    let secret = common::canary();
    let t = NlaTarget::start("winadmin", &secret).await;
    let account = env.add_target("nla3", &t, "winadmin", &secret).await;
    let ticket = env.ticket(&env.alice, &account).await;
    let (user, pw) = (
        ticket["username"].as_str().unwrap().to_owned(),
        ticket["password"].as_str().unwrap().to_owned(),
    );
    assert!(
        ticket["rdp_file"]
            .as_str()
            .unwrap()
            .contains(&format!("username:s:{user}")),
        "{ticket}"
    );
    assert!(ticket["rdp_file"]
        .as_str()
        .unwrap()
        .contains("enablecredsspsupport:i:1"));
    assert!(ticket["expires_at"].is_string());

    let x = Xvfb::start();
    let c = env.connect(&x, &user, &pw, &["/sec:nla"], "ticket.log");
    let png = env.tmp.path().join("ticket.png");
    assert!(
        shows_the_picture(&x, &png),
        "the ticket client does not show the target's picture\nclient: {}\n{}",
        c.log(),
        logs()
    );
    drop(c);
    assert_eq!(t.active.load(Ordering::SeqCst), 1);
    let used = env.audit("rdp.ticket_use").await;
    assert!(
        used.iter()
            .any(|e| e["actor_name"] == "alice" && e["object_name"] == "winadmin@nla3"),
        "{used:?}"
    );
    let issued = env.audit("rdp.ticket_issue").await;
    assert!(issued.iter().any(|e| e["actor_name"] == "alice"), "{issued:?}");

    // Second use: CredSSP fails (the ticket is gone), xfreerdp exits with an error.
    let x2 = Xvfb::start();
    let mut again = env.connect(&x2, &user, &pw, &["/sec:nla"], "again.log");
    let st = again.wait_exit(WAIT);
    assert!(st.is_some_and(|s| !s.success()), "{st:?}\n{}", again.log());
    assert_eq!(
        t.connections.load(Ordering::SeqCst),
        1,
        "a second connection reached the target"
    );

    // A wrong one-time password under NLA voids the ticket (audited): the right one fails afterwards.
    let t2 = env.ticket(&env.alice, &account).await;
    let user2 = t2["username"].as_str().unwrap().to_owned();
    let mut wrong = env.connect(&x2, &user2, "not the one-time password", &["/sec:nla"], "wrong.log");
    let st = wrong.wait_exit(WAIT);
    assert!(st.is_some_and(|s| !s.success()), "{st:?}\n{}", wrong.log());
    let mut late = env.connect(&x2, &user2, t2["password"].as_str().unwrap(), &["/sec:nla"], "void.log");
    let st = late.wait_exit(WAIT);
    assert!(st.is_some_and(|s| !s.success()), "{st:?}\n{}", late.log());
    let refused = env.audit("rdp.ticket_refused").await;
    assert!(
        refused.iter().any(|e| e["actor_name"] == "alice"
            && e["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("wrong password under NLA")),
        "{refused:?}"
    );
    assert_eq!(
        t.connections.load(Ordering::SeqCst),
        1,
        "a refused ticket reached the target"
    );

    // A ticket for an account alice may not use is not issued (404, like every object one may not see).
    let (_, bob) = env
        .s
        .create_user(&env.admin, "bob", "password_user", "bob passphrase 12")
        .await;
    let r = env
        .s
        .req(
            "POST",
            &format!("/api/v1/accounts/{account}/rdp-ticket"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = env
        .s
        .req("POST", &format!("/api/v1/accounts/{account}/rdp-ticket"), None, None)
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(!logs().contains(&pw), "the ticket's password is in the log");
    env.s.stop().await;
}

/// A user with two-factor authentication cannot use RDP with the Postern password (the message names the
/// ticket) but connects with a ticket under TLS; an expired ticket is refused and audited.
#[tokio::test(flavor = "multi_thread")]
async fn totp_user_connects_with_a_ticket_and_expired_tickets_are_refused() {
    let mut env = Env::builder_with_ttl(4).await;
    let secret = common::canary();
    let t = NlaTarget::start("winadmin", &secret).await;
    let account = env.add_target("nla4", &t, "winadmin", &secret).await;
    // carol enrols TOTP; alice shares the account with her (connect).
    let (carol_id, carol) = env
        .s
        .create_user(&env.admin, "carol", "password_user", "carol passphrase 12")
        .await;
    env.s.enroll_totp(&carol).await;
    let r = env
        .s
        .req(
            "POST",
            "/api/v1/shares",
            Some(&env.alice),
            Some(json!({"user_id": carol_id, "account_id": account, "level": "connect"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let x = Xvfb::start();
    let mut refused = env.connect(&x, "carol#winadmin@nla4", "carol passphrase 12", &[], "carol-pw.log");
    let st = refused.wait_exit(WAIT);
    assert!(st.is_some_and(|s| !s.success()), "{st:?}");
    assert!(
        logs().contains("get a one-time RDP ticket"),
        "the refusal does not name the ticket"
    );

    let ticket = env.ticket(&carol, &account).await;
    let (user, pw) = (
        ticket["username"].as_str().unwrap().to_owned(),
        ticket["password"].as_str().unwrap().to_owned(),
    );
    let c = env.connect(&x, &user, &pw, &[], "carol-ticket.log");
    let png = env.tmp.path().join("carol.png");
    assert!(
        shows_the_picture(&x, &png),
        "carol's ticket did not connect\n{}\n{}",
        c.log(),
        logs()
            .lines()
            .filter(|l| l.contains("postern_gateway"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(c);

    // Expired (ttl 4 s): refused, audited.
    let late = env.ticket(&carol, &account).await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let x2 = Xvfb::start();
    let mut c = env.connect(
        &x2,
        late["username"].as_str().unwrap(),
        late["password"].as_str().unwrap(),
        &[],
        "late.log",
    );
    let st = c.wait_exit(WAIT);
    assert!(st.is_some_and(|s| !s.success()), "{st:?}\n{}", c.log());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let refused = env.audit("rdp.ticket_refused").await;
        let expired = env.audit("rdp.ticket_expired").await;
        if refused.iter().chain(expired.iter()).any(|e| e["actor_name"] == "carol") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{refused:?} {expired:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    env.s.stop().await;
}

impl Env {
    /// An environment whose tickets live `secs` seconds.
    async fn builder_with_ttl(secs: u64) -> Env {
        let builder = TestServer::builder().set("rdp.ticket_ttl", &format!("{secs}s"));
        RdpEnv::with(builder, ALICE_PW, LOG_FILTER).await
    }
}
