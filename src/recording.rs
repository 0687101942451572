//! Wiring the recorder into the gateway: one signed, chained recording per
//! session under `<data>/recordings`, failing the session closed when the
//! recording fails.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use postern_gateway::{SessionInfo, SessionSink, SinkFactory};
use postern_recorder::{RecorderConfig, Recording, SessionMeta, SigningKey, VerifyingKey};
use rand::RngCore;

/// `<data>/recording-signing.key`: the ed25519 seed (hex, 0600).
pub fn signing_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("recording-signing.key")
}

/// Loads the recording signing key, generating it on first start. Returns (key, created).
pub fn ensure_signing_key(data_dir: &Path) -> Result<(SigningKey, bool)> {
    let path = signing_key_path(data_dir);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mut seed = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut seed)
                .with_context(|| format!("{}: expected 64 hexadecimal characters", path.display()))?;
            Ok((SigningKey::from_bytes(&seed), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut seed);
            let mut o = fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(0o600);
            }
            let mut f = o.open(&path).with_context(|| format!("creating {}", path.display()))?;
            f.write_all(format!("{}\n", hex::encode(seed)).as_bytes())
                .and_then(|_| f.sync_all())?;
            let key = SigningKey::from_bytes(&seed);
            fs::write(
                public_key_path(data_dir),
                format!("{}\n", hex::encode(key.verifying_key().to_bytes())),
            )?;
            Ok((key, true))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `<data>/recording-signing.pub`: the public key `postern verify` checks seals with.
pub fn public_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("recording-signing.pub")
}

/// Loads the public key for verification.
pub fn load_public_key(data_dir: &Path) -> Result<VerifyingKey> {
    let path = public_key_path(data_dir);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut b = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut b)
        .with_context(|| format!("{}: expected 64 hexadecimal characters", path.display()))?;
    VerifyingKey::from_bytes(&b).with_context(|| format!("{}: not an ed25519 public key", path.display()))
}

/// Opens a recording per gateway session.
pub struct RecorderSinks {
    cfg: RecorderConfig,
}

impl RecorderSinks {
    /// Recordings go to `dir`, signed with `key`.
    pub fn new(dir: PathBuf, key: SigningKey) -> Self {
        RecorderSinks {
            cfg: RecorderConfig::new(dir, key),
        }
    }
}

impl SinkFactory for RecorderSinks {
    fn open(&self, info: &SessionInfo) -> Arc<dyn SessionSink> {
        let meta = SessionMeta {
            session_id: info.id.clone(),
            user: info.user.clone(),
            target: info.target.clone(),
            protocol: info.protocol.to_owned(),
            client: info.client.map(|c| c.to_string()),
            width: 80,
            height: 24,
            ..Default::default()
        };
        match Recording::start(&self.cfg, meta) {
            Ok(r) => Arc::new(RecSink {
                rec: Mutex::new(Some(Arc::new(r))),
                start_error: None,
            }),
            Err(e) => {
                tracing::error!(error = %e, "a recording could not be started: the session is refused");
                Arc::new(RecSink {
                    rec: Mutex::new(None),
                    start_error: Some(format!("the recording could not be started: {e}")),
                })
            }
        }
    }
}

struct RecSink {
    rec: Mutex<Option<Arc<Recording>>>,
    start_error: Option<String>,
}

impl RecSink {
    fn with(&self, f: impl FnOnce(&Recording)) {
        if let Some(r) = self.rec.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            f(r)
        }
    }
}

impl SessionSink for RecSink {
    fn output(&self, _channel: u32, data: &[u8]) {
        self.with(|r| r.output(data));
    }
    fn input(&self, _channel: u32, data: &[u8]) {
        self.with(|r| r.input(data));
    }
    fn event(&self, _channel: u32, kind: &str, detail: &str) {
        self.with(|r| {
            if kind == "resize" {
                if let Some((c, rows)) = detail
                    .split_once('x')
                    .and_then(|(c, r)| Some((c.parse().ok()?, r.parse().ok()?)))
                {
                    return r.resize(c, rows);
                }
            }
            r.marker(kind, detail)
        });
    }
    fn failed(&self) -> Option<String> {
        if let Some(e) = &self.start_error {
            return Some(e.clone());
        }
        self.rec
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|r| r.failed())
    }
    fn writable(&self) -> Option<postern_gateway::registry::WritableFuture> {
        let rec = self.rec.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        Some(Box::pin(async move { rec.writable().await }))
    }
    fn close(&self) -> Option<postern_gateway::registry::CloseFuture> {
        let mut rec = self.rec.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        Some(Box::pin(async move {
            // A relay may still hold a clone for a moment while it stops.
            let mut tries = 0;
            let rec = loop {
                match Arc::try_unwrap(rec) {
                    Ok(r) => break r,
                    Err(_) if tries >= 250 => {
                        return Some("recording left unsealed: a relay did not stop (it verifies as truncated)".into())
                    }
                    Err(shared) => {
                        rec = shared;
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
            };
            match rec.finish().await {
                Ok(sealed) => Some(format!(
                    "recording {} sealed, final hash {}",
                    sealed.path.display(),
                    sealed.final_hash
                )),
                Err(e) => Some(format!("recording failed: {e}")),
            }
        }))
    }
}
