//! The recorder end to end, against real OpenSSH (stock `ssh`/`scp`/`sftp` in, real `sshd`
//! targets in private mount namespaces out): file-transfer metadata in the recording,
//! tamper detection naming the chunk, a server killed mid-session, a full disk, and a client
//! that vanished.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::sshd::{self, SshClient, SshTarget, TargetOptions, TargetUser};
use common::*;
use serde_json::{json, Value};

const ALICE_PW: &str = "alice passphrase 123";

fn run(mut c: Command) -> Output {
    c.output().expect("spawn")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn target(login: &str, password: &str) -> SshTarget {
    SshTarget::start(TargetOptions {
        users: vec![TargetUser::password(login, password)],
        allow_tcp_forwarding: false,
        extra_config: String::new(),
    })
}

fn sha256sum(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    stdout(&o).split_whitespace().next().unwrap().to_owned()
}

fn random_file(p: &Path, mib: usize) {
    let st = Command::new("dd")
        .args([
            "if=/dev/urandom",
            &format!("of={}", p.display()),
            "bs=1M",
            &format!("count={mib}"),
            "status=none",
        ])
        .status()
        .unwrap();
    assert!(st.success());
}

/// The REST API of a server (in-process or a child process).
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(data: &Path, port: u16) -> Api {
        Api {
            base: format!("https://127.0.0.1:{port}"),
            client: client_for(&data.join("tls/cert.pem")),
        }
    }

    async fn req(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.base),
        );
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let st = r.status().as_u16();
        let text = r.text().await.unwrap();
        (st, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn login(&self, user: &str, pw: &str) -> String {
        let (st, b) = self
            .req(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"username": user, "password": pw})),
            )
            .await;
        assert_eq!(st, 200, "{b}");
        b["token"].as_str().unwrap().to_owned()
    }

    /// First admin (password changed to ADMIN_PW) and user alice; returns (admin, alice) tokens.
    async fn bootstrap(&self, data: &Path) -> (String, String) {
        let initial = std::fs::read_to_string(data.join("initial-admin-password"))
            .unwrap()
            .trim()
            .to_owned();
        let t = self.login("admin", &initial).await;
        let (st, b) = self
            .req(
                "POST",
                "/api/v1/me/password",
                Some(&t),
                Some(json!({"current_password": initial, "new_password": ADMIN_PW})),
            )
            .await;
        assert_eq!(st, 204, "{b}");
        let admin = self.login("admin", ADMIN_PW).await;
        let (st, b) = self
            .req(
                "POST",
                "/api/v1/users",
                Some(&admin),
                Some(json!({"username": "alice", "role": "password_administrator", "password": ALICE_PW, "must_change_password": false})),
            )
            .await;
        assert_eq!(st, 201, "{b}");
        let alice = self.login("alice", ALICE_PW).await;
        (admin, alice)
    }

    /// A resource `name` for target `t` with one account, owned by alice.
    async fn add_target(&self, alice: &str, name: &str, t: &SshTarget, login: &str, password: &str) {
        let (st, b) = self
            .req(
                "POST",
                "/api/v1/resources",
                Some(alice),
                Some(json!({"name": name, "type": "linux", "host": "127.0.0.1", "port": t.port})),
            )
            .await;
        assert_eq!(st, 201, "{b}");
        let rid = b["id"].as_str().unwrap().to_owned();
        let (st, b) = self
            .req(
                "POST",
                &format!("/api/v1/resources/{rid}/accounts"),
                Some(alice),
                Some(json!({"login": login, "password": password})),
            )
            .await;
        assert_eq!(st, 201, "{b}");
    }

    async fn audit(&self, admin: &str, action: &str) -> Vec<Value> {
        let (_, b) = self
            .req(
                "GET",
                &format!("/api/v1/audit?action={action}&limit=1000"),
                Some(admin),
                None,
            )
            .await;
        b.as_array().cloned().unwrap_or_default()
    }

    /// Waits until `n` events of `action` are audited.
    async fn wait_audit(&self, admin: &str, action: &str, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let v = self.audit(admin, action).await;
            if v.len() >= n {
                return v;
            }
            assert!(Instant::now() < deadline, "{n} x {action} not audited in time: {v:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn live_sessions(&self, admin: &str) -> Vec<Value> {
        let (st, b) = self.req("GET", "/api/v1/sessions", Some(admin), None).await;
        assert_eq!(st, 200, "{b}");
        b.as_array().cloned().unwrap_or_default()
    }
}

/// An in-process server with alice and her token.
async fn in_process() -> (TestServer, Api, String, String, u16) {
    sshd::available().expect("real sshd targets are needed (run the suite with tests/run.sh as root)");
    let s = TestServer::builder().start().await;
    let api = Api::new(&s.data_dir(), s.running.as_ref().unwrap().web_addr.port());
    let (admin, alice) = api.bootstrap(&s.data_dir()).await;
    let ssh_port = s.running.as_ref().unwrap().ssh_addr.port();
    (s, api, admin, alice, ssh_port)
}

fn recordings(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = files_under(&data.join("recordings"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "pcast"))
        .collect();
    v.sort();
    v
}

fn export(file: &Path) -> String {
    let mut cast = Vec::new();
    let _ = postern_recorder::export_cast(file, &mut cast);
    String::from_utf8_lossy(&cast).into_owned()
}

/// The markers of a recording as (kind, detail), from its exported asciicast text.
fn markers(file: &Path) -> Vec<(String, String)> {
    export(file)
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e[1] == "m")
        .map(|e| {
            let d = e[2].as_str().unwrap_or_default();
            let (k, v) = d.split_once(": ").unwrap_or((d, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// `postern --data-dir DATA verify FILE`: (exit code, stdout).
fn cli_verify(data: &Path, file: &Path) -> (i32, String) {
    let o = bin()
        .arg("--data-dir")
        .arg(data)
        .arg("verify")
        .arg(file)
        .output()
        .unwrap();
    (o.status.code().unwrap_or(-1), format!("{}{}", stdout(&o), stderr(&o)))
}

#[tokio::test(flavor = "multi_thread")]
async fn scp_and_sftp_transfers_are_recorded_with_name_size_and_sha256() {
    let (mut s, api, admin, alice, port) = in_process().await;
    let t = target("files", "files-secret-1");
    api.add_target(&alice, "store", &t, "files", "files-secret-1").await;
    let c = SshClient::new().with_password(ALICE_PW);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    random_file(&src, 3);
    let want = sha256sum(&src);
    let size = std::fs::metadata(&src).unwrap().len();
    let remote = "alice#files@store@127.0.0.1";
    let home = t.home("files");

    // scp up in its default (sftp) mode and in legacy mode (-O).
    let o = run(c.scp(port, &[src.to_str().unwrap(), &format!("{remote}:up.bin")]));
    assert!(o.status.success(), "scp up: {}", stderr(&o));
    let o = run(c.scp(port, &["-O", src.to_str().unwrap(), &format!("{remote}:legacy-up.bin")]));
    assert!(o.status.success(), "scp -O up: {}", stderr(&o));
    assert_eq!(sha256sum(&home.join("legacy-up.bin")), want);
    // scp down, both modes.
    let back = dir.path().join("back.bin");
    let o = run(c.scp_as(port, "alice#files@store", &["127.0.0.1:up.bin", back.to_str().unwrap()]));
    assert!(o.status.success(), "scp down: {}", stderr(&o));
    let legacy = dir.path().join("legacy.bin");
    let o = run(c.scp_as(
        port,
        "alice#files@store",
        &["-O", "127.0.0.1:up.bin", legacy.to_str().unwrap()],
    ));
    assert!(o.status.success(), "scp -O down: {}", stderr(&o));
    // sftp put/get, a rename and a remove.
    let got = dir.path().join("sftp.bin");
    let batch = format!(
        "put {} put.bin\nget put.bin {}\nrename put.bin moved.bin\nrm moved.bin\n",
        src.display(),
        got.display()
    );
    let o = run(c.sftp(port, "alice#files@store", &batch));
    assert!(o.status.success(), "sftp: {} {}", stdout(&o), stderr(&o));
    for f in [&back, &legacy, &got] {
        assert_eq!(sha256sum(f), want, "{}", f.display());
    }

    let ends = api.wait_audit(&admin, "session.end", 5, Duration::from_secs(20)).await;
    assert!(ends
        .iter()
        .all(|e| e["detail"].as_str().unwrap_or("").contains("final hash")));
    let data = s.data_dir();
    let files = recordings(&data);
    assert_eq!(files.len(), 5, "{files:?}");
    let mut events: Vec<Value> = Vec::new();
    let mut all_markers = Vec::new();
    for f in &files {
        let (code, out) = cli_verify(&data, f);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("recording OK"), "{out}");
        let m = markers(f);
        for (k, d) in &m {
            if k == "file" {
                events.push(serde_json::from_str(d).unwrap_or_else(|e| panic!("{d}: {e}")));
            }
        }
        all_markers.extend(m);
    }
    let find = |proto: &str, op: &str, name: &str| -> Value {
        events
            .iter()
            .find(|e| e["protocol"] == proto && e["op"] == op && e["path"].as_str().unwrap_or("").ends_with(name))
            .unwrap_or_else(|| panic!("no {proto} {op} of {name} in {events:#?}"))
            .clone()
    };
    for (proto, op, name) in [
        ("sftp", "upload", "up.bin"),
        ("scp", "upload", "big.bin"),
        ("sftp", "download", "up.bin"),
        ("scp", "download", "up.bin"),
        ("sftp", "upload", "put.bin"),
        ("sftp", "download", "put.bin"),
    ] {
        let e = find(proto, op, name);
        assert_eq!(e["bytes"], size, "{e}");
        assert_eq!(e["sha256"], want.as_str(), "{e}");
        assert_eq!(e["status"], "ok", "{e}");
    }
    assert_eq!(find("scp", "upload", "big.bin")["remote"], "legacy-up.bin");
    let ren = find("sftp", "rename", "put.bin");
    assert!(ren["to"].as_str().unwrap().ends_with("moved.bin"), "{ren}");
    assert_eq!(find("sftp", "remove", "moved.bin")["status"], "ok");
    // The legacy scp sessions are exec sessions: command line and exit status are markers.
    assert!(
        all_markers
            .iter()
            .any(|(k, d)| k == "exec" && d.starts_with("scp ") && d.contains("-t")),
        "{all_markers:?}"
    );
    assert!(all_markers.iter().any(|(k, d)| k == "exec" && d.contains("-f")));
    assert!(all_markers.iter().any(|(k, d)| k == "exit" && d == "0"));
    // The recordings API shows the same markers.
    let (st, list) = api.req("GET", "/api/v1/recordings", Some(&admin), None).await;
    assert_eq!(st, 200, "{list}");
    let mut api_files = 0;
    for row in list.as_array().unwrap() {
        let (st, d) = api
            .req(
                "GET",
                &format!("/api/v1/recordings/{}", row["id"].as_str().unwrap()),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(st, 200, "{d}");
        for m in d["markers"].as_array().unwrap().iter().filter(|m| m["kind"] == "file") {
            let e: Value = serde_json::from_str(m["detail"].as_str().unwrap()).unwrap();
            if e["sha256"] == want.as_str() {
                api_files += 1;
            }
        }
    }
    assert_eq!(api_files, 6, "{list}");
    // One audit event per transferred file, carrying the hash.
    let audited = api.audit(&admin, "session.file").await;
    assert_eq!(audited.len(), 6, "{audited:#?}");
    assert!(audited
        .iter()
        .all(|e| e["detail"].as_str().unwrap_or("").contains(&want)));
    s.stop().await;
}

/// (kind, start offset, body length) of every record of a `.pcast` file.
fn records(bytes: &[u8]) -> Vec<(u8, usize, usize)> {
    let mut v = Vec::new();
    let mut off = 12;
    while off + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[off + 4..off + 8].try_into().unwrap()) as usize;
        v.push((bytes[off], off, len));
        off += 12 + len;
    }
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_the_chunk_holding_a_flipped_byte_and_exec_markers_are_recorded() {
    let (mut s, api, admin, alice, port) = in_process().await;
    let t = target("rec", "rec-pw-12345");
    api.add_target(&alice, "rec", &t, "rec", "rec-pw-12345").await;
    let c = SshClient::new().with_password(ALICE_PW);
    // Enough output for several 64 KiB chunks, then a failing exit status.
    let o = run(c.ssh(port, "alice#rec@rec", &["seq 1 200000; exit 3"]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    api.wait_audit(&admin, "session.end", 1, Duration::from_secs(20)).await;
    let data = s.data_dir();
    let file = recordings(&data).pop().expect("a recording");
    let m = markers(&file);
    assert!(m.contains(&("exec".into(), "seq 1 200000; exit 3".into())), "{m:?}");
    assert!(m.contains(&("exit".into(), "3".into())), "{m:?}");
    let bytes = std::fs::read(&file).unwrap();
    let recs = records(&bytes);
    let chunks: Vec<_> = recs.iter().filter(|r| r.0 == b'C').collect();
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    let (_, start, len) = *chunks[2];
    let mut bad = bytes.clone();
    bad[start + 12 + len / 2] ^= 0x01;
    let bad_file = file.with_extension("flipped");
    std::fs::write(&bad_file, &bad).unwrap();
    let (code, out) = cli_verify(&data, &bad_file);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "recording BAD: recording damaged or tampered with at chunk 3 (byte offset {start})"
        )),
        "{out}"
    );
    let (code, out) = cli_verify(&data, &file);
    assert_eq!(code, 0, "{out}");
    s.stop().await;
}

/// The SSH port of a server started as a child process (from its JSON log).
fn ssh_port_from_log(log: &str) -> u16 {
    log.lines()
        .filter(|l| l.contains("SSH gateway listening"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["fields"]["addr"].as_str()?.rsplit(':').next()?.parse().ok())
        .next()
        .expect("the SSH listener in the log")
}

/// Waits until the recording in `dir` holds `text` (chunks are written at least every second).
fn wait_recorded(dir: &Path, text: &str, within: Duration) -> PathBuf {
    let deadline = Instant::now() + within;
    loop {
        if let Some(f) = files_under(dir)
            .into_iter()
            .find(|p| p.extension().is_some_and(|x| x == "pcast") && export(p).contains(text))
        {
            return f;
        }
        assert!(Instant::now() < deadline, "{text:?} not recorded in time");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_server_leaves_a_recording_that_verifies_as_truncated() {
    sshd::available().expect("real sshd targets are needed");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let (mut p, web) = spawn_server(&data, &log, &[]);
    let api = Api::new(&data, web);
    let (_, alice) = api.bootstrap(&data).await;
    let t = target("k9", "k9-pw-123456");
    api.add_target(&alice, "k9", &t, "k9", "k9-pw-123456").await;
    let port = ssh_port_from_log(&p.log());
    let c = SshClient::new().with_password(ALICE_PW);
    let mut ssh = c
        .ssh(port, "alice#k9@k9", &["echo printed-before-kill-$((6*7)); sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let recs = data.join("recordings");
    let file =
        match std::panic::catch_unwind(|| wait_recorded(&recs, "printed-before-kill-42", Duration::from_secs(30))) {
            Ok(f) => f,
            Err(_) => {
                let st = ssh.try_wait().unwrap();
                let mut err = String::new();
                if st.is_some() {
                    let _ = std::io::Read::read_to_string(ssh.stderr.as_mut().unwrap(), &mut err);
                }
                let files: Vec<_> = files_under(&recs)
                    .into_iter()
                    .map(|f| (f.clone(), export(&f)))
                    .collect();
                panic!(
                    "not recorded; ssh: {st:?} {err}; recordings: {files:?}; log:\n{}",
                    p.log()
                );
            }
        };
    p.child.kill().unwrap(); // SIGKILL
    p.child.wait().unwrap();
    let (code, out) = cli_verify(&data, &file);
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("recording TRUNCATED"), "{out}");
    assert!(export(&file).contains("printed-before-kill-42"));
    let mut cast = Vec::new();
    let e = postern_recorder::export_cast(&file, &mut cast).unwrap();
    assert!(e.truncated);
    // The user's connection went with the server.
    let deadline = Instant::now() + Duration::from_secs(20);
    while ssh.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the ssh client outlived the server");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `postern run` in a private mount namespace whose recordings directory is a tmpfs of `size`.
fn spawn_server_with_small_disk(data: &Path, log: &Path, size: &str) -> (Proc, u16) {
    std::fs::create_dir_all(data.join("recordings")).unwrap();
    let err = std::fs::File::create(log).unwrap();
    let script = r#"mount -t tmpfs -o "size=$1,mode=0700" postern-recordings "$2/recordings" || exit 97; shift; shift; exec "$@""#;
    let mut c = Command::new("unshare");
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("POSTERN_LOG_FORMAT", "json")
        .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh", size])
        .arg(data)
        .arg(env!("CARGO_BIN_EXE_postern"))
        .arg("--data-dir")
        .arg(data)
        .args([
            "run",
            "--web-listen",
            "127.0.0.1:0",
            "--ssh-listen",
            "127.0.0.1:0",
            "--rdp-listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    let mut p = Proc {
        child: c.spawn().unwrap(),
        stderr_path: log.to_owned(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = p.log();
        for line in text.lines().filter(|l| l.contains("web console and API listening")) {
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            if let Some(port) = v["fields"]["addr"]
                .as_str()
                .and_then(|a| a.rsplit(':').next()?.parse().ok())
            {
                return (p, port);
            }
        }
        if let Ok(Some(st)) = p.child.try_wait() {
            panic!("server exited early ({st}); log:\n{text}");
        }
        assert!(Instant::now() < deadline, "server did not start; log:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_ends_the_session_with_a_message_and_an_audit_event_and_nothing_else() {
    sshd::available().expect("real sshd targets are needed");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let (mut p, web) = spawn_server_with_small_disk(&data, &log, "2m");
    let api = Api::new(&data, web);
    let (admin, alice) = api.bootstrap(&data).await;
    let t = target("fulldisk", "disk-pw-12345");
    api.add_target(&alice, "disk", &t, "fulldisk", "disk-pw-12345").await;
    let port = ssh_port_from_log(&p.log());
    let c = SshClient::new().with_password(ALICE_PW);

    // A quiet session, open before the disk fills: it waits for a line on its stdin.
    let mut quiet = c
        .ssh(port, "alice#fulldisk@disk", &["read x; echo quiet-got-$x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Another one that runs each line it reads (leaving a trace on the target).
    let mut typist = c
        .ssh(
            port,
            "alice#fulldisk@disk",
            // 40 kB of output per line: more than the slack in the pages the file already has.
            &["while read l; do head -c 30000 /dev/urandom | base64; echo got-$l; touch seen-$l; done"],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    api.wait_audit(&admin, "session.start", 2, Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A flood of output that does not compress: far more than the 2 MiB disk holds.
    let o = run(c.ssh(
        port,
        "alice#fulldisk@disk",
        &["head -c 60000000 /dev/urandom | base64; echo flood-finished"],
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    assert_ne!(o.status.code(), Some(0), "the flooding session must be ended");
    assert!(!out.contains("flood-finished"), "the flood ran to its end unrecorded");
    assert!(
        err.contains("session ended: disk full: No space left on device"),
        "stderr: {err}"
    );
    let failed = api
        .wait_audit(&admin, "session.recording_failed", 1, Duration::from_secs(10))
        .await;
    assert_eq!(failed[0]["outcome"], "failure", "{failed:?}");
    assert!(
        failed[0]["detail"].as_str().unwrap().contains("disk full"),
        "{failed:?}"
    );

    // While the disk is full, the typist's next output cannot be recorded: its recording
    // fails, and the session ends by itself with the message, even though it then sits idle.
    let mut keys = typist.stdin.take().unwrap();
    keys.write_all(b"one\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while typist.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the typist's session outlived its failed recording"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = keys.write_all(b"two\n");
    drop(keys);
    let tq = typist.wait_with_output().unwrap();
    let home = t.home("fulldisk");
    assert!(home.join("seen-one").exists());
    assert!(!home.join("seen-two").exists());
    // (In the disconnect message, which OpenSSH prints as "Received disconnect ...: <why>".)
    assert!(stderr(&tq).contains("session ended: disk full"), "{}", stderr(&tq));
    let failed = api
        .wait_audit(&admin, "session.recording_failed", 2, Duration::from_secs(10))
        .await;
    assert!(failed.iter().all(|e| e["outcome"] == "failure"), "{failed:?}");

    // The server lives on: free the space (inside its namespace), and the quiet session
    // carries on, recorded.
    let pid = p.child.id().to_string();
    let st = Command::new("nsenter")
        .args(["-t", &pid, "-m", "sh", "-c"])
        .arg(format!(
            "for f in {}/recordings/*.pcast; do if [ $(stat -c %s \"$f\") -gt 500000 ]; then rm -f \"$f\"; fi; done",
            data.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    quiet.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let q = quiet.wait_with_output().unwrap();
    assert!(q.status.success(), "{}", stderr(&q));
    assert_eq!(stdout(&q).trim(), "quiet-got-hello");
    // And a new session works too.
    let o = run(c.ssh(port, "alice#fulldisk@disk", &["echo after-$((40+2))"]));
    assert_eq!(stdout(&o).trim(), "after-42", "{}", stderr(&o));
    assert!(p.child.try_wait().unwrap().is_none(), "the server stays up");
    assert!(!p.log().contains("panicked"), "{}", p.log());
    let (code, _) = p.terminate();
    assert!(code.success());
}

/// Vaults a target `name` (account `name`, password `pw`) for alice, runs `sleep 300` on it through the gateway
/// with a real ssh client, and waits (20 s at most) until the session is listed live. Keep the target alive.
async fn live_sleeping_session(
    api: &Api,
    admin: &str,
    alice: &str,
    port: u16,
    name: &str,
    pw: &str,
) -> (SshTarget, std::process::Child) {
    let t = target(name, pw);
    api.add_target(alice, name, &t, name, pw).await;
    let c = SshClient::new().with_password(ALICE_PW);
    let ssh = c
        .ssh(port, &format!("alice#{name}@{name}"), &["sleep 300"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.live_sessions(admin).await.is_empty() {
        assert!(Instant::now() < deadline, "the session never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (t, ssh)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_whose_client_vanished_leaves_the_live_list_within_10_s() {
    let (mut s, api, admin, alice, port) = in_process().await;
    let (_t, mut ssh) = live_sleeping_session(&api, &admin, &alice, port, "gone", "gone-pw-12345").await;
    ssh.kill().unwrap(); // SIGKILL: no goodbye
    ssh.wait().unwrap();
    let t0 = Instant::now();
    while !api.live_sessions(&admin).await.is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "still listed after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.wait_audit(&admin, "session.end", 1, Duration::from_secs(10)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_whose_client_froze_leaves_the_live_list_within_10_s() {
    // A client that stops answering without closing its socket (a laptop lid closed, a
    // network gone) is found out by the keepalives.
    let (mut s, api, admin, alice, port) = in_process().await;
    let (_t, mut ssh) = live_sleeping_session(&api, &admin, &alice, port, "frozen", "frozen-pw-12345").await;
    unsafe_kill(ssh.id(), "STOP");
    let t0 = Instant::now();
    while !api.live_sessions(&admin).await.is_empty() {
        if t0.elapsed() > Duration::from_secs(10) {
            ssh.kill().unwrap();
            panic!("still listed 10 s after the client froze");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("frozen client dropped after {:?}", t0.elapsed());
    ssh.kill().unwrap();
    ssh.wait().unwrap();
    api.wait_audit(&admin, "session.end", 1, Duration::from_secs(10)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_session_ends_after_the_idle_timeout_despite_keepalives_and_input_keeps_it() {
    sshd::available().expect("real sshd targets are needed");
    let s = TestServer::builder().set("ssh.idle_timeout", "4s").start().await;
    let api = Api::new(&s.data_dir(), s.running.as_ref().unwrap().web_addr.port());
    let (admin, alice) = api.bootstrap(&s.data_dir()).await;
    let port = s.running.as_ref().unwrap().ssh_addr.port();
    let t = target("idler", "idler-pw-12345");
    api.add_target(&alice, "idler", &t, "idler", "idler-pw-12345").await;
    let c = SshClient::new().with_password(ALICE_PW);
    let t0 = Instant::now();
    let mut ssh = c
        .ssh(port, "alice#idler@idler", &["echo started; sleep 60"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ssh.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            ssh.kill().unwrap();
            panic!("an idle session outlived its idle timeout by far");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let o = ssh.wait_with_output().unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(4), "{:?}", t0.elapsed());
    assert!(stderr(&o).contains("idle"), "{}", stderr(&o));
    // Input keeps a session alive past the idle timeout.
    let mut busy = c
        .ssh(port, "alice#idler@idler", &["cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = busy.stdin.take().unwrap();
    for i in 0..7 {
        writeln!(input, "line-{i}").unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(input);
    let o = busy.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("line-6"), "{}", stdout(&o));
    assert!(
        api.wait_audit(&admin, "session.end", 2, Duration::from_secs(10))
            .await
            .len()
            >= 2
    );
}
