//! The real-sshd target harness itself (tests/common/sshd.rs): logins with the real OpenSSH clients, isolation
//! from the host's accounts, password changes inside the target, file transfer, host key rotation, and login
//! names with '#' and '@' passed through untouched.

#[path = "common/sshd.rs"]
mod sshd;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sshd::*;

fn need_targets() {
    if let Err(e) = available() {
        panic!("these tests drive a real sshd and cannot run here: {e}");
    }
}

fn run(c: &mut Command) -> (i32, String, String) {
    let o = c.output().expect("run client");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn sha256(p: &Path) -> String {
    let (code, out, err) = run(Command::new("sha256sum").arg(p));
    assert_eq!(code, 0, "{err}");
    out.split_whitespace().next().unwrap().to_owned()
}

fn random_file(p: &Path, len: usize) {
    let mut b = vec![0u8; len];
    fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
    fs::write(p, b).unwrap();
}

fn canary() -> String {
    let mut b = [0u8; 8];
    fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
    format!("CANARY-{:016x}", u64::from_le_bytes(b))
}

/// Watches every process's argv until stopped; returns the command lines that contained `needle`.
fn watch_cmdlines(needle: String) -> (Arc<AtomicBool>, std::thread::JoinHandle<Vec<String>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !s.load(Ordering::Relaxed) {
            for e in fs::read_dir("/proc").unwrap().flatten() {
                if let Ok(b) = fs::read(e.path().join("cmdline")) {
                    if b.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                        seen.push(String::from_utf8_lossy(&b).replace('\0', " "));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        seen
    });
    (stop, h)
}

#[test]
fn password_and_key_logins_run_commands_and_propagate_exit_codes() {
    need_targets();
    let keys = tempfile::tempdir().unwrap();
    let (deploy_key, deploy_pub) = keygen(keys.path(), "deploy");
    let (other_key, _) = keygen(keys.path(), "other");
    assert!(deploy_pub.starts_with("ssh-ed25519 AAAA"), "{deploy_pub}");
    // The password must never show up in any process's argv: not while the target is set up, not while logging in.
    let pw_alice = canary();
    let (stop, watcher) = watch_cmdlines(pw_alice.clone());
    let t = SshTarget::start(TargetOptions {
        users: vec![
            TargetUser::password("alice", &pw_alice),
            TargetUser::key("deploy", &deploy_pub),
        ],
        ..Default::default()
    });
    assert!(t.host_key_pub.starts_with("ssh-ed25519 AAAA"), "{}", t.host_key_pub);
    assert_eq!(
        fs::read_to_string(format!("/proc/{}/comm", t.pid())).unwrap().trim(),
        "sshd"
    );

    let pw = SshClient::new().with_password(&pw_alice);
    let (code, out, err) = run(&mut pw.ssh(t.port, "alice", &["id", "-un"]));
    assert_eq!((code, out.as_str()), (0, "alice\n"), "{err}\n{}", t.log());
    assert!(
        t.log().contains("Accepted password for alice from 127.0.0.1"),
        "{}",
        t.log()
    );
    let (code, _, err) = run(&mut pw.ssh(t.port, "alice", &["sleep", "0.3"]));
    assert_eq!(code, 0, "{err}");
    stop.store(true, Ordering::Relaxed);
    let leaked = watcher.join().unwrap();
    assert!(leaked.is_empty(), "password in argv: {leaked:?}");

    let key = SshClient::new().with_identity(&deploy_key);
    let (code, out, err) = run(&mut key.ssh(t.port, "deploy", &["echo", "ok"]));
    assert_eq!((code, out.as_str()), (0, "ok\n"), "{err}\n{}", t.log());
    assert!(
        t.log().contains("Accepted publickey for deploy from 127.0.0.1"),
        "{}",
        t.log()
    );
    let (code, _, err) = run(&mut key.ssh(t.port, "deploy", &["exit 7"]));
    assert_eq!(code, 7, "{err}");
    let (code, _, _) = run(&mut pw.ssh(t.port, "alice", &["exit", "0"]));
    assert_eq!(code, 0);

    // And what must not work: wrong password, unknown key, password for a key-only user ('*' in shadow).
    let wrong = SshClient::new().with_password("Alice-pw-2");
    let (code, _, err) = run(&mut wrong.ssh(t.port, "alice", &["true"]));
    assert_eq!(code, 255, "wrong password accepted: {err}");
    assert!(err.contains("Permission denied"), "{err}");
    let other = SshClient::new().with_identity(&other_key);
    assert_eq!(
        run(&mut other.ssh(t.port, "deploy", &["true"])).0,
        255,
        "unknown key accepted"
    );
    assert_eq!(
        run(&mut key.ssh(t.port, "alice", &["true"])).0,
        255,
        "deploy's key opened alice"
    );
    let star = SshClient::new().with_password("*");
    assert_eq!(
        run(&mut star.ssh(t.port, "deploy", &["true"])).0,
        255,
        "key-only user accepted a password"
    );
}

/// Host files a target must never change.
const HOST_FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/gshadow",
    "/etc/subuid",
    "/etc/subgid",
    "/var/log/lastlog",
    "/var/log/wtmp",
    "/var/log/btmp",
];

fn host_snapshot() -> Vec<(&'static str, Option<Vec<u8>>)> {
    HOST_FILES.iter().map(|p| (*p, fs::read(p).ok())).collect()
}

fn host_has_user(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn target_users_exist_only_inside_the_namespace() {
    need_targets();
    let before = host_snapshot();
    let mounts_before = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_has_user("ptghost"), "the host already has ptghost");
    let keys = tempfile::tempdir().unwrap();
    let (k, kp) = keygen(keys.path(), "ptghost");
    let t = SshTarget::start(TargetOptions {
        users: vec![
            TargetUser::key("ptghost", &kp),
            TargetUser::password("ptpass", "Pt-pass-1"),
        ],
        ..Default::default()
    });
    // Log in (sshd writes lastlog/wtmp) and fail once (btmp), then look from both sides.
    assert_eq!(
        run(&mut SshClient::new().with_identity(&k).ssh(t.port, "ptghost", &["true"])).0,
        0,
        "{}",
        t.log()
    );
    assert_eq!(
        run(&mut SshClient::new().with_password("nope").ssh(t.port, "ptpass", &["true"])).0,
        255
    );

    let (code, out, err) = t.exec_in_ns("getent passwd ptghost ptpass; getent shadow ptghost ptpass");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ptghost:x:") && out.contains(&t.home("ptghost").display().to_string()),
        "{out}"
    );
    assert!(out.contains("ptghost:*:"), "key-only user must have '*': {out}");
    assert!(out.contains("ptpass:$"), "password user must have a hash: {out}");
    for u in ["ptghost", "ptpass"] {
        assert!(!host_has_user(u), "{u} leaked to the host's accounts");
    }
    let (code, out, _) = t.exec_in_ns("test -d /run/sshd && findmnt -n -o FSTYPE /etc");
    assert_eq!((code, out.trim()), (0, "overlay"));
    assert_eq!(
        fs::read_to_string("/proc/self/mountinfo").unwrap(),
        mounts_before,
        "mounts leaked to the host"
    );
    assert!(before == host_snapshot(), "host files changed while the target ran");
    drop(t);
    assert!(before == host_snapshot(), "host files changed after the target stopped");
    for u in ["ptghost", "ptpass"] {
        assert!(!host_has_user(u));
    }
}

#[test]
fn chpasswd_inside_the_namespace_changes_the_password() {
    need_targets();
    let t = SshTarget::start(TargetOptions {
        users: vec![TargetUser::password("alice", "Old-pass-1")],
        ..Default::default()
    });
    let old = SshClient::new().with_password("Old-pass-1");
    let new = SshClient::new().with_password("New-pass-2");
    assert_eq!(run(&mut old.ssh(t.port, "alice", &["true"])).0, 0, "{}", t.log());
    let (_, shadow_before, _) = t.exec_in_ns("getent shadow alice");

    let (code, out, err) = t.exec_in_ns("echo 'alice:New-pass-2' | chpasswd");
    assert_eq!(code, 0, "{out}{err}");
    let (_, shadow_after, _) = t.exec_in_ns("getent shadow alice");
    assert!(
        shadow_after.starts_with("alice:$") && shadow_after != shadow_before,
        "{shadow_before} -> {shadow_after}"
    );
    assert!(
        !fs::read_to_string("/etc/shadow").unwrap().contains("alice:"),
        "host shadow got alice"
    );

    let (code, _, err) = run(&mut old.ssh(t.port, "alice", &["true"]));
    assert_eq!(code, 255, "old password still accepted: {err}");
    let (code, out, err) = run(&mut new.ssh(t.port, "alice", &["id", "-un"]));
    assert_eq!((code, out.as_str()), (0, "alice\n"), "{err}\n{}", t.log());

    // The stdin-only helper (no password in argv) too.
    t.set_password("alice", "Third-pass-3");
    assert_eq!(run(&mut new.ssh(t.port, "alice", &["true"])).0, 255);
    assert_eq!(
        run(&mut SshClient::new()
            .with_password("Third-pass-3")
            .ssh(t.port, "alice", &["true"]))
        .0,
        0
    );
}

#[test]
fn scp_and_sftp_round_trip_5_mib() {
    need_targets();
    let local = tempfile::tempdir().unwrap();
    let (key, key_pub) = keygen(local.path(), "deploy");
    let t = SshTarget::start(TargetOptions {
        users: vec![
            TargetUser::key("deploy", &key_pub),
            TargetUser::password("alice", "Alice-pw-1"),
        ],
        ..Default::default()
    });
    let src = local.path().join("src.bin");
    random_file(&src, 5 << 20);
    let want = sha256(&src);

    // scp with a key: up, check the target's copy (homes are visible from the host), back down.
    let kc = SshClient::new().with_identity(&key);
    let remote = format!("deploy@127.0.0.1:{}/up.bin", t.home("deploy").display());
    let (code, _, err) = run(&mut kc.scp(t.port, &["-q", src.to_str().unwrap(), &remote]));
    assert_eq!(code, 0, "scp up: {err}\n{}", t.log());
    assert_eq!(sha256(&t.home("deploy").join("up.bin")), want);
    let back = local.path().join("scp-back.bin");
    let (code, _, err) = run(&mut kc.scp(t.port, &["-q", &remote, back.to_str().unwrap()]));
    assert_eq!(code, 0, "scp down: {err}");
    assert_eq!(sha256(&back), want);

    // sftp with a password (askpass despite -b's BatchMode).
    let pc = SshClient::new().with_password("Alice-pw-1");
    let sback = local.path().join("sftp-back.bin");
    let batch = format!("put {} put.bin\nget put.bin {}\n", src.display(), sback.display());
    let (code, out, err) = run(&mut pc.sftp(t.port, "alice", &batch));
    assert_eq!(code, 0, "sftp: {out}{err}\n{}", t.log());
    assert_eq!(sha256(&t.home("alice").join("put.bin")), want);
    assert_eq!(sha256(&sback), want);
    assert!(fs::read(&sback).unwrap() == fs::read(&src).unwrap());
    // A failing batch command fails the run.
    let (code, _, _) = run(&mut pc.sftp(t.port, "alice", "get /no/such/file x\n"));
    assert_ne!(code, 0);
}

#[test]
fn rotated_host_key_is_refused_by_a_strict_client() {
    need_targets();
    let keys = tempfile::tempdir().unwrap();
    let (k, kp) = keygen(keys.path(), "deploy");
    let mut t = SshTarget::start(TargetOptions {
        users: vec![TargetUser::key("deploy", &kp)],
        ..Default::default()
    });
    let port = t.port;
    let old_key = t.host_key_pub.clone();
    let old_pid = t.pid();

    let strict = SshClient::new()
        .with_identity(&k)
        .with_option("StrictHostKeyChecking", "yes");
    strict.trust_host_key(port, &old_key);
    let (code, out, err) = run(&mut strict.ssh(port, "deploy", &["echo", "ok"]));
    assert_eq!((code, out.as_str()), (0, "ok\n"), "pinned key: {err}");
    let accept_new = SshClient::new().with_identity(&k);
    assert_eq!(run(&mut accept_new.ssh(port, "deploy", &["true"])).0, 0);
    assert!(fs::read_to_string(accept_new.known_hosts_path())
        .unwrap()
        .contains(&old_key));

    t.rotate_host_key();
    assert_eq!(t.port, port);
    assert_ne!(t.host_key_pub, old_key);
    assert_ne!(t.pid(), old_pid);
    let (code, out, _) = run(Command::new("ssh-keyscan").args(["-t", "ed25519", "-p", &port.to_string(), "127.0.0.1"]));
    assert_eq!(code, 0);
    assert!(
        out.contains(&t.host_key_pub) && !out.contains(&old_key),
        "keyscan: {out}"
    );

    let (code, _, err) = run(&mut strict.ssh(port, "deploy", &["echo", "ok"]));
    assert_eq!(code, 255, "changed host key accepted: {err}");
    assert!(err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"), "{err}");
    assert_eq!(
        run(&mut accept_new.ssh(port, "deploy", &["true"])).0,
        255,
        "accept-new took a changed key"
    );

    let fresh = SshClient::new()
        .with_identity(&k)
        .with_option("StrictHostKeyChecking", "yes");
    fresh.trust_host_key(port, &t.host_key_pub);
    let (code, out, err) = run(&mut fresh.ssh(port, "deploy", &["echo", "ok"]));
    assert_eq!(
        (code, out.as_str()),
        (0, "ok\n"),
        "new key after restart: {err}\n{}",
        t.log()
    );
}

#[test]
fn login_names_with_hash_and_at_reach_sshd_intact() {
    need_targets();
    let t = SshTarget::start(TargetOptions {
        users: vec![TargetUser::password("alice", "Alice-pw-1")],
        ..Default::default()
    });
    let c = SshClient::new(); // no credentials: sshd still logs the name it received
    let wait = Duration::from_secs(5);

    assert_eq!(run(&mut c.ssh(t.port, "alice#root@web1", &["true"])).0, 255);
    assert!(
        t.wait_for_log("Invalid user alice#root@web1 from 127.0.0.1", wait),
        "{}",
        t.log()
    );

    let local = tempfile::tempdir().unwrap();
    let dst = local.path().join("x");
    // scp itself refuses '#' in 'user@host:path' ("invalid user name"), hence scp_as (-o User=).
    let (code, _, _) = run(&mut c.scp_as(
        t.port,
        "bob#db@prod",
        &["-q", "127.0.0.1:/etc/hostname", dst.to_str().unwrap()],
    ));
    assert_ne!(code, 0);
    assert!(
        t.wait_for_log("Invalid user bob#db@prod from 127.0.0.1", wait),
        "{}",
        t.log()
    );

    assert_ne!(run(&mut c.sftp(t.port, "carol#x@y", "pwd\n")).0, 0);
    assert!(
        t.wait_for_log("Invalid user carol#x@y from 127.0.0.1", wait),
        "{}",
        t.log()
    );

    // And a plain name is the real user, not an invalid one.
    assert_eq!(
        run(&mut SshClient::new()
            .with_password("Alice-pw-1")
            .ssh(t.port, "alice", &["true"]))
        .0,
        0
    );
    assert!(!t.log().contains("Invalid user alice from"), "{}", t.log());
}

#[test]
fn extra_config_overrides_defaults_and_match_blocks_go_last() {
    need_targets();
    let keys = tempfile::tempdir().unwrap();
    let (k, kp) = keygen(keys.path(), "deploy");
    let t = SshTarget::start(TargetOptions {
        users: vec![TargetUser {
            name: "deploy".into(),
            password: Some("Deploy-pw-1".into()),
            authorized_keys: vec![kp],
        }],
        allow_tcp_forwarding: true,
        extra_config: "PasswordAuthentication no\nMatch User deploy\n  AllowTcpForwarding no\n".into(),
    });
    let eff = |conn: &str| {
        let (code, out, err) = t.exec_in_ns(&format!("{SSHD} -T -f '{}' {conn}", t.config_path().display()));
        assert_eq!(code, 0, "{err}");
        out
    };
    let global = eff("");
    assert!(global.contains("passwordauthentication no"), "{global}");
    assert!(global.contains("allowtcpforwarding yes"), "{global}");
    let deploy = eff("-C user=deploy,host=localhost,addr=127.0.0.1");
    assert!(deploy.contains("allowtcpforwarding no"), "{deploy}");

    assert_eq!(
        run(&mut SshClient::new()
            .with_password("Deploy-pw-1")
            .ssh(t.port, "deploy", &["true"]))
        .0,
        255
    );
    assert_eq!(
        run(&mut SshClient::new().with_identity(&k).ssh(t.port, "deploy", &["true"])).0,
        0,
        "{}",
        t.log()
    );
}

/// Targets started and stopped concurrently (as cargo's parallel tests do) must not disturb each other. Regression:
/// a stopping target swept its mount namespace by its number ("mnt:[N]"), the kernel gives a freed number to the
/// next new namespace at once, and the sweep then killed another target's holder, useradd or sshd mid-start
/// ("creating target user ... failed: nsenter: cannot open /proc/<pid>/ns/mnt", "mount namespace setup failed").
#[test]
fn concurrent_targets_start_add_users_and_log_in_independently() {
    need_targets();
    let keys = tempfile::tempdir().unwrap();
    let (key, key_pub) = keygen(keys.path(), "conc");
    let key = Arc::new(key);
    // Rounds of staggered lifetimes: one target's teardown overlaps others' namespace setup and useradd.
    const TARGETS: usize = 6;
    const ROUNDS: usize = 5;
    let threads: Vec<_> = (0..TARGETS)
        .map(|i| {
            let (key, key_pub) = (key.clone(), key_pub.clone());
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let pw = format!("Conc-pw-{i}-{round}");
                    let users = vec![
                        TargetUser::password(&format!("conc{i}a"), &pw),
                        TargetUser::password(&format!("conc{i}b"), &pw),
                        TargetUser::key(&format!("conc{i}c"), &key_pub),
                    ];
                    let t = SshTarget::start(TargetOptions {
                        users: users.clone(),
                        ..Default::default()
                    });
                    let pw_client = SshClient::new().with_password(&pw);
                    let key_client = SshClient::new().with_identity(&key);
                    for u in &users {
                        let c = if u.password.is_some() { &pw_client } else { &key_client };
                        let (code, out, err) = run(&mut c.ssh(t.port, &u.name, &["id", "-un"]));
                        assert_eq!(
                            (code, out.trim()),
                            (0, u.name.as_str()),
                            "target {i} round {round}, login as {}: {err}\n{}",
                            u.name,
                            t.log()
                        );
                    }
                    // Exactly this target's users, none of the others'.
                    let (code, out, err) = t.exec_in_ns("getent passwd | cut -d: -f1 | grep '^conc' | sort");
                    assert_eq!(code, 0, "{err}");
                    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
                    assert_eq!(out.lines().collect::<Vec<_>>(), names, "target {i} round {round}");
                    std::thread::sleep(Duration::from_millis((i * 15) as u64));
                }
            })
        })
        .collect();
    let failures: Vec<String> = threads
        .into_iter()
        .filter_map(|h| h.join().err())
        .map(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {TARGETS} targets failed:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );
    for i in 0..TARGETS {
        assert!(!host_has_user(&format!("conc{i}a")), "conc{i}a leaked to the host");
    }
}
