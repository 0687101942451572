//! The graphical account picker of the RDP gateway (a plain `USER` login with several RDP accounts), against
//! real peers: `xfreerdp` under Xvfb in (keys and clicks sent with xdotool), a real xrdp out.

mod common;
#[path = "common/rdp_nla.rs"]
mod rdp_nla;

use std::path::Path;
use std::time::Duration;

use common::rdp::{self, FreeRdp, Log, XrdpTarget, Xvfb};
use common::rdp_env::{eventually, logs, no_canary_in_any_argv, RdpEnv};
use common::TestServer;
use rdp_nla::NlaTarget;

const WAIT: Duration = Duration::from_secs(30);
const ALICE_PW: &str = "alice passphrase 123";
/// The log filter of this binary: debug, without the NLA target's own crate (it logs the target's credentials;
/// it is not Postern) and sspi below warn (as the binary always has it).
const LOG_FILTER: &str = "debug,ironrdp_acceptor=off,sspi=warn";

/// The picker's colours and geometry (gateway/src/rdp/picker.rs): the selected row's highlight and the
/// background, sampled at the left edge of the first and second rows (the client's window is at the display's
/// top-left corner: no window manager).
const SELECTED: &str = "#2E6DB4";
const BACKGROUND: &str = "#101C2C";
const ROW1: (u32, u32) = (20, 100);
const ROW2: (u32, u32) = (20, 126);
/// Where a click lands on the second row (its text).
const ROW2_CLICK: (&str, &str) = ("200", "135");

fn connect(env: &RdpEnv, x: &Xvfb, log: &str) -> FreeRdp {
    FreeRdp::connect(x, env.rdp_port, "alice", ALICE_PW, &[], &env.tmp.path().join(log))
}

/// Connects as alice and waits until the client shows the picker (row 1 selected); panics with both logs if not.
async fn connect_to_picker(env: &RdpEnv, x: &Xvfb, png: &Path, log: &str) -> FreeRdp {
    let c = connect(env, x, log);
    if let Err(seen) = screen_shows(x, png, ROW1, SELECTED).await {
        panic!(
            "the client does not show the picker (row 1 is {seen})\n--- xfreerdp ---\n{}\n--- gateway ---\n{}",
            c.log(),
            logs()
        );
    }
    c
}

/// Waits until the client's screen shows `colour` at `at` (screenshots of its display); the colour last seen.
async fn screen_shows(x: &Xvfb, png: &Path, at: (u32, u32), colour: &str) -> Result<(), String> {
    let mut seen = String::new();
    for _ in 0..100 {
        x.screenshot(png);
        seen = rdp::pixel(png, at.0, at.1);
        if seen == colour {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(seen)
}

/// The target's session: a green desktop and an xlogo window.
const STARTWM: &str = "#!/bin/sh\n\
xsetroot -solid '#3c8a2e'\n\
xlogo -geometry 260x200+40+40 &\n\
exec sleep 86400\n";
const DESKTOP: &str = "#3C8A2E";

/// Points of the 800x600 screen sampled to compare what the client shows with what was recorded.
fn sample_points() -> impl Iterator<Item = (u32, u32)> {
    (0..5).flat_map(|i| (0..4).map(move |j| (80 + i * 160, 60 + j * 150)))
}

/// The colours at [`sample_points`] of a screenshot.
fn samples(png: &Path) -> Vec<String> {
    sample_points().map(|(x, y)| rdp::pixel(png, x, y)).collect()
}

/// Waits until an audit event with `action` satisfies `f`.
async fn audited(env: &RdpEnv, action: &str, f: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for _ in 0..100 {
        all = env.audit(action).await;
        if all.iter().any(&f) {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no matching {action} audit event in {all:?}");
}

/// xfreerdp → Postern as plain `alice` (her Postern password), who may use two xrdp accounts: the client shows
/// the picker (the first row highlighted); Down moves the highlight to the second row, Enter connects it; xrdp
/// logs in the chosen vaulted account (not the other), the client is reactivated towards the target and shows
/// its desktop, the pick and the session are audited with the account, and the vaulted passwords are in no log
/// line, argv or audit event.
#[tokio::test(flavor = "multi_thread")]
async fn plain_user_picks_the_second_account_with_the_keyboard() {
    let mut env = RdpEnv::new(ALICE_PW, LOG_FILTER).await;
    let (one, two) = (common::canary(), common::canary());
    let t = XrdpTarget::start(&[("winone", &one), ("wintwo", &two)]);
    // A desktop the screenshots can tell from the picker and from black: a green root window and xlogo.
    let (code, out, err) = t.exec_in_ns(&format!(
        "cat > /etc/xrdp/startwm.sh <<'EOF'\n{STARTWM}EOF\nchmod 755 /etc/xrdp/startwm.sh"
    ));
    assert_eq!(code, 0, "{out}{err}");
    let rid = env.windows_resource("rdp1", t.port).await;
    env.s.create_account(&env.alice, &rid, "winone", &one).await;
    env.s.create_account(&env.alice, &rid, "wintwo", &two).await;
    let x = Xvfb::start();
    let png = env.tmp.path().join("picker.png");
    let mut c = connect_to_picker(&env, &x, &png, "picker.log").await;
    assert_eq!(
        rdp::pixel(&png, ROW2.0, ROW2.1),
        BACKGROUND,
        "row 2 is not drawn unselected"
    );
    // The title (its yellow) and the rows' text (light) are there too.
    assert!(c.try_wait().is_none(), "xfreerdp exited: {}", c.log());
    // The pointer into the window (without a window manager the keyboard focus follows it), then Down.
    x.xdotool(&["mousemove", "400", "300"]);
    x.xdotool(&["key", "Down"]);
    if let Err(seen) = screen_shows(&x, &png, ROW2, SELECTED).await {
        panic!("Down did not highlight row 2 (it is {seen})\n{}", c.log());
    }
    assert_eq!(
        rdp::pixel(&png, ROW1.0, ROW1.1),
        BACKGROUND,
        "row 1 is still highlighted"
    );
    // The picker went through the target's nothing so far.
    assert!(!t.log(Log::Xrdp).contains("receive connection request"), "{}", t.logs());
    x.xdotool(&["key", "Return"]);
    let ok = t.wait_for_log(
        Log::Sesman,
        "++ created session (access granted): username wintwo",
        WAIT,
    );
    assert!(
        ok,
        "{}\n--- xfreerdp ---\n{}\n--- gateway ---\n{}",
        t.logs(),
        c.log(),
        logs()
            .lines()
            .filter(|l| l.contains("rdp_session") && !l.contains("sqlx"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        t.wait_for_log(Log::Xrdp, "login successful for user wintwo on display", WAIT),
        "{}",
        t.logs()
    );
    assert!(!t.log(Log::Sesman).contains("username winone"), "{}", t.logs());
    // The client took the reactivation: it still runs and its screen is the target's now, not the picker.
    let mut left_picker = false;
    for _ in 0..100 {
        x.screenshot(&png);
        if rdp::pixel(&png, ROW1.0, ROW1.1) != BACKGROUND && rdp::pixel(&png, ROW2.0, ROW2.1) != SELECTED {
            left_picker = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(left_picker, "the client still shows the picker\n{}", c.log());
    assert!(c.try_wait().is_none(), "xfreerdp exited: {}", c.log());
    let registry = env.s.running.as_ref().unwrap().registry.clone();
    assert!(
        eventually(WAIT, || registry
            .list()
            .iter()
            .any(|s| s.protocol == "rdp" && s.user == "alice" && s.target == "wintwo@rdp1"))
        .await,
        "{:?}",
        registry.list()
    );
    audited(&env, "rdp.pick", |e| {
        e["actor_name"] == "alice" && e["object_name"] == "wintwo@rdp1" && e["outcome"] == "success"
    })
    .await;
    audited(&env, "session.start", |e| {
        e["object_name"] == "wintwo@rdp1"
            && e["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("picked in the account picker")
    })
    .await;
    no_canary_in_any_argv(&one);
    no_canary_in_any_argv(&two);
    let id = registry.list()[0].id.clone();
    // The target's desktop, drawn: more than one colour on the client's screen, the same twice in a row.
    let mut prev: Vec<String> = Vec::new();
    let mut settled = false;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        x.screenshot(&png);
        let now = samples(&png);
        if now == prev && now.iter().any(|c| c == DESKTOP) {
            settled = true;
            break;
        }
        prev = now;
    }
    assert!(
        settled,
        "the client's screen did not settle on a drawn desktop: {prev:?}\n{}\n--- gateway ---\n{}\n{}",
        c.log(),
        logs()
            .lines()
            .filter(|l| l.contains("rdp_session") && !l.contains("sqlx"))
            .collect::<Vec<_>>()
            .join("\n"),
        t.logs()
    );
    drop(c);
    audited(&env, "session.end", |e| e["object_name"] == "wintwo@rdp1").await;
    // The session was recorded from the target's Demand Active on (the picker is not in it): the recording is
    // sealed and verifies, and its last frame is the target's desktop at the client's size, not the picker.
    let details = env
        .s
        .recording_when(&id, &env.admin, |d| d["recording"]["status"] == "sealed")
        .await;
    assert_eq!(details["recording"]["protocol"], "rdp", "{details}");
    assert_eq!(details["verification"]["ok"], true, "{details}");
    let path = env.s.data_dir().join("recordings").join(format!("{id}.pcast"));
    let frame = postern_recorder::rdp::render_at(&path, 3_600_000_000).expect("the recording renders");
    assert_eq!((frame.width, frame.height), (800, 600));
    let px = |x: usize, y: usize| {
        let i = (y * 800 + x) * 4;
        format!(
            "#{:02X}{:02X}{:02X}",
            frame.rgba[i],
            frame.rgba[i + 1],
            frame.rgba[i + 2]
        )
    };
    assert_ne!(
        px(ROW1.0 as usize, ROW1.1 as usize),
        SELECTED,
        "the recording shows the picker"
    );
    let lit = frame.rgba.chunks(4).filter(|p| p[..3] != [0, 0, 0]).count();
    let recorded: Vec<String> = sample_points().map(|(x, y)| px(x as usize, y as usize)).collect();
    assert_eq!(
        recorded, prev,
        "the recording's last frame differs from the client's screen"
    );
    let mut player = postern_recorder::rdp::Player::open(&path);
    let _ = player.frame_at(3_600_000_000);
    assert!(
        lit > 800 * 600 / 2,
        "the recorded desktop is mostly black ({lit} pixels lit; {} bytes of server stream; decoder errors {:?})",
        postern_recorder::rdp::server_stream_len(&path).unwrap_or(0),
        player.errors()
    );
    let all = env.audit("").await;
    assert!(!all
        .iter()
        .any(|e| e.to_string().contains(&one) || e.to_string().contains(&two)));
    env.s.stop().await;
    let text = logs();
    assert!(text.contains("showing the RDP account picker"), "{text}");
    assert!(
        !text.contains(&one) && !text.contains(&two),
        "a vaulted password is in Postern's log"
    );
    assert!(!text.contains(ALICE_PW), "the user's password is in Postern's log");
}

/// Leaving the picker: Esc ends the client's connection with a reason it reports, a closed client ends the
/// picker too, and both are audited as `rdp.pick_abandoned`. A click on a row whose target is down connects
/// it: the client is told the connection was denied and the failure is audited with the account.
#[tokio::test(flavor = "multi_thread")]
async fn esc_disconnect_and_a_target_that_is_down() {
    let mut env = RdpEnv::new(ALICE_PW, LOG_FILTER).await;
    // Nothing listens on these ports: the picker never contacts the targets.
    let (p1, p2) = (common::sshd::free_port(), common::sshd::free_port());
    let r1 = env.windows_resource("down1", p1).await;
    let r2 = env.windows_resource("down2", p2).await;
    env.s.create_account(&env.alice, &r1, "winone", "pw one 123").await;
    env.s.create_account(&env.alice, &r2, "wintwo", "pw two 123").await;
    let x = Xvfb::start();
    let png = env.tmp.path().join("esc.png");

    let mut c = connect_to_picker(&env, &x, &png, "esc.log").await;
    x.xdotool(&["mousemove", "400", "300"]);
    x.xdotool(&["key", "Escape"]);
    let st = c.wait_exit(WAIT);
    assert!(st.is_some(), "xfreerdp still connected after Esc\n{}", c.log());
    assert!(
        c.log().contains("ERRINFO_RPC_INITIATED_DISCONNECT_BY_USER"),
        "{}",
        c.log()
    );
    audited(&env, "rdp.pick_abandoned", |e| {
        e["actor_name"] == "alice" && e["detail"].as_str().unwrap_or_default().contains("pressed Esc")
    })
    .await;

    let c = connect_to_picker(&env, &x, &png, "gone.log").await;
    drop(c);
    audited(&env, "rdp.pick_abandoned", |e| {
        e["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("the client disconnected")
    })
    .await;

    let mut c = connect_to_picker(&env, &x, &png, "down.log").await;
    x.xdotool(&["mousemove", ROW2_CLICK.0, ROW2_CLICK.1, "click", "1"]);
    let st = c.wait_exit(WAIT);
    assert!(st.is_some_and(|s| !s.success()), "xfreerdp: {st:?}\n{}", c.log());
    assert!(c.log().contains("ERRINFO_SERVER_DENIED_CONNECTION"), "{}", c.log());
    audited(&env, "rdp.pick", |e| e["object_name"] == "wintwo@down2").await;
    audited(&env, "session.connect_failed", |e| {
        e["object_name"] == "wintwo@down2" && e["outcome"] == "failure"
    })
    .await;
    assert!(env.s.running.as_ref().unwrap().registry.list().is_empty());
    env.s.stop().await;
}

/// A picker left untouched ends after the RDP front end's login timeout (`ssh.login_grace_time`, here 3 s): the
/// client reports the idle timeout and exits, and `rdp.pick_abandoned` says why.
#[tokio::test(flavor = "multi_thread")]
async fn an_untouched_picker_ends_after_the_login_grace_time() {
    let builder = TestServer::builder().set("ssh.login_grace_time", "3s");
    let mut env = RdpEnv::with(builder, ALICE_PW, LOG_FILTER).await;
    for (name, login) in [("idle1", "winone"), ("idle2", "wintwo")] {
        let rid = env.windows_resource(name, common::sshd::free_port()).await;
        env.s.create_account(&env.alice, &rid, login, "pw 123 456").await;
    }
    let x = Xvfb::start();
    let png = env.tmp.path().join("idle.png");
    let mut c = connect_to_picker(&env, &x, &png, "idle.log").await;
    let st = c.wait_exit(WAIT);
    assert!(st.is_some(), "xfreerdp still connected\n{}", c.log());
    assert!(c.log().contains("ERRINFO_IDLE_TIMEOUT"), "{}", c.log());
    audited(&env, "rdp.pick_abandoned", |e| {
        e["detail"].as_str().unwrap_or_default().contains("no input for 3s")
    })
    .await;
    env.s.stop().await;
}

/// The picker in front of an NLA target (IronRDP's acceptor) and a target that is down, listed first: typing
/// filters the list down to the NLA target's account, Enter connects it with CredSSP and the vaulted
/// credentials; that target skips licensing ("valid client") and the client is reactivated towards it (its
/// screen shows the target's picture).
#[tokio::test(flavor = "multi_thread")]
async fn typing_filters_to_an_nla_target_and_enter_connects_it() {
    let mut env = RdpEnv::new(ALICE_PW, LOG_FILTER).await;
    let secret = common::canary();
    let t = NlaTarget::start("winadmin", &secret).await;
    let rid = env.windows_resource("nla1", t.port).await;
    env.s.create_account(&env.alice, &rid, "winadmin", &secret).await;
    let down = env.windows_resource("aaa-down", common::sshd::free_port()).await;
    env.s.create_account(&env.alice, &down, "zed", "pw 123 456").await;
    let x = Xvfb::start();
    let png = env.tmp.path().join("nla.png");
    let mut c = connect_to_picker(&env, &x, &png, "nla.log").await;
    x.xdotool(&["mousemove", "400", "300"]);
    x.xdotool(&["type", "--delay", "50", "nla1"]);
    x.xdotool(&["key", "Return"]);
    let mut shown = false;
    for _ in 0..100 {
        x.screenshot(&png);
        if rdp::pixel(&png, 200, 300) == rdp_nla::LEFT && rdp::pixel(&png, 600, 300) == rdp_nla::RIGHT {
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        shown,
        "the client does not show the NLA target's picture\n{}\ntarget failures: {:?}\n{}",
        c.log(),
        t.failures.lock().unwrap(),
        logs()
            .lines()
            .filter(|l| l.contains("rdp_session") && !l.contains("sqlx"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(c.try_wait().is_none(), "xfreerdp exited: {}", c.log());
    assert_eq!(t.active.load(std::sync::atomic::Ordering::SeqCst), 1);
    audited(&env, "rdp.pick", |e| e["object_name"] == "winadmin@nla1").await;
    audited(&env, "session.start", |e| {
        e["object_name"] == "winadmin@nla1" && e["detail"].as_str().unwrap_or_default().contains("NLA (CredSSP/NTLM)")
    })
    .await;
    assert!(
        env.audit("session.connect_failed").await.is_empty(),
        "the target that is down was not picked"
    );
    no_canary_in_any_argv(&secret);
    drop(c);
    env.s.stop().await;
    assert!(!logs().contains(&secret), "the vaulted password is in Postern's log");
}
