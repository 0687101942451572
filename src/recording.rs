//! Wiring the recorder into the gateway: one signed, chained recording per
//! session under `<data>/recordings`, failing the session closed when the
//! recording fails; its live hub (watched through the web), its catalog row,
//! its search index (built after the seal by a background task) and retention.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::collections::HashMap;

use anyhow::{Context, Result};
use postern_gateway::{SessionInfo, SessionSink, SinkFactory};
use postern_recorder::{Hub, Indexer, RecorderConfig, Recording, SessionMeta, SigningKey, TextIndex, VerifyingKey};
use postern_vault::{NewRecording, RecordingEnd, RecordingMarker, RecordingStatus, TextLine, Vault};
use rand::RngCore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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

/// The live hubs of the sessions being recorded, by session id: what the web's live watch
/// subscribes to. Cheap to clone.
#[derive(Clone, Default)]
pub struct LiveHubs(Arc<Mutex<HashMap<String, Hub>>>);

impl std::fmt::Debug for LiveHubs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHubs").field("live", &self.len()).finish()
    }
}

impl LiveHubs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Hub>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hub of a live session.
    pub fn get(&self, id: &str) -> Option<Hub> {
        self.lock().get(id).cloned()
    }

    /// Sessions with a hub.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No session has a hub.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// A sealed recording to index: (session id, file).
pub type IndexJob = (String, PathBuf);

/// How many sealed recordings may wait for indexing; past it a recording is indexed at the
/// next start instead (its catalog row stays unindexed).
pub const INDEX_QUEUE: usize = 256;

/// The background indexer: one task (owned by `tracker`, stopped by `token`) that reads
/// sealed recordings back, extracts their text (`postern_recorder::index`) and stores it in
/// the vault's search index, one recording at a time, off the sessions' path. Recordings
/// left unindexed by an earlier run are queued first.
pub fn spawn_indexer(vault: Vault, tracker: &TaskTracker, token: CancellationToken) -> mpsc::Sender<IndexJob> {
    let (tx, mut rx) = mpsc::channel::<IndexJob>(INDEX_QUEUE);
    let backlog = {
        let (vault, tx, token) = (vault.clone(), tx.clone(), token.clone());
        async move {
            let pending = match vault.unindexed_recordings().await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "listing unindexed recordings failed");
                    return;
                }
            };
            for (id, path) in pending {
                tokio::select! {
                    _ = token.cancelled() => return,
                    r = tx.send((id, PathBuf::from(path))) => if r.is_err() { return },
                }
            }
        }
    };
    tracker.spawn(backlog);
    // One dedicated, low-priority thread reads the recordings back; it ends when this task
    // drops its sender (shutdown), after the recording at hand.
    let (work_tx, work_rx) =
        std::sync::mpsc::sync_channel::<(PathBuf, tokio::sync::oneshot::Sender<Result<TextIndex, String>>)>(1);
    let spawned = std::thread::Builder::new()
        .name("postern-indexer".into())
        .spawn(move || {
            lower_this_threads_priority();
            for (path, done) in work_rx {
                let _ = done.send(extract_text(&path));
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "the indexing thread could not start; recordings stay unindexed until a restart");
        return tx;
    }
    tracker.spawn(async move {
        loop {
            let job = tokio::select! {
                _ = token.cancelled() => return,
                job = rx.recv() => match job { Some(j) => j, None => return },
            };
            let (id, path) = job;
            let started = std::time::Instant::now();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            if work_tx.send((path, done_tx)).is_err() {
                tracing::error!("the indexing thread is gone");
                return;
            }
            let ix = tokio::select! {
                _ = token.cancelled() => return,
                r = done_rx => r,
            };
            let ix = match ix {
                Ok(Ok(ix)) => ix,
                Ok(Err(e)) => {
                    tracing::warn!(session.id = %id, error = %e, "a recording could not be indexed");
                    TextIndex::default()
                }
                Err(e) => {
                    tracing::error!(session.id = %id, error = %e, "the indexing task failed");
                    continue;
                }
            };
            let lines: Vec<TextLine> = ix
                .entries
                .iter()
                .map(|e| TextLine {
                    offset: e.offset,
                    kind: e.kind.as_str(),
                    text: e.text.clone(),
                })
                .collect();
            let markers: Vec<RecordingMarker> = ix
                .markers
                .iter()
                .map(|m| RecordingMarker {
                    offset: m.offset,
                    kind: m.kind.clone(),
                    detail: m.detail.clone(),
                })
                .collect();
            match vault.store_recording_index(&id, &lines, &markers).await {
                Ok(()) => tracing::debug!(
                    session.id = %id,
                    lines = lines.len(),
                    bytes = ix.text_bytes,
                    capped = ix.capped,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "recording indexed"
                ),
                Err(e) => tracing::warn!(session.id = %id, error = %e, "storing a recording's index failed"),
            }
        }
    });
    tx
}

/// Reads a sealed recording back into its searchable text.
fn extract_text(path: &std::path::Path) -> Result<TextIndex, String> {
    let mut ix = Indexer::default();
    match postern_recorder::index_recording(path, &mut ix) {
        Ok(()) => Ok(ix.finish()),
        // A damaged recording: index its intact prefix.
        Err(e @ postern_recorder::Error::Corrupt { .. }) => {
            tracing::warn!(error = %e, path = %path.display(), "indexing the intact prefix of a damaged recording");
            Ok(ix.finish())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Indexing is background work: its own thread runs only on CPU time nothing else wants (Linux `SCHED_IDLE`,
/// per thread there; nice 19 where that is refused), so reading back a large recording never takes CPU from the
/// relays. On a machine kept busy, indexing waits (nothing is lost: the backlog is indexed later).
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain syscalls on the calling thread (pid 0); `param` outlives the call.
        let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0;
        if !idle {
            // SAFETY: as above, no memory is passed.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
            let now = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
            if now < 19 {
                unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 19) };
            }
        }
    }
}

/// Deletes the recordings that ended more than `days` days ago: files first, then their
/// catalog rows and index, with one audit event naming them. Returns the ids purged.
pub async fn purge_expired(vault: &Vault, days: u32) -> Result<Vec<String>> {
    let cutoff = time::OffsetDateTime::now_utc() - time::Duration::days(i64::from(days));
    let expired = vault.expired_recordings(&postern_vault::format_ts(cutoff)).await?;
    let mut gone = Vec::new();
    for (id, path) in expired {
        match fs::remove_file(&path) {
            Ok(()) => gone.push(id),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone.push(id),
            Err(e) => {
                tracing::warn!(session.id = %id, path, error = %e, "an expired recording could not be deleted; kept")
            }
        }
    }
    vault
        .forget_recordings(&gone, &format!("retention: ended more than {days} day(s) ago"))
        .await?;
    if !gone.is_empty() {
        tracing::info!(count = gone.len(), days, "expired recordings purged");
    }
    Ok(gone)
}

/// Opens a recording per gateway session, publishes its output to a live hub, and keeps
/// the recordings catalog (a row at start, the seal at the end) and the search index.
pub struct RecorderSinks {
    cfg: RecorderConfig,
    vault: Vault,
    hubs: LiveHubs,
    indexer: mpsc::Sender<IndexJob>,
    tracker: TaskTracker,
}

impl RecorderSinks {
    /// Recordings go to `dir`, signed with `key`; user input is recorded when `record_input`.
    pub fn new(
        dir: PathBuf,
        key: SigningKey,
        record_input: bool,
        vault: Vault,
        hubs: LiveHubs,
        indexer: mpsc::Sender<IndexJob>,
        tracker: TaskTracker,
    ) -> Self {
        let mut cfg = RecorderConfig::new(dir, key);
        cfg.record_input = record_input;
        RecorderSinks {
            cfg,
            vault,
            hubs,
            indexer,
            tracker,
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
            // RDP: the desktop size (pixels) comes in the first `r` event.
            width: if info.protocol == "rdp" { 0 } else { 80 },
            height: if info.protocol == "rdp" { 0 } else { 24 },
            ..Default::default()
        };
        // RDP viewers rebuild the desktop from the recording file, not from recent output (no ring), and may
        // take a few seconds to catch up while a busy desktop keeps sending: a deeper per-viewer queue.
        let hub = if info.protocol == "rdp" {
            Hub::with_config(postern_recorder::HubConfig {
                ring_bytes: 0,
                subscriber_bytes: 16 << 20,
            })
        } else {
            Hub::new()
        };
        let path = postern_recorder::recording_path(&self.cfg.dir, &info.id).unwrap_or_default();
        let mut sink = RecSink {
            rec: Mutex::new(None),
            start_error: None,
            id: info.id.clone(),
            path: path.clone(),
            hub: hub.clone(),
            hubs: self.hubs.clone(),
            vault: self.vault.clone(),
            catalog: Mutex::new(None),
            exit: Mutex::new(None),
            indexer: self.indexer.clone(),
        };
        match Recording::start(&self.cfg, meta) {
            Ok(r) => {
                sink.rec = Mutex::new(Some(Arc::new(r)));
                self.hubs.lock().insert(info.id.clone(), hub);
                let row = NewRecording {
                    id: info.id.clone(),
                    user: info.user.clone(),
                    target: info.target.clone(),
                    protocol: info.protocol.to_owned(),
                    client: info.client.map(|c| c.to_string()),
                    started_at: info.started_at.clone(),
                    path: path.display().to_string(),
                };
                let vault = self.vault.clone();
                let task = self.tracker.spawn(async move {
                    if let Err(e) = vault.recording_started(&row).await {
                        tracing::error!(session.id = %row.id, error = %e, "the recording could not be cataloged");
                    }
                });
                sink.catalog = Mutex::new(Some(task));
            }
            Err(e) => {
                tracing::error!(error = %e, "a recording could not be started: the session is refused");
                sink.start_error = Some(format!("the recording could not be started: {e}"));
            }
        }
        Arc::new(sink)
    }
}

struct RecSink {
    rec: Mutex<Option<Arc<Recording>>>,
    start_error: Option<String>,
    id: String,
    path: PathBuf,
    hub: Hub,
    hubs: LiveHubs,
    vault: Vault,
    catalog: Mutex<Option<tokio::task::JoinHandle<()>>>,
    exit: Mutex<Option<String>>,
    indexer: mpsc::Sender<IndexJob>,
}

impl RecSink {
    fn with(&self, f: impl FnOnce(&Recording)) {
        if let Some(r) = self.rec.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            f(r)
        }
    }
}

impl SessionSink for RecSink {
    fn output(&self, _channel: u32, data: &bytes::Bytes) {
        self.hub.publish(data.clone());
        self.with(|r| r.output_bytes(data.clone()));
    }
    fn input(&self, _channel: u32, data: &[u8]) {
        // Written only when `[recording] record_input` is on (RecorderConfig::record_input).
        self.with(|r| r.input(data));
    }
    fn event(&self, _channel: u32, kind: &str, detail: &str) {
        if kind == "exit" {
            *self.exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("exit status {detail}"));
        }
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
        // Live viewers get what was queued for them, then the end.
        self.hub.close();
        self.hubs.lock().remove(&self.id);
        let mut rec = self.rec.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        let catalog = self.catalog.lock().unwrap_or_else(|e| e.into_inner()).take();
        let exit_info = self.exit.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (vault, id, path, indexer) = (
            self.vault.clone(),
            self.id.clone(),
            self.path.clone(),
            self.indexer.clone(),
        );
        Some(Box::pin(async move {
            let failed_before = rec.failed();
            // A relay may still hold a clone for a moment while it stops.
            let mut tries = 0;
            let rec = loop {
                match Arc::try_unwrap(rec) {
                    Ok(r) => break Ok(r),
                    Err(_) if tries >= 250 => break Err(()),
                    Err(shared) => {
                        rec = shared;
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
            };
            let size = || fs::metadata(&path).ok().map(|m| m.len());
            let (end, line) = match rec {
                Err(()) => {
                    let why = "recording left unsealed: a relay did not stop (it verifies as truncated)";
                    (
                        RecordingEnd {
                            status: RecordingStatus::Truncated,
                            size: size(),
                            final_hash: None,
                            exit_info,
                            detail: Some(why.into()),
                        },
                        why.to_string(),
                    )
                }
                Ok(rec) => match rec.finish().await {
                    Ok(sealed) => {
                        let problem = sealed.lost.clone().or(failed_before);
                        (
                            RecordingEnd {
                                status: if problem.is_some() {
                                    RecordingStatus::Failed
                                } else {
                                    RecordingStatus::Sealed
                                },
                                size: Some(sealed.bytes),
                                final_hash: Some(sealed.final_hash.clone()),
                                exit_info,
                                detail: problem,
                            },
                            format!(
                                "recording {} sealed, final hash {}",
                                sealed.path.display(),
                                sealed.final_hash
                            ),
                        )
                    }
                    Err(e) => (
                        RecordingEnd {
                            status: RecordingStatus::Failed,
                            size: size(),
                            final_hash: None,
                            exit_info,
                            detail: Some(e.to_string()),
                        },
                        format!("recording failed: {e}"),
                    ),
                },
            };
            if let Some(task) = catalog {
                let _ = task.await;
            }
            if let Err(e) = vault.recording_ended(&id, &end).await {
                tracing::error!(session.id = %id, error = %e, "the end of the recording could not be cataloged");
            }
            if indexer.try_send((id.clone(), path)).is_err() {
                tracing::warn!(session.id = %id, "the indexing queue is full: the recording is indexed at the next start");
            }
            Some(line)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_indexer_thread_runs_only_on_idle_cpu() {
        let policy = std::thread::spawn(|| {
            lower_this_threads_priority();
            // SAFETY: a query about the calling thread.
            unsafe { libc::sched_getscheduler(0) }
        })
        .join()
        .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);
        // Only that thread: the caller keeps its policy.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }
}
