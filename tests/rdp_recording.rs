//! RDP sessions are recorded: `xfreerdp` under Xvfb → Postern → a real xrdp; the recording verifies (and fails
//! to once tampered with), and the frame rendered from it at the time of a screenshot of the client matches
//! that screenshot.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::rdp::{FreeRdp, Log, XrdpTarget, Xvfb};
use common::rdp_env::{eventually, windows_resource, RdpEnv};
use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);
/// Postern's own warnings only: these tests read recordings, not logs.
const LOG_FILTER: &str = "warn";
const ALICE_PW: &str = "alice passphrase 123";
/// The client's desktop (FreeRdp::connect asks for 800x600); xfreerdp's window sits at the top left of Xvfb's
/// screen (no window manager).
const W: usize = 800;
const H: usize = 600;

/// What the target's session shows: a coloured background, a logo and a text window, drawn by X clients
/// started from xrdp's `startwm.sh` (the harness's default runs nothing: a uniform black desktop).
const STARTWM: &str = "#!/bin/sh\n\
xsetroot -solid '#2e5c8a'\n\
xlogo -geometry 260x200+40+40 &\n\
xmessage -geometry +360+140 'Postern records RDP: the quick brown fox jumps over the lazy dog' &\n\
exec sleep 86400\n";

/// The client's screen (the desktop area) as RGB bytes.
fn screen_rgb(x: &Xvfb, dir: &Path, name: &str) -> Vec<u8> {
    let png = dir.join(format!("{name}.png"));
    x.screenshot(&png);
    png_rgb(&png)
}

/// RGB bytes of the top-left 800x600 of an image file (ImageMagick).
fn png_rgb(png: &Path) -> Vec<u8> {
    let out = Command::new("convert")
        .arg(png)
        .args(["-crop", &format!("{W}x{H}+0+0"), "-depth", "8", "rgb:-"])
        .output()
        .expect("run convert");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), W * H * 3, "convert gave {} bytes", out.stdout.len());
    out.stdout
}

/// Share of pixels whose channels all differ by at most `delta`.
fn similarity(a: &[u8], b: &[u8], delta: u8) -> f64 {
    let same = a
        .chunks_exact(3)
        .zip(b.chunks_exact(3))
        .filter(|(p, q)| p.iter().zip(q.iter()).all(|(x, y)| x.abs_diff(*y) <= delta))
        .count();
    same as f64 / (a.len() / 3) as f64
}

/// (distinct colours, share of the most common colour) of an RGB image: a black frame is (1, 1.0).
fn colours(rgb: &[u8]) -> (usize, f64) {
    let mut v: Vec<[u8; 3]> = rgb.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
    v.sort_unstable();
    let (mut distinct, mut best, mut run) = (0, 0, 0);
    for i in 0..v.len() {
        if i == 0 || v[i] != v[i - 1] {
            distinct += 1;
            run = 0;
        }
        run += 1;
        best = best.max(run);
    }
    (distinct, best as f64 / v.len().max(1) as f64)
}

/// A drawn desktop: several colours, none covering 95 % of it.
fn drawn(rgb: &[u8]) -> bool {
    let (n, top) = colours(rgb);
    n >= 3 && top < 0.95
}

fn rgba_to_rgb_crop(f: &postern_recorder::rdp::Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(W * H * 3);
    for y in 0..H.min(usize::from(f.height)) {
        for x in 0..W.min(usize::from(f.width)) {
            let i = (y * usize::from(f.width) + x) * 4;
            out.extend_from_slice(&f.rgba[i..i + 3]);
        }
    }
    out
}

/// CPU seconds used so far by this process's thread named `comm` (the recording's writer thread).
fn thread_cpu(comm_prefix: &str) -> Option<f64> {
    let tick = 100.0; // USER_HZ
    for e in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(comm_prefix) {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let (u, s): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
            return Some((u + s) / tick);
        }
    }
    None
}

/// Types `text` (lower-case letters, digits, space) on X display `:display` through the XTEST extension,
/// speaking the X11 protocol over the display's abstract socket (no xdotool needed): the keys go to the window
/// under the pointer, which is first moved to (100, 100).
fn type_on(display: u32, text: &str) {
    use std::io::{Read, Write};
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(format!("/tmp/.X11-unix/X{display}")).unwrap();
    let mut x = std::os::unix::net::UnixStream::connect_addr(&addr).expect("connect to Xvfb");
    // Connection setup: little-endian, protocol 11.0, no authorization.
    x.write_all(&[b'l', 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    let mut head = [0u8; 8];
    x.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 1, "X connection refused");
    let mut rest = vec![0u8; usize::from(u16::from_le_bytes([head[6], head[7]])) * 4];
    x.read_exact(&mut rest).unwrap();
    // QueryExtension "XTEST".
    let mut q = vec![98, 0, 4, 0, 5, 0, 0, 0];
    q.extend_from_slice(b"XTEST\0\0\0");
    x.write_all(&q).unwrap();
    let mut reply = [0u8; 32];
    x.read_exact(&mut reply).unwrap();
    assert!(reply[0] == 1 && reply[8] == 1, "no XTEST extension");
    let major = reply[9];
    let fake = |kind: u8, detail: u8, rx: i16, ry: i16| {
        let mut r = vec![major, 2, 9, 0, kind, detail, 0, 0];
        r.extend_from_slice(&[0u8; 16]); // time (now), root (none), padding
        r.extend_from_slice(&rx.to_le_bytes());
        r.extend_from_slice(&ry.to_le_bytes());
        r.extend_from_slice(&[0u8; 8]);
        r
    };
    // Keycodes of Xvfb's default (evdev) keymap.
    let keycode = |c: char| -> u8 {
        const ROWS: [(&str, u8); 4] = [
            ("1234567890", 10),
            ("qwertyuiop", 24),
            ("asdfghjkl", 38),
            ("zxcvbnm", 52),
        ];
        if c == ' ' {
            return 65;
        }
        ROWS.iter()
            .find_map(|(row, first)| row.find(c).map(|i| first + i as u8))
            .unwrap_or_else(|| panic!("cannot type {c:?}"))
    };
    let mut out = fake(6, 0, 100, 100); // MotionNotify, absolute
    for c in text.chars() {
        out.extend(fake(2, keycode(c), 0, 0)); // KeyPress
        out.extend(fake(3, keycode(c), 0, 0)); // KeyRelease
    }
    // GetInputFocus: its reply means every request before it was processed.
    out.extend_from_slice(&[43, 0, 1, 0]);
    x.write_all(&out).unwrap();
    // Events (MappingNotify…) may come first; an error (0) fails.
    loop {
        x.read_exact(&mut reply).unwrap();
        assert_ne!(reply[0], 0, "X error {:?}", &reply[..4]);
        if reply[0] == 1 {
            break;
        }
    }
}

/// Runs `tests/e2e/rdp_player.mjs` in headless Chromium against `s` (logged in as the admin) with `env`;
/// returns its RESULT.
async fn browser(s: &TestServer, env: Vec<(&'static str, String)>) -> Value {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing (tests/run.sh installs chromium)"
    );
    ensure_e2e_deps();
    let (base, script) = (s.base.clone(), e2e_dir().join("rdp_player.mjs"));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .env("POSTERN_URL", base)
            .env("POSTERN_PW", ADMIN_PW)
            .env("CHROMIUM", chromium)
            .envs(env)
            .output()
    })
    .await
    .unwrap()
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    serde_json::from_str(line).unwrap()
}

/// The server's recording public key.
fn public_key(s: &TestServer) -> postern_recorder::VerifyingKey {
    let key_hex = std::fs::read_to_string(s.data_dir().join("recording-signing.pub")).unwrap();
    let mut kb = [0u8; 32];
    hex::decode_to_slice(key_hex.trim(), &mut kb).unwrap();
    postern_recorder::VerifyingKey::from_bytes(&kb).unwrap()
}

/// CPU seconds used so far by this whole process (the in-process server: relay, TLS both ways, recorder).
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// A session through Postern is recorded (protocol rdp, listed and verified by the API); the frame rendered at
/// the time of a screenshot of the client (taken once the desktop settled) matches it; keystrokes are not
/// needed for that. A flipped byte makes verification fail.
#[tokio::test(flavor = "multi_thread")]
async fn an_rdp_session_is_recorded_verifies_and_renders_what_the_client_showed() {
    let builder = TestServer::builder().set("recording.record_input", "true");
    let RdpEnv {
        mut s,
        admin,
        alice,
        rdp_port,
        tmp,
    } = RdpEnv::with(builder, ALICE_PW, LOG_FILTER).await;

    let secret = common::canary();
    let t = XrdpTarget::start(&[("winuser", &secret)]);
    let (code, out, err) = t.exec_in_ns(&format!(
        "cat > /etc/xrdp/startwm.sh <<'EOF'\n{STARTWM}EOF\nchmod 755 /etc/xrdp/startwm.sh"
    ));
    assert_eq!(code, 0, "{out}{err}");
    let rid = windows_resource(&s, &alice, "rdp1", t.port).await;
    s.create_account(&alice, &rid, "winuser", &secret).await;

    let x = Xvfb::start();
    let mut c = FreeRdp::connect(
        &x,
        rdp_port,
        "alice#winuser@rdp1",
        ALICE_PW,
        // The client offers the graphics pipeline: the gateway withdraws it towards the target (re-encoding the
        // MCS Connect Initial, which xrdp must accept), so the target sends bitmaps the recording renders.
        &["/gfx"],
        &tmp.path().join("client.log"),
    );
    let registry = s.running.as_ref().unwrap().registry.clone();
    assert!(
        eventually(WAIT, || registry.list().iter().any(|s| s.protocol == "rdp")).await,
        "no live RDP session\n{}\n{}",
        t.logs(),
        c.log()
    );
    let t0 = Instant::now();
    let id = registry.list()[0].id.clone();
    assert!(
        t.wait_for_log(Log::Xrdp, "login successful for user winuser on display", WAIT),
        "{}",
        t.logs()
    );

    // The desktop settled: two screenshots 1.5 s apart are the same, and show more than one colour.
    let mut prev = screen_rgb(&x, tmp.path(), "shot");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (shot, shot_at) = loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let at = t0.elapsed();
        let now = screen_rgb(&x, tmp.path(), "shot");
        if now == prev && drawn(&now) {
            break (now, at);
        }
        if Instant::now() > deadline {
            let keep = std::env::temp_dir().join(format!("rdp-recording-{id}"));
            let _ = Command::new("cp").arg("-r").arg(tmp.path()).arg(&keep).status();
            panic!(
                "the client's desktop did not settle on a drawn screen ({:?} colours; kept in {})\n{}\n{}",
                colours(&now),
                keep.display(),
                c.log(),
                t.logs()
            );
        }
        prev = now;
    };
    // The screenshot is not a uniform frame: the test can fail on a black rendering.
    assert!(
        drawn(&shot),
        "the client shows a near-uniform screen: {:?}",
        colours(&shot)
    );
    let writer = format!("rec-{}", &id[..10]);
    let cpu = thread_cpu(&writer);

    // Live view, joining late: the watch WebSocket sends PNG frames of the whole desktop; the first one shows
    // what the client shows.
    let mut live = ws::connect(&s, &format!("/api/v1/sessions/{id}/watch"), Some(&admin), None)
        .await
        .expect("watch the RDP session");
    let first = match tokio::time::timeout(WAIT, live.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => b,
        other => panic!("no live frame: {other:?}"),
    };
    assert!(first.starts_with(b"\x89PNG\r\n\x1a\n"), "a live frame is a PNG");
    let live_png = tmp.path().join("live.png");
    std::fs::write(&live_png, &first).unwrap();
    let live_sim = similarity(&png_rgb(&live_png), &shot, 24);
    assert!(
        live_sim >= 0.97,
        "the live frame matches {:.2} % of the screenshot",
        live_sim * 100.0
    );

    // The console's live view: Sessions → Watch shows the same desktop on a canvas.
    let points = [(100usize, 100usize), (400, 300), (700, 500), (450, 155)];
    let spec = points
        .iter()
        .map(|(x, y)| format!("{x},{y}"))
        .collect::<Vec<_>>()
        .join(";");
    let r = browser(&s, vec![("POSTERN_LIVE", id.clone()), ("POSTERN_POINTS", spec)]).await;
    assert_eq!(r["ok"], true, "{r:#}");
    assert!(
        r["url"].as_str().unwrap_or_default().ends_with("/watch?protocol=rdp"),
        "{r:#}"
    );
    for (i, (x, y)) in points.iter().enumerate() {
        let want = &shot[(y * W + x) * 3..][..3];
        let got: Vec<u8> = r["live"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        assert!(
            got.iter().zip(want).all(|(a, b)| a.abs_diff(*b) <= 24),
            "live pixel ({x}, {y}) is {got:?}, the client shows {want:?}"
        );
    }

    // Keystrokes (input is recorded here): typed on the client, found by search once the recording is indexed.
    type_on(x.display, "echo rdpneedle42");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // End the session from the web; the recording is sealed.
    let r = s
        .req(
            "DELETE",
            &format!("/api/v1/sessions/{id}"),
            Some(&admin),
            Some(json!({"reason": "end of test"})),
        )
        .await;
    assert!(r.status < 300, "{} {}", r.status, r.text);
    assert!(c.wait_exit(WAIT).is_some(), "xfreerdp still connected");
    // The viewer is told the session ended.
    let close = loop {
        match tokio::time::timeout(WAIT, live.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => break f,
            Ok(Some(Ok(_))) => {}
            other => panic!("the watch ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1000));
    let session_secs = t0.elapsed().as_secs_f64();
    let details = s
        .recording_when(&id, &admin, |d| d["recording"]["status"] == "sealed")
        .await;
    assert_eq!(details["recording"]["protocol"], "rdp", "{details}");
    assert_eq!(details["verification"]["ok"], true, "{details}");
    assert_eq!(details["verification"]["truncated"], false, "{details}");
    let list = s
        .req("GET", "/api/v1/recordings?protocol=rdp", Some(&admin), None)
        .await;
    assert!(
        list.body.as_array().unwrap().iter().any(|r| r["id"] == id.as_str()),
        "{}",
        list.text
    );
    let path = s.data_dir().join("recordings").join(format!("{id}.pcast"));
    let vk = public_key(&s);
    let v = postern_recorder::verify(&path, &vk).expect("the recording verifies");
    assert!(!v.truncated && v.chunks > 0, "{v:?}");

    // The frame at the screenshot's time matches the screenshot.
    let frame = postern_recorder::rdp::render_at(&path, shot_at.as_micros() as u64).unwrap();
    assert_eq!((frame.width, frame.height), (W as u16, H as u16));
    let rendered = rgba_to_rgb_crop(&frame);
    let sim = similarity(&rendered, &shot, 24);
    if sim < 0.97 {
        std::fs::write(tmp.path().join("rendered.png"), frame.png()).unwrap();
        let keep = std::env::temp_dir().join(format!("rdp-recording-{id}"));
        let _ = Command::new("cp").arg("-r").arg(tmp.path()).arg(&keep).status();
        panic!(
            "the rendered frame matches {:.2} % of the screenshot's pixels (kept in {})",
            sim * 100.0,
            keep.display()
        );
    }
    let mut found = String::new();
    for _ in 0..100 {
        found = s
            .req("GET", "/api/v1/recordings/search?q=rdpneedle42", Some(&admin), None)
            .await
            .text;
        if found.contains(&id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(found.contains(&id) && found.contains("echo rdpneedle42"), "{found}");

    // Before the target drew anything the frame is black: rendering depends on the offset.
    let start = postern_recorder::rdp::render_at(&path, 0).unwrap();
    assert!(similarity(&rgba_to_rgb_crop(&start), &shot, 24) < 0.5);
    // And the frame API serves it as a PNG that ImageMagick reads, with the same pixels.
    let r = s
        .client
        .get(format!(
            "{}/api/v1/recordings/{id}/frame?at={:.3}",
            s.base,
            shot_at.as_secs_f64()
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let png = r.bytes().await.unwrap();
    let api_png = tmp.path().join("api.png");
    std::fs::write(&api_png, &png).unwrap();
    let api_rgb = png_rgb(&api_png);
    assert!(similarity(&api_rgb, &shot, 24) >= 0.97);

    // The route's rules: a token is needed, unknown recordings and bad offsets are refused, the first frame a
    // user asks for is audited once (not once per frame).
    let anon = s
        .client
        .get(format!("{}/api/v1/recordings/{id}/frame?at=1", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    let unknown = s
        .req(
            "GET",
            "/api/v1/recordings/00000000-0000-4000-8000-000000000000/frame?at=1",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    let bad = s
        .req(
            "GET",
            &format!("/api/v1/recordings/{id}/frame?at=-3"),
            Some(&admin),
            None,
        )
        .await;
    assert!(bad.status == 400 || bad.status == 422, "{} {}", bad.status, bad.text);
    let plays = s
        .req(
            "GET",
            "/api/v1/audit?action=recording.play&limit=100",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(plays.body.as_array().map(|a| a.len()), Some(1), "{}", plays.text);
    let r = s
        .client
        .get(format!("{}/api/v1/recordings/{id}/frame?at=0.5", s.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Cost of the recording, for the report.
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "RDP recording: {size} bytes on disk for {session_secs:.1} s ({:.0} KiB/min); writer thread CPU {} s; {} events in {} chunks; frame match {:.2} %",
        size as f64 / 1024.0 / (session_secs / 60.0),
        cpu.map_or("?".into(), |c| format!("{c:.2}")),
        v.events,
        v.chunks,
        sim * 100.0
    );

    // Neither the vaulted password nor the user's is in what was recorded (both streams, UTF-8 or UTF-16).
    let (server, client) = postern_recorder::rdp::streams(&path).unwrap();
    assert!(!server.is_empty() && !client.is_empty());
    for pw in [secret.as_str(), ALICE_PW] {
        let utf16: Vec<u8> = pw.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        for stream in [&server, &client] {
            assert!(!contains_bytes(stream, pw), "a password in the recording");
            assert!(
                !stream.windows(utf16.len()).any(|w| w == utf16),
                "a password in the recording (UTF-16)"
            );
        }
    }

    // One flipped byte in the middle: verification names the damage.
    let bad = tmp.path().join("tampered.pcast");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&bad, &bytes).unwrap();
    // `postern verify FILE`, as for SSH recordings: exit 0 for the recording, 1 for the tampered copy.
    let cli = |f: &Path| {
        let o = bin()
            .arg("--data-dir")
            .arg(s.data_dir())
            .arg("verify")
            .arg(f)
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let (code, out) = cli(&path);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("recording OK: sealed and signed"), "{out}");
    let (code, out) = cli(&bad);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("recording BAD"), "{out}");
    let e = postern_recorder::verify(&bad, &vk).expect_err("a tampered recording must not verify");
    assert!(
        matches!(
            e,
            postern_recorder::Error::Corrupt { .. } | postern_recorder::Error::BadSignature { .. }
        ),
        "{e}"
    );
    s.stop().await;
}

/// A busy desktop: the target repaints the whole screen with an incompressible noise image and a gradient,
/// alternately, 40 times, then stops on the gradient. The session keeps up, its recording verifies and is not
/// marked as having lost data, and the last frame matches the client's screen. Prints the recorder's cost.
#[tokio::test(flavor = "multi_thread")]
async fn a_busy_rdp_session_is_recorded_whole() {
    let RdpEnv {
        mut s,
        admin,
        alice,
        rdp_port,
        tmp,
    } = RdpEnv::new(ALICE_PW, LOG_FILTER).await;
    let t = XrdpTarget::start(&[("busy", "busy target pw")]);
    let startwm = "#!/bin/sh\n\
convert -size 800x600 xc: +noise Random /tmp/noise.png\n\
convert -size 800x600 gradient:navy-orange /tmp/grad.png\n\
touch /tmp/started\n\
i=0\n\
while [ $i -lt 40 ]; do display -window root /tmp/noise.png; display -window root /tmp/grad.png; i=$((i+1)); done\n\
touch /tmp/done\n\
exec sleep 86400\n";
    let (code, out, err) = t.exec_in_ns(&format!(
        "cat > /etc/xrdp/startwm.sh <<'EOF'\n{startwm}EOF\nchmod 755 /etc/xrdp/startwm.sh"
    ));
    assert_eq!(code, 0, "{out}{err}");
    let rid = windows_resource(&s, &alice, "busy", t.port).await;
    s.create_account(&alice, &rid, "busy", "busy target pw").await;
    let x = Xvfb::start();
    let mut c = FreeRdp::connect(
        &x,
        rdp_port,
        "alice#busy@busy",
        ALICE_PW,
        &[],
        &tmp.path().join("c.log"),
    );
    let registry = s.running.as_ref().unwrap().registry.clone();
    assert!(
        eventually(WAIT, || registry.list().iter().any(|s| s.protocol == "rdp")).await,
        "{}\n{}",
        t.logs(),
        c.log()
    );
    let t0 = Instant::now();
    let id = registry.list()[0].id.clone();
    let (started, done) = (t.dir.join("tmp/started"), t.dir.join("tmp/done"));
    assert!(
        eventually(Duration::from_secs(60), || started.exists()).await,
        "the busy desktop did not start\n{}",
        t.logs()
    );
    let busy_from = t0.elapsed();
    let (cpu0, writer0) = (process_cpu(), thread_cpu(&format!("rec-{}", &id[..10])).unwrap_or(0.0));
    assert!(
        eventually(Duration::from_secs(180), || done.exists()).await,
        "the busy desktop did not finish"
    );
    let busy_secs = (t0.elapsed() - busy_from).as_secs_f64();
    let (cpu1, writer1) = (process_cpu(), thread_cpu(&format!("rec-{}", &id[..10])).unwrap_or(0.0));
    let mut prev = screen_rgb(&x, tmp.path(), "shot");
    let (shot, shot_at) = loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let at = t0.elapsed();
        let now = screen_rgb(&x, tmp.path(), "shot");
        if now == prev && drawn(&now) {
            break (now, at);
        }
        assert!(t0.elapsed() < Duration::from_secs(240), "the desktop did not settle");
        prev = now;
    };
    let cpu = thread_cpu(&format!("rec-{}", &id[..10]));
    let r = s
        .req(
            "DELETE",
            &format!("/api/v1/sessions/{id}"),
            Some(&admin),
            Some(json!({"reason": "done"})),
        )
        .await;
    assert!(r.status < 300, "{} {}", r.status, r.text);
    assert!(c.wait_exit(WAIT).is_some(), "xfreerdp still connected");
    let session_secs = t0.elapsed().as_secs_f64();
    let path = s.data_dir().join("recordings").join(format!("{id}.pcast"));
    let mut v = None;
    for _ in 0..100 {
        if let Ok(x) = postern_recorder::verify(&path, &public_key(&s)) {
            if !x.truncated {
                v = Some(x);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = v.expect("the recording is sealed and verifies");
    assert!(!v.data_lost, "the recorder dropped data");
    let frame = postern_recorder::rdp::render_at(&path, shot_at.as_micros() as u64).unwrap();
    let sim = similarity(&rgba_to_rgb_crop(&frame), &shot, 24);
    assert!(
        sim >= 0.97,
        "the last frame matches {:.2} % of the screenshot",
        sim * 100.0
    );
    // The bytes the target sent, from the session's audit event.
    let mut target_bytes = 0u64;
    for _ in 0..50 {
        let ends = s
            .req("GET", "/api/v1/audit?action=session.end&limit=10", Some(&admin), None)
            .await;
        if let Some(d) = ends
            .body
            .as_array()
            .and_then(|a| a.first())
            .and_then(|e| e["detail"].as_str())
        {
            target_bytes = d
                .split(" bytes from the target")
                .next()
                .and_then(|h| h.rsplit(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "busy RDP session: {session_secs:.1} s ({busy_secs:.1} s of repaints); {target_bytes} bytes from the target \
         ({:.1} MiB/min); recording {size} bytes ({:.1} MiB/min, {:.0} % of the stream); writer thread CPU {} s in \
         all, {:.2} s during the repaints, while the whole server used {:.2} s; {} events in {} chunks; last frame \
         match {:.2} %",
        target_bytes as f64 / 1048576.0 / (session_secs / 60.0),
        size as f64 / 1048576.0 / (session_secs / 60.0),
        100.0 * size as f64 / target_bytes.max(1) as f64,
        cpu.map_or("?".into(), |c| format!("{c:.2}")),
        writer1 - writer0,
        cpu1 - cpu0,
        v.events,
        v.chunks,
        sim * 100.0
    );
    s.stop().await;
}

/// The recorder fails closed: when a session's recording cannot start (here the recordings directory is
/// taken by a file), the RDP session is refused, with an audit event saying why, and never started.
#[tokio::test(flavor = "multi_thread")]
async fn an_rdp_session_whose_recording_cannot_start_is_refused() {
    let RdpEnv {
        mut s,
        admin,
        alice,
        rdp_port,
        tmp,
    } = RdpEnv::new(ALICE_PW, LOG_FILTER).await;
    let t = XrdpTarget::start(&[("norec", "norec target pw")]);
    let rid = windows_resource(&s, &alice, "norec", t.port).await;
    s.create_account(&alice, &rid, "norec", "norec target pw").await;
    let dir = s.data_dir().join("recordings");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::write(&dir, b"not a directory").unwrap();
    let x = Xvfb::start();
    let mut c = FreeRdp::connect(
        &x,
        rdp_port,
        "alice#norec@norec",
        ALICE_PW,
        &[],
        &tmp.path().join("c.log"),
    );
    assert!(c.wait_exit(WAIT).is_some(), "xfreerdp still connected\n{}", c.log());
    let mut failed = Vec::new();
    for _ in 0..50 {
        failed = s.audit(&admin, "session.connect_failed").await;
        if !failed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        failed.iter().any(|e| e["outcome"] == "failure"
            && e["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("the recording could not be started")),
        "{failed:?}"
    );
    let starts = s.audit(&admin, "session.start").await;
    assert_eq!(starts.len(), 0, "{starts:?}");
    assert!(s.running.as_ref().unwrap().registry.list().is_empty());
    s.stop().await;
}

/// A fast-path bitmap update painting the inclusive rectangle in one colour (32 bpp, uncompressed, rows
/// bottom-up), encoded by hand ([MS-RDPBCGR] 2.2.9.1.2.1.2, 2.2.9.1.1.3.1.2).
fn fill_pdu(left: u16, top: u16, right: u16, bottom: u16, rgb: [u8; 3]) -> Vec<u8> {
    let (w, h) = (right - left + 1, bottom - top + 1);
    let pixels: Vec<u8> = [rgb[2], rgb[1], rgb[0], 0].repeat(usize::from(w) * usize::from(h));
    let mut update = Vec::new();
    for v in [1u16, 1, left, top, right, bottom, w, h, 32, 0, pixels.len() as u16] {
        update.extend_from_slice(&v.to_le_bytes());
    }
    update.extend_from_slice(&pixels);
    let mut pdu = vec![0x01]; // bitmap update, single fragment, no compression
    pdu.extend_from_slice(&(update.len() as u16).to_le_bytes());
    pdu.extend_from_slice(&update);
    let total = pdu.len() + 3;
    assert!(total <= 0x7fff);
    let mut out = vec![0x00, 0x80 | (total >> 8) as u8, total as u8];
    out.extend_from_slice(&pdu);
    out
}

/// The console's RDP player in headless Chromium: it plays a recording to its end and seeks back to 1 s,
/// showing the frames the server renders at those times (a red desktop whose top-left quarter turns green
/// after 2.5 s).
#[tokio::test(flavor = "multi_thread")]
async fn the_console_plays_and_seeks_an_rdp_recording() {
    let mut s = TestServer::builder().start().await;
    let _admin = s.admin_token().await;
    let id = "5e1f0c1d-0000-4000-8000-000000000001".to_string();
    let seed = std::fs::read_to_string(s.data_dir().join("recording-signing.key")).unwrap();
    let mut kb = [0u8; 32];
    hex::decode_to_slice(seed.trim(), &mut kb).unwrap();
    let cfg = postern_recorder::RecorderConfig::new(
        s.data_dir().join("recordings"),
        postern_recorder::SigningKey::from_bytes(&kb),
    );
    let rec = postern_recorder::Recording::start(
        &cfg,
        postern_recorder::SessionMeta {
            session_id: id.clone(),
            user: "alice".into(),
            target: "winuser@rdp1".into(),
            protocol: "rdp".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let vault = s.running.as_ref().unwrap().vault.clone();
    vault
        .recording_started(&postern_vault::NewRecording {
            id: id.clone(),
            user: "alice".into(),
            target: "winuser@rdp1".into(),
            protocol: "rdp".into(),
            client: None,
            started_at: postern_vault::now(),
            path: rec.path().display().to_string(),
        })
        .await
        .unwrap();
    rec.resize(160, 120);
    for (x, y) in [(0, 0), (80, 0), (0, 60), (80, 60)] {
        rec.output(&fill_pdu(x, y, x + 79, y + 59, [255, 0, 0]));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    rec.output(&fill_pdu(0, 0, 79, 59, [0, 255, 0]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sealed = rec.finish().await.unwrap();
    vault
        .recording_ended(
            &id,
            &postern_vault::RecordingEnd {
                status: postern_vault::RecordingStatus::Sealed,
                size: Some(sealed.bytes),
                final_hash: Some(sealed.final_hash.clone()),
                exit_info: None,
                detail: None,
            },
        )
        .await
        .unwrap();

    let r = browser(&s, vec![("POSTERN_RECORDING", id)]).await;
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["width"], 160, "{r:#}");
    assert_eq!(r["pixels"]["end"], json!([0, 255, 0]), "{r:#}");
    assert_eq!(r["pixels"]["start"], json!([255, 0, 0]), "{r:#}");
    assert_eq!(r["pixels"]["start_far"], json!([255, 0, 0]), "{r:#}");
    assert!(
        r["time_start"].as_str().unwrap_or_default().starts_with("0:01 /"),
        "{r:#}"
    );
    s.stop().await;
}
