//! The RDP gateway against real peers: `xfreerdp` under Xvfb in, a real xrdp (private mount namespace) out.

mod common;

use std::time::Duration;

use common::rdp::{self, FreeRdp, Log, XrdpTarget, Xvfb};

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
    let _bad = FreeRdp::connect(&x2, t.port, "carol", "not her password", &[], &tmp.path().join("bad.log"));
    assert!(t.wait_for_log(Log::Sesman, "AUTHFAIL: user=carol", WAIT), "{}", t.logs());
    assert!(t.wait_for_log(Log::Xrdp, "login failed for user carol", WAIT), "{}", t.logs());
    assert!(!t.log(Log::Xrdp).contains("login successful for user carol"));
}
