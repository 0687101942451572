//! The per-session recording writer: a bounded queue in front of a dedicated thread that
//! encodes, compresses, chains, signs and writes.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use tokio::sync::{oneshot, Notify};

use crate::format::{
    self, frame, push_bin_event, sha256_parts, CastHeader, SessionMeta, CHECKPOINT_DOMAIN, CHUNK_OUTPUT_ONLY,
    CHUNK_SIGNED, HASH_LEN, KIND_CHUNK, KIND_HEADER, KIND_SEAL, MAX_HEADER_JSON, SEAL_DATA_LOST, SEAL_DOMAIN,
};
use crate::Error;

/// Bookkeeping bytes charged per queued event on top of its data, so that a flood of tiny
/// events is bounded too.
const EVENT_OVERHEAD: usize = 64;
/// Consecutive output (or input) events closer than this are coalesced in the queue.
const COALESCE_US: u64 = 10_000;
/// Coalesced events stay below this size.
const COALESCE_MAX: usize = 64 * 1024;
/// Output is encoded in pieces of at most this many bytes (bounds the size of one event line).
const PIECE: usize = 32 * 1024;
/// Upper bound of [`RecorderConfig::chunk_bytes`] (readers accept up to 16 MiB of text).
const MAX_CHUNK_TEXT: usize = 4 << 20;
/// Marker labels are cut to this many bytes.
const MAX_MARKER: usize = 64 * 1024;
/// zstd level of chunks normally: fast, and still 4-10x on terminal text.
const ZSTD_LEVEL: i32 = 1;
/// zstd level under pressure (queue over a quarter full): near memcpy speed.
const ZSTD_FAST_LEVEL: i32 = -5;

/// How recordings are written. Build it with [`RecorderConfig::new`] and adjust the fields.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Directory of the recordings (created 0700 when missing).
    pub dir: PathBuf,
    /// The server's signing key: seals every recording and signs chunk checkpoints.
    pub signing_key: SigningKey,
    /// Byte budget of the queue between a session and its writer (default 8 MiB). When it
    /// is exceeded the recording fails ("the recorder cannot keep up").
    pub queue_bytes: usize,
    /// Record the user's keystrokes (`"i"` events) too.
    pub record_input: bool,
    /// A chunk is written once it holds this much cast text (default 128 KiB: each chunk is compressed on
    /// its own, and terminal text compresses about twice as well in 128 KiB as in 64 KiB)…
    pub chunk_bytes: usize,
    /// …or once this much time has passed since its first event (default 1 s). Chunks are
    /// also signed (a checkpoint) at most this often.
    pub flush_interval: Duration,
    /// Test hook: the writer sleeps this long before each batch it takes from the queue, to
    /// simulate a slow disk. Leave `None`.
    #[doc(hidden)]
    pub write_delay: Option<Duration>,
}

impl RecorderConfig {
    /// Defaults: 8 MiB queue, no input recording, 128 KiB / 1 s chunks.
    pub fn new(dir: impl Into<PathBuf>, signing_key: SigningKey) -> Self {
        RecorderConfig {
            dir: dir.into(),
            signing_key,
            queue_bytes: 8 << 20,
            record_input: false,
            chunk_bytes: 128 * 1024,
            flush_interval: Duration::from_secs(1),
            write_delay: None,
        }
    }
}

/// What [`Recording::finish`] returns: where the sealed recording is and its final hash (for
/// the session's audit event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The recording file.
    pub path: PathBuf,
    /// Hex SHA-256 chain hash of the last chunk (the one in the seal).
    pub final_hash: String,
    /// Number of events recorded (an event whose bytes end inside a UTF-8 character may add
    /// no line of its own to the exported cast).
    pub events: u64,
    /// Number of data chunks.
    pub chunks: u64,
    /// Size of the recording file on disk, seal included.
    pub bytes: u64,
    /// Uncompressed size of the recorded events (header excluded).
    pub cast_bytes: u64,
    /// Why events were dropped, when the recorder could not keep up (the recording is then
    /// sealed with a "data lost" flag and a `recording-failed` marker where the loss starts).
    pub lost: Option<String>,
}

/// Terminal bytes in the queue: large pieces are shared with the session (no copy), small ones
/// are copied so that the next small ones can be coalesced with them.
enum Data {
    Owned(Vec<u8>),
    Shared(Bytes),
}

/// Pieces at least this large are queued shared rather than copied.
const SHARE_MIN: usize = 4096;

impl Data {
    fn new(data: Stream<'_>) -> Data {
        match data {
            Stream::Shared(b) if b.len() >= SHARE_MIN => Data::Shared(b),
            other => Data::Owned(other.to_vec()),
        }
    }
}

impl std::ops::Deref for Data {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Data::Owned(v) => v,
            Data::Shared(b) => b,
        }
    }
}

/// Bytes handed to [`Recording::push_stream`]: borrowed, or shared with the caller.
enum Stream<'a> {
    Borrowed(&'a [u8]),
    Shared(Bytes),
}

impl Stream<'_> {
    fn to_vec(&self) -> Vec<u8> {
        self.as_slice().to_vec()
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Stream::Borrowed(b) => b,
            Stream::Shared(b) => b,
        }
    }
}

enum Payload {
    Output(Data),
    Input(Data),
    Resize(u32, u32),
    Marker(String),
}

struct Queued {
    t_us: u64,
    payload: Payload,
}

impl Queued {
    fn cost(&self) -> usize {
        EVENT_OVERHEAD
            + match &self.payload {
                Payload::Output(d) | Payload::Input(d) => d.len(),
                Payload::Resize(..) => 0,
                Payload::Marker(m) => m.len(),
            }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Finish,
    Abandon,
}

struct QueueState {
    queue: VecDeque<Queued>,
    /// Cost of what is queued plus what the writer is processing.
    bytes: usize,
    /// Why the recording failed (overflow or write error).
    failed: Option<String>,
    /// Set when the recording failed by overflow (events were dropped, but the writer goes on).
    lost: bool,
    stop: Option<Stop>,
    /// How the writer sleeps, so that pushers wake it only when it matters.
    sleep: Sleep,
    /// Wake-ups pushers gave the writer (for tests and diagnostics).
    wakes: u64,
}

/// The writer's sleep, as pushers see it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sleep {
    /// Working: a push needs no wake-up.
    Awake,
    /// Nothing queued and nothing recent: the next push wakes it (an idle session costs no wake-ups).
    Idle,
    /// It just wrote a batch and naps [`LAZY`]: output under way waits for the nap's end unless
    /// [`Recording::wake_bytes`] accumulate, so a fast stream costs a wake-up per nap, not one per packet.
    Lazy,
}

/// The writer's nap after a batch while output streams in. Live viewers are fed by the hub, not
/// the writer, so this only delays the disk by at most this much.
const LAZY: Duration = Duration::from_millis(5);

struct Shared {
    state: Mutex<QueueState>,
    wake: Condvar,
    start: Instant,
    failed: AtomicBool,
    /// Notified when the writer frees queue space or the recording fails.
    room: Notify,
    /// Notified when the recording fails.
    fail: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the recording failed (first reason wins).
    fn set_failed(&self, st: &mut QueueState, why: String) {
        if st.failed.is_none() {
            st.failed = Some(why);
            self.failed.store(true, Ordering::Release);
            self.fail.notify_waiters();
            self.room.notify_waiters();
        }
    }
}

/// A recording in progress, held by its session. Cheap calls that never block; the work
/// happens on the recording's writer thread.
pub struct Recording {
    shared: Arc<Shared>,
    path: PathBuf,
    budget: usize,
    record_input: bool,
    done: Option<oneshot::Receiver<Result<Sealed, Error>>>,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("path", &self.path)
            .field("failed", &self.failed())
            .finish_non_exhaustive()
    }
}

/// Where a recording's bytes go: a file, or in tests a file that fails on demand.
pub(crate) trait Sink: Send + 'static {
    fn write_record(&mut self, bytes: &[u8]) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
}

impl Sink for File {
    fn write_record(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

/// The message a write error leaves in [`Recording::failed`].
fn describe_write_error(e: &io::Error) -> String {
    // ENOSPC, EDQUOT
    if matches!(e.raw_os_error(), Some(28) | Some(122)) || e.kind() == io::ErrorKind::StorageFull {
        format!("disk full: {e}")
    } else {
        format!("cannot write the recording: {e}")
    }
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

impl Recording {
    /// Starts recording a session into `DIR/<session_id>.pcast`: creates the directory
    /// (0700) and the file (0600, never overwriting one), writes the header, syncs it and
    /// starts the writer thread. Does blocking file I/O (an fsync): async callers may want
    /// `spawn_blocking`.
    pub fn start(cfg: &RecorderConfig, meta: SessionMeta) -> Result<Recording, Error> {
        let path = crate::recording_path(&cfg.dir, &meta.session_id)?;
        create_dir_0700(&cfg.dir)?;
        let file = open_file(&path, true)?;
        // Make the new directory entry durable too (best effort: not every filesystem can).
        if let Ok(d) = File::open(&cfg.dir) {
            let _ = d.sync_all();
        }
        Self::start_with_sink(cfg, meta, path.clone(), Box::new(file)).inspect_err(|_| {
            // No recording started: leave no empty or half-written file behind.
            let _ = std::fs::remove_file(&path);
        })
    }

    /// Like [`start`](Self::start) but into the given path (created 0600 or truncated when it
    /// exists), whatever the configured directory. Tests use it with `/dev/full`.
    pub fn start_at(cfg: &RecorderConfig, meta: SessionMeta, path: impl Into<PathBuf>) -> Result<Recording, Error> {
        format::check_session_id(&meta.session_id)?;
        let path = path.into();
        let file = open_file(&path, false)?;
        Self::start_with_sink(cfg, meta, path, Box::new(file))
    }

    pub(crate) fn start_with_sink(
        cfg: &RecorderConfig,
        meta: SessionMeta,
        path: PathBuf,
        mut sink: Box<dyn Sink>,
    ) -> Result<Recording, Error> {
        format::check_session_id(&meta.session_id)?;
        let now = unix_now();
        let header = CastHeader::new(&meta, now.as_secs(), cfg.record_input);
        let json = serde_json::to_vec(&header).map_err(|e| Error::Failed(format!("cannot encode the header: {e}")))?;
        if json.len() > MAX_HEADER_JSON {
            return Err(Error::HeaderTooLarge(json.len()));
        }
        let prologue = format::prologue();
        let fr = frame(KIND_HEADER, json.len() + HASH_LEN);
        let chain0 = sha256_parts(&[&prologue, &fr, &json]);
        let mut head = Vec::with_capacity(prologue.len() + fr.len() + json.len() + HASH_LEN);
        head.extend_from_slice(&prologue);
        head.extend_from_slice(&fr);
        head.extend_from_slice(&json);
        head.extend_from_slice(&chain0);
        sink.write_record(&head)
            .map_err(|e| Error::Failed(describe_write_error(&e)))?;
        sink.sync().map_err(|e| Error::Failed(describe_write_error(&e)))?;

        let shared = Arc::new(Shared {
            state: Mutex::new(QueueState {
                queue: VecDeque::new(),
                bytes: 0,
                failed: None,
                lost: false,
                stop: None,
                sleep: Sleep::Awake,
                wakes: 0,
            }),
            wake: Condvar::new(),
            start: Instant::now(),
            failed: AtomicBool::new(false),
            room: Notify::new(),
            fail: Notify::new(),
        });
        let (tx, rx) = oneshot::channel();
        let writer = Writer {
            shared: shared.clone(),
            sink,
            key: cfg.signing_key.clone(),
            path: path.clone(),
            chain: chain0,
            chunks: 0,
            events: 0,
            cast_bytes: 0,
            file_bytes: head.len() as u64,
            text: Vec::new(),
            text_events: 0,
            output_only: true,
            deadline: None,
            last_t: 0,
            last_signed: None,
            chunk_bytes: cfg.chunk_bytes.clamp(1, MAX_CHUNK_TEXT),
            interval: cfg.flush_interval,
            delay: cfg.write_delay,
            budget: cfg.queue_bytes,
            zstd: zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| Error::io("start the zstd compressor", e))?,
            zstd_level: ZSTD_LEVEL,
            dead: None,
            codes: if meta.protocol == "rdp" {
                (format::RDP_SERVER, format::RDP_CLIENT)
            } else {
                (b'o', b'i')
            },
        };
        std::thread::Builder::new()
            .name(format!("rec-{}", meta.session_id.chars().take(10).collect::<String>()))
            .spawn(move || writer.run(tx))
            .map_err(|e| Error::io("spawn the recording writer thread", e))?;
        Ok(Recording {
            shared,
            path,
            budget: cfg.queue_bytes,
            record_input: cfg.record_input,
            done: Some(rx),
        })
    }

    /// The recording file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Terminal output (target → user). Never blocks.
    pub fn output(&self, data: &[u8]) {
        if !data.is_empty() {
            self.push_stream(false, Stream::Borrowed(data));
        }
    }

    /// Like [`output`](Self::output), keeping a reference to `data` instead of a copy when it is large.
    pub fn output_bytes(&self, data: Bytes) {
        if !data.is_empty() {
            self.push_stream(false, Stream::Shared(data));
        }
    }

    /// The user's input; recorded only when [`RecorderConfig::record_input`] is set. Never blocks.
    pub fn input(&self, data: &[u8]) {
        if self.record_input && !data.is_empty() {
            self.push_stream(true, Stream::Borrowed(data));
        }
    }

    /// The terminal was resized (an `"r"` event `"COLSxROWS"`). Never blocks.
    pub fn resize(&self, cols: u32, rows: u32) {
        self.push(Payload::Resize(cols, rows));
    }

    /// A marker (`"m"` event with the label `"kind: detail"`, or `"kind"` when `detail` is
    /// empty; cut at 64 KiB): an exec command line (`exec`), an exit status (`exit-status`), a transferred
    /// file (`file-upload`/`file-download` with name, size and sha256)… Never blocks.
    pub fn marker(&self, kind: &str, detail: &str) {
        let mut label = if detail.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}: {detail}")
        };
        if label.len() > MAX_MARKER {
            let mut cut = MAX_MARKER;
            while !label.is_char_boundary(cut) {
                cut -= 1;
            }
            label.truncate(cut);
            label.push('…');
        }
        self.push(Payload::Marker(label));
    }

    /// Why the recording failed, once it has: the session must then end with this message.
    /// For example "the recorder cannot keep up (…)" or "disk full: No space left on device
    /// (os error 28)".
    pub fn failed(&self) -> Option<String> {
        if !self.shared.failed.load(Ordering::Acquire) {
            return None;
        }
        self.shared.lock().failed.clone()
    }

    /// Resolves with the reason once the recording fails (for a session to `select!` on, so
    /// that a failure while the session is idle ends it too).
    pub async fn wait_failed(&self) -> String {
        loop {
            let notified = self.shared.fail.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(why) = self.failed() {
                return why;
            }
            notified.await;
        }
    }

    /// Resolves when the queue is at most half full (or the recording failed). Optional
    /// backpressure: a session may await it before reading more from the target, so that a
    /// fast transfer slows down to the recorder's pace instead of failing it.
    pub async fn writable(&self) {
        loop {
            let notified = self.shared.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.shared.lock();
                if st.failed.is_some() || st.bytes <= self.budget / 2 {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Bytes currently held by the queue and the batch being written (bounded by
    /// [`RecorderConfig::queue_bytes`] plus one event).
    pub fn queued_bytes(&self) -> usize {
        self.shared.lock().bytes
    }

    /// Queues output or input bytes, coalescing them with the previous event of the same
    /// stream when it is recent and small enough (no allocation then).
    fn push_stream(&self, input: bool, stream: Stream<'_>) {
        let data = stream.as_slice();
        if self.shared.failed.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.shared.lock();
        if st.failed.is_some() || st.stop.is_some() {
            return;
        }
        let t_us = self.shared.start.elapsed().as_micros() as u64;
        let budget_left = self.budget.saturating_sub(st.bytes);
        // Small pieces are coalesced into the previous event's owned buffer; large (shared) pieces are
        // queued as they are, never copied.
        let last = match st.queue.back_mut() {
            Some(Queued {
                t_us: lt,
                payload: Payload::Output(Data::Owned(a)),
            }) if !input => Some((*lt, a)),
            Some(Queued {
                t_us: lt,
                payload: Payload::Input(Data::Owned(a)),
            }) if input => Some((*lt, a)),
            _ => None,
        };
        let coalesce = last.filter(|(lt, a)| {
            data.len() < SHARE_MIN && t_us.saturating_sub(*lt) <= COALESCE_US && a.len() + data.len() <= COALESCE_MAX
        });
        let cost = data.len() + if coalesce.is_some() { 0 } else { EVENT_OVERHEAD };
        let budget_ok = cost <= budget_left;
        match coalesce {
            Some((_, a)) if budget_ok => a.extend_from_slice(data),
            _ if budget_ok => {
                let payload = if input {
                    Payload::Input(Data::new(stream))
                } else {
                    Payload::Output(Data::new(stream))
                };
                st.queue.push_back(Queued { t_us, payload });
            }
            _ => return self.overflow(st, t_us),
        }
        st.bytes += cost;
        let wake = match st.sleep {
            Sleep::Awake => false,
            Sleep::Idle => true,
            Sleep::Lazy => st.bytes >= self.wake_bytes(),
        };
        if wake {
            st.sleep = Sleep::Awake;
            st.wakes += 1;
        }
        drop(st);
        if wake {
            self.shared.wake.notify_one();
        }
    }

    /// Queued bytes that cut the writer's nap short: an eighth of the budget, far below the half at which
    /// [`writable`](Self::writable) holds sessions back.
    fn wake_bytes(&self) -> usize {
        (self.budget / 8).max(1)
    }

    fn push(&self, payload: Payload) {
        if self.shared.failed.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.shared.lock();
        if st.failed.is_some() || st.stop.is_some() {
            return;
        }
        let t_us = self.shared.start.elapsed().as_micros() as u64;
        let ev = Queued { t_us, payload };
        let cost = ev.cost();
        if st.bytes + cost > self.budget {
            return self.overflow(st, t_us);
        }
        st.bytes += cost;
        st.queue.push_back(ev);
        drop(st);
        self.shared.wake.notify_one();
    }

    /// The queue is over budget: fail the recording, note where events start to be lost.
    fn overflow(&self, mut st: MutexGuard<'_, QueueState>, t_us: u64) {
        let why = format!(
            "the recorder cannot keep up (more than {} bytes queued for the disk)",
            self.budget
        );
        let marker = Queued {
            t_us,
            payload: Payload::Marker(format!("recording-failed: {why}")),
        };
        st.bytes += marker.cost();
        st.queue.push_back(marker);
        st.lost = true;
        self.shared.set_failed(&mut st, why);
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Ends the recording: writes what is queued, the last chunk and the seal, and syncs the
    /// file. Fails when the recording failed on a write error (the file then verifies as
    /// truncated); a recording that merely dropped events is sealed ([`Sealed::lost`]).
    pub async fn finish(mut self) -> Result<Sealed, Error> {
        let Some(done) = self.done.take() else {
            return Err(Error::WriterGone);
        };
        {
            let mut st = self.shared.lock();
            st.stop = Some(Stop::Finish);
        }
        self.shared.wake.notify_one();
        done.await.unwrap_or(Err(Error::WriterGone))
    }
}

impl Drop for Recording {
    /// Dropped without [`finish`](Recording::finish): the writer writes what is queued and
    /// stops without a seal, so the file verifies as truncated.
    fn drop(&mut self) {
        if self.done.is_some() {
            let mut st = self.shared.lock();
            st.stop.get_or_insert(Stop::Abandon);
            drop(st);
            self.shared.wake.notify_one();
        }
    }
}

fn create_dir_0700(dir: &Path) -> Result<(), Error> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .map_err(|e| Error::io_path("create recordings directory", dir, e))
}

fn open_file(path: &Path, create_new: bool) -> Result<File, Error> {
    let mut o = OpenOptions::new();
    o.write(true);
    if create_new {
        o.create_new(true);
    } else {
        o.create(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map_err(|e| Error::io_path("create recording", path, e))
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    sink: Box<dyn Sink>,
    key: SigningKey,
    path: PathBuf,
    chain: [u8; HASH_LEN],
    chunks: u64,
    events: u64,
    cast_bytes: u64,
    file_bytes: u64,
    /// Cast text of the chunk being filled.
    text: Vec<u8>,
    text_events: u32,
    /// Every event of the chunk being filled is of the output stream.
    output_only: bool,
    /// When the chunk being filled must be written.
    deadline: Option<Instant>,
    last_t: u64,
    last_signed: Option<Instant>,
    chunk_bytes: usize,
    interval: Duration,
    delay: Option<Duration>,
    /// Queue budget (to sense pressure).
    budget: usize,
    /// The chunk compressor (one context per recording).
    zstd: zstd::bulk::Compressor<'static>,
    zstd_level: i32,
    /// Set after a write error: nothing more is written.
    dead: Option<String>,
    /// Event codes of the output and input streams: `o`/`i` (terminal), `s`/`c` (RDP PDUs).
    codes: (u8, u8),
}

impl Writer {
    fn run(mut self, done: oneshot::Sender<Result<Sealed, Error>>) {
        // Whether the last round wrote a batch.
        let mut busy = false;
        let stop = loop {
            let (batch, stop) = {
                let mut st = self.shared.lock();
                // After a batch, nap a little so that output streaming in is taken in larger batches.
                let mut nap = busy.then(|| Instant::now() + LAZY);
                loop {
                    let now = Instant::now();
                    if nap.is_some_and(|n| now >= n) {
                        nap = None;
                    }
                    let flush_due = self.deadline.is_some_and(|d| now >= d);
                    if st.stop.is_some() || flush_due || (!st.queue.is_empty() && nap.is_none()) {
                        break;
                    }
                    st.sleep = if nap.is_some() { Sleep::Lazy } else { Sleep::Idle };
                    let until = match (nap, self.deadline) {
                        (Some(n), Some(d)) => Some(n.min(d)),
                        (n, d) => n.or(d),
                    };
                    st = match until {
                        Some(u) => {
                            let (g, t) = self
                                .shared
                                .wake
                                .wait_timeout(st, u.saturating_duration_since(now))
                                .unwrap_or_else(|e| e.into_inner());
                            if !t.timed_out() {
                                // Woken on purpose (enough queued, a marker, a stop): the nap is over.
                                nap = None;
                            }
                            g
                        }
                        None => self.shared.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
                    };
                    st.sleep = Sleep::Awake;
                }
                st.sleep = Sleep::Awake;
                (std::mem::take(&mut st.queue), st.stop)
            };
            busy = !batch.is_empty();
            if !batch.is_empty() {
                if let Some(d) = self.delay {
                    std::thread::sleep(d);
                }
                let mut freed = 0;
                for ev in batch {
                    freed += ev.cost();
                    self.event(ev);
                }
                let mut st = self.shared.lock();
                st.bytes = st.bytes.saturating_sub(freed);
                drop(st);
                self.shared.room.notify_waiters();
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.flush_chunk();
            }
            if let Some(stop) = stop {
                // Nothing is queued after a stop: the handle is gone or finishing.
                if self.shared.lock().queue.is_empty() {
                    break stop;
                }
            }
        };
        match stop {
            Stop::Finish => {
                let _ = done.send(self.seal());
            }
            Stop::Abandon => self.flush_chunk(),
        }
    }

    fn event(&mut self, ev: Queued) {
        if self.dead.is_some() {
            return;
        }
        let t = ev.t_us.max(self.last_t);
        self.last_t = t;
        match ev.payload {
            Payload::Output(data) => self.stream(t, self.codes.0, &data),
            Payload::Input(data) => self.stream(t, self.codes.1, &data),
            Payload::Resize(c, r) => self.append(t, b'r', format!("{c}x{r}").as_bytes()),
            Payload::Marker(m) => self.append(t, b'm', m.as_bytes()),
        }
    }

    /// Terminal bytes are recorded as they came (no decoding, no escaping: that happens at
    /// export), in events of at most [`PIECE`] bytes.
    fn stream(&mut self, t: u64, code: u8, data: &[u8]) {
        for piece in data.chunks(PIECE) {
            self.append(t, code, piece);
        }
    }

    fn append(&mut self, t: u64, code: u8, data: &[u8]) {
        if self.dead.is_some() {
            return;
        }
        if self.text.is_empty() {
            self.deadline = Some(self.shared.start + Duration::from_micros(t) + self.interval);
        }
        if self.text.is_empty() {
            self.output_only = true;
        }
        self.output_only &= code == self.codes.0;
        push_bin_event(&mut self.text, t, code, data);
        self.text_events += 1;
        if self.text.len() >= self.chunk_bytes {
            self.flush_chunk();
        }
    }

    /// Compresses, chains, (maybe) signs and writes the chunk being filled.
    fn flush_chunk(&mut self) {
        self.deadline = None;
        if self.text.is_empty() || self.dead.is_some() {
            self.text.clear();
            self.text_events = 0;
            return;
        }
        // Under pressure (queue over a quarter full) the compressor switches to its fastest
        // level so that the writer catches up; back to the normal level when it has.
        let pressure = self.shared.lock().bytes > self.budget / 4;
        let level = if pressure { ZSTD_FAST_LEVEL } else { ZSTD_LEVEL };
        if level != self.zstd_level {
            if let Err(e) = self.zstd.set_compression_level(level) {
                return self.die(format!("cannot compress the recording: {e}"));
            }
            self.zstd_level = level;
        }
        let compressed = match self.zstd.compress(&self.text) {
            Ok(c) => c,
            Err(e) => return self.die(format!("cannot compress the recording: {e}")),
        };
        let index = self.chunks + 1;
        let signed = self.last_signed.is_none_or(|t| t.elapsed() >= self.interval);
        let body_len = format::CHUNK_FIXED + compressed.len() + HASH_LEN + if signed { format::SIG_LEN } else { 0 };
        let mut rec = Vec::with_capacity(format::FRAME_LEN + body_len);
        rec.extend_from_slice(&frame(KIND_CHUNK, body_len));
        rec.extend_from_slice(&index.to_be_bytes());
        rec.extend_from_slice(&self.text_events.to_be_bytes());
        rec.extend_from_slice(&(self.text.len() as u32).to_be_bytes());
        let flags = if signed { CHUNK_SIGNED } else { 0 } | if self.output_only { CHUNK_OUTPUT_ONLY } else { 0 };
        rec.push(flags);
        rec.extend_from_slice(&compressed);
        let chain = sha256_parts(&[&self.chain, &rec]);
        rec.extend_from_slice(&chain);
        if signed {
            let sig = self
                .key
                .sign(&[CHECKPOINT_DOMAIN, &index.to_be_bytes()[..], &chain[..]].concat());
            rec.extend_from_slice(&sig.to_bytes());
            self.last_signed = Some(Instant::now());
        }
        if let Err(e) = self.sink.write_record(&rec) {
            return self.die(describe_write_error(&e));
        }
        self.chain = chain;
        self.chunks = index;
        self.events += u64::from(self.text_events);
        self.cast_bytes += self.text.len() as u64;
        self.file_bytes += rec.len() as u64;
        self.text.clear();
        self.text_events = 0;
    }

    fn die(&mut self, why: String) {
        self.text.clear();
        self.text_events = 0;
        self.deadline = None;
        self.dead = Some(why.clone());
        let mut st = self.shared.lock();
        self.shared.set_failed(&mut st, why);
    }

    fn seal(&mut self) -> Result<Sealed, Error> {
        self.flush_chunk();
        if let Some(why) = &self.dead {
            return Err(Error::Failed(why.clone()));
        }
        let (lost, why) = {
            let st = self.shared.lock();
            (st.lost, st.failed.clone())
        };
        let end_ms = unix_now().as_millis() as u64;
        let fr = frame(KIND_SEAL, format::SEAL_BODY_LEN);
        let mut body = Vec::with_capacity(format::SEAL_BODY_LEN);
        body.extend_from_slice(&self.chunks.to_be_bytes());
        body.extend_from_slice(&self.events.to_be_bytes());
        body.extend_from_slice(&self.cast_bytes.to_be_bytes());
        body.extend_from_slice(&end_ms.to_be_bytes());
        body.extend_from_slice(&(if lost { SEAL_DATA_LOST } else { 0 }).to_be_bytes());
        body.extend_from_slice(&0u32.to_be_bytes());
        body.extend_from_slice(&self.chain);
        body.extend_from_slice(self.key.verifying_key().as_bytes());
        let sig = self.key.sign(&[SEAL_DOMAIN, &fr[..], &body[..]].concat());
        body.extend_from_slice(&sig.to_bytes());
        let mut rec = Vec::with_capacity(fr.len() + body.len());
        rec.extend_from_slice(&fr);
        rec.extend_from_slice(&body);
        let res = self.sink.write_record(&rec).and_then(|()| self.sink.sync());
        if let Err(e) = res {
            let why = describe_write_error(&e);
            self.die(why.clone());
            return Err(Error::Failed(why));
        }
        self.file_bytes += rec.len() as u64;
        Ok(Sealed {
            path: self.path.clone(),
            final_hash: hex::encode(self.chain),
            events: self.events,
            chunks: self.chunks,
            bytes: self.file_bytes,
            cast_bytes: self.cast_bytes,
            lost: if lost { why } else { None },
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::verify::{export_cast, verify};

    pub(crate) fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    pub(crate) fn meta(id: &str) -> SessionMeta {
        SessionMeta {
            session_id: id.into(),
            user: "alice".into(),
            target: "root@web".into(),
            protocol: "ssh".into(),
            client: Some("192.0.2.1:40000".into()),
            width: 80,
            height: 24,
            term: Some("xterm-256color".into()),
            title: None,
        }
    }

    fn cast_of(path: &Path) -> String {
        let mut out = Vec::new();
        export_cast(path, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Output bytes of all "o" events of a cast, concatenated.
    pub(crate) fn output_of(cast: &str) -> String {
        cast.lines()
            .skip(1)
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v[1] == "o")
            .map(|v| v[2].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn shared_and_borrowed_output_are_recorded_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recording::start(&RecorderConfig::new(dir.path(), key()), meta("s-shared")).unwrap();
        let mut sent = Vec::new();
        for i in 0..200u32 {
            // Large shared pieces, small shared pieces (copied, coalesced) and borrowed ones, interleaved.
            let piece: Vec<u8> = format!("<{i}>")
                .bytes()
                .cycle()
                .take(if i % 3 == 0 { 40_000 } else { 30 })
                .collect();
            if i % 2 == 0 {
                rec.output_bytes(Bytes::from(piece.clone()));
            } else {
                rec.output(&piece);
            }
            sent.extend_from_slice(&piece);
        }
        rec.output_bytes(Bytes::new());
        let sealed = rec.finish().await.unwrap();
        assert!(sealed.lost.is_none());
        verify(&sealed.path, &key().verifying_key()).unwrap();
        assert_eq!(output_of(&cast_of(&sealed.path)).as_bytes(), &sent[..]);
    }

    #[tokio::test]
    async fn large_shared_pieces_are_queued_uncopied_and_small_ones_coalesce() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RecorderConfig::new(dir.path(), key());
        // A writer that sleeps before each batch, so that the queue can be looked at.
        cfg.write_delay = Some(Duration::from_secs(2));
        let rec = Recording::start(&cfg, meta("s-queue")).unwrap();
        rec.output(b"first");
        std::thread::sleep(Duration::from_millis(50)); // the writer takes "first" and sleeps
        let big = Bytes::from(vec![7u8; SHARE_MIN]);
        rec.output(b"a");
        rec.output_bytes(Bytes::from_static(b"b"));
        rec.output_bytes(big.clone());
        rec.output(b"c");
        {
            let st = rec.shared.lock();
            let queued: Vec<(bool, usize, *const u8)> = st
                .queue
                .iter()
                .map(|q| match &q.payload {
                    Payload::Output(d) => (matches!(d, Data::Shared(_)), d.len(), d.as_ptr()),
                    _ => panic!("only output was queued"),
                })
                .collect();
            // "a" and "b" coalesced; the big piece is the caller's buffer; "c" is not copied into it.
            assert_eq!(queued.len(), 3, "{queued:?}");
            assert_eq!((queued[0].0, queued[0].1), (false, 2));
            assert_eq!(queued[1], (true, SHARE_MIN, big.as_ptr()));
            assert_eq!((queued[2].0, queued[2].1), (false, 1));
        }
        let sealed = rec.finish().await.unwrap();
        let mut want = b"firstab".to_vec();
        want.extend_from_slice(&big);
        want.push(b'c');
        assert_eq!(output_of(&cast_of(&sealed.path)).as_bytes(), &want[..]);
    }

    #[tokio::test]
    async fn records_seals_and_exports() {
        let dir = tempfile::tempdir().unwrap();
        let rdir = dir.path().join("rec/nested");
        let mut cfg = RecorderConfig::new(&rdir, key());
        cfg.record_input = true;
        let rec = Recording::start(&cfg, meta("s-1")).unwrap();
        rec.output(b"$ ");
        rec.input(b"ls\r");
        rec.output("héllo \x1b[1mwörld\x1b[0m\r\n".as_bytes());
        rec.resize(100, 30);
        rec.marker("exec", "ls -la /");
        rec.marker("exit-status", "0");
        assert!(rec.failed().is_none());
        let path = rec.path().to_owned();
        let sealed = rec.finish().await.unwrap();
        assert_eq!(sealed.path, path);
        assert!(sealed.lost.is_none());
        assert_eq!(sealed.bytes, std::fs::metadata(&path).unwrap().len());

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(&rdir).unwrap().permissions().mode() & 0o777, 0o700);
        }

        let v = verify(&path, &key().verifying_key()).unwrap();
        assert!(!v.truncated);
        assert_eq!(v.final_hash, sealed.final_hash);
        assert_eq!(v.events, sealed.events);
        assert_eq!(v.chunks, sealed.chunks);
        assert_eq!(v.authenticated_chunks, v.chunks);
        assert_eq!(v.meta.user, "alice");
        assert!(v.input_recorded);

        let cast = cast_of(&path);
        let lines: Vec<&str> = cast.lines().collect();
        let header: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(header["version"], 2);
        assert_eq!(header["postern"]["session_id"], "s-1");
        assert_eq!(header["env"]["TERM"], "xterm-256color");
        let events: Vec<serde_json::Value> = lines[1..].iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        let codes: Vec<&str> = events.iter().map(|e| e[1].as_str().unwrap()).collect();
        // "$ " and the next output are coalesced only when no input is between them.
        assert_eq!(codes, ["o", "i", "o", "r", "m", "m"]);
        assert_eq!(events[1][2], "ls\r");
        assert_eq!(events[2][2], "héllo \x1b[1mwörld\x1b[0m\r\n");
        assert_eq!(events[3][2], "100x30");
        assert_eq!(events[4][2], "exec: ls -la /");
        assert_eq!(events[5][2], "exit-status: 0");
        let ts: Vec<f64> = events.iter().map(|e| e[0].as_f64().unwrap()).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "times never go back: {ts:?}");
        assert_eq!(events.len() as u64, sealed.events);
        let v = verify(&sealed.path, &key().verifying_key()).unwrap();
        assert_eq!((v.events, v.cast_bytes), (sealed.events, sealed.cast_bytes));
        assert!(sealed.cast_bytes > 0 && sealed.cast_bytes < cast.len() as u64);

        // Never overwrites an existing recording.
        assert!(matches!(Recording::start(&cfg, meta("s-1")), Err(Error::Io { .. })));
    }

    #[tokio::test]
    async fn input_is_not_recorded_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RecorderConfig::new(dir.path(), key());
        let rec = Recording::start(&cfg, meta("s")).unwrap();
        rec.input(b"secret\r");
        rec.output(b"ok");
        let sealed = rec.finish().await.unwrap();
        let cast = cast_of(&sealed.path);
        assert!(!cast.contains("secret"));
        assert_eq!(sealed.events, 1);
        assert!(!verify(&sealed.path, &key().verifying_key()).unwrap().input_recorded);
    }

    #[tokio::test]
    async fn binary_and_split_utf8_output() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RecorderConfig::new(dir.path(), key());
        let rec = Recording::start(&cfg, meta("bin")).unwrap();
        let text = "€😀é".as_bytes();
        // Every multi-byte character cut in two across outputs far enough apart not to coalesce.
        rec.output(&text[..1]);
        std::thread::sleep(Duration::from_millis(15));
        rec.output(&text[1..5]);
        std::thread::sleep(Duration::from_millis(15));
        rec.output(&text[5..]);
        std::thread::sleep(Duration::from_millis(15));
        rec.output(b"\x00\x01bin\xff\xfe\x1b");
        std::thread::sleep(Duration::from_millis(15));
        rec.output(b"tail\xe2\x82"); // incomplete at the very end
        let sealed = rec.finish().await.unwrap();
        let cast = cast_of(&sealed.path);
        for l in cast.lines() {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
        assert_eq!(output_of(&cast), "€😀é\u{0}\u{1}bin\u{FFFD}\u{FFFD}\u{1b}tail\u{FFFD}");
        // No event holds a lone half of a character: the first one is only the carried "€".
        let first: serde_json::Value = serde_json::from_str(cast.lines().nth(1).unwrap()).unwrap();
        assert_eq!(first[2], "€");
    }

    #[tokio::test]
    async fn big_outputs_are_split_and_chunked() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RecorderConfig::new(dir.path(), key());
        let rec = Recording::start(&cfg, meta("big")).unwrap();
        let mut all = String::new();
        for i in 0..400 {
            let line = format!("line {i:05} {}\r\n", "é".repeat(i % 50));
            all.push_str(&line);
        }
        let blob = all.repeat(20); // ~0.5 MB in one call
        rec.output(blob.as_bytes());
        let sealed = rec.finish().await.unwrap();
        assert!(sealed.chunks >= 4, "128 KiB chunks: {}", sealed.chunks);
        assert!(
            sealed.chunks as usize >= blob.len() / cfg.chunk_bytes,
            "{}",
            sealed.chunks
        );
        let cast = cast_of(&sealed.path);
        assert_eq!(output_of(&cast), blob);
        let longest = cast.lines().map(str::len).max().unwrap();
        assert!(longest < 70 * 1024, "events are split: {longest}");
        assert!(sealed.bytes < blob.len() as u64 / 5, "compressed: {}", sealed.bytes);
    }

    #[tokio::test]
    async fn a_fast_stream_wakes_the_writer_per_nap_not_per_packet() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RecorderConfig::new(dir.path(), key());
        let rec = Recording::start(&cfg, meta("lazy")).unwrap();
        // An idle writer is woken by the first output at once.
        let t0 = Instant::now();
        while rec.shared.lock().sleep != Sleep::Idle {
            assert!(t0.elapsed() < Duration::from_secs(2), "the writer never went idle");
            std::thread::sleep(Duration::from_micros(200));
        }
        rec.output(b"prompt$ ");
        while rec.queued_bytes() > 0 {
            assert!(t0.elapsed() < Duration::from_secs(2), "the idle writer was not woken");
            std::thread::sleep(Duration::from_micros(200));
        }
        // Then 32 KiB packets as fast as a relay gives them: 2000 pushes, a few wake-ups.
        let packet = vec![b'x'; 32 * 1024];
        let wakes_before = rec.shared.lock().wakes;
        assert_eq!(wakes_before, 1, "the idle writer was woken by the first output");
        for _ in 0..2000 {
            rec.output(&packet);
            if rec.queued_bytes() > cfg.queue_bytes / 2 {
                rec.writable().await;
            }
        }
        let wakes = rec.shared.lock().wakes - wakes_before;
        assert!(wakes < 400, "{wakes} wake-ups for 2000 packets");
        let sealed = rec.finish().await.unwrap();
        assert!(sealed.lost.is_none());
        let v = verify(&sealed.path, &key().verifying_key()).unwrap();
        assert!(!v.truncated && !v.data_lost);
        let mut cast = Vec::new();
        export_cast(&sealed.path, &mut cast).unwrap();
        // Events only: the header line may hold an `x` of its own.
        let events = cast.splitn(2, |&b| b == b'\n').nth(1).unwrap();
        let xs = events.iter().filter(|&&b| b == b'x').count();
        assert_eq!(xs, 2000 * 32 * 1024, "every byte recorded");
    }

    #[tokio::test]
    async fn flushes_on_a_timer_without_new_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RecorderConfig::new(dir.path(), key());
        cfg.flush_interval = Duration::from_millis(200);
        let rec = Recording::start(&cfg, meta("timer")).unwrap();
        rec.output(b"one small line\r\n");
        let before = std::fs::metadata(rec.path()).unwrap().len();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let after = std::fs::metadata(rec.path()).unwrap().len();
        assert!(after > before, "the chunk was written by the timer");
        // What a crash would leave now: the event is there, the file is unsealed.
        let v = verify(rec.path(), &key().verifying_key()).unwrap();
        assert!(v.truncated);
        assert_eq!((v.chunks, v.events), (1, 1));
        assert_eq!(v.authenticated_chunks, 1, "the first chunk is a signed checkpoint");
        rec.finish().await.unwrap();
    }

    #[tokio::test]
    async fn dropped_without_finish_is_truncated_not_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RecorderConfig::new(dir.path(), key());
        cfg.chunk_bytes = 1024;
        let rec = Recording::start(&cfg, meta("crash")).unwrap();
        for i in 0..200 {
            rec.output(format!("output line {i}\r\n").as_bytes());
            rec.marker("tick", &i.to_string()); // separate events, so several chunks
        }
        let path = rec.path().to_owned();
        drop(rec);
        // The writer drains and exits on its own.
        let mut v = None;
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(20));
            let r = verify(&path, &key().verifying_key()).unwrap();
            if r.events > 0 && output_of(&cast_of(&path)).ends_with("line 199\r\n") {
                v = Some(r);
                break;
            }
        }
        let v = v.expect("the queued output reaches the file");
        assert!(v.truncated);
        assert!(v.chunks >= 2);
    }

    #[tokio::test]
    async fn flood_against_a_slow_writer_fails_closed_with_bounded_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RecorderConfig::new(dir.path(), key());
        cfg.queue_bytes = 1 << 20;
        cfg.write_delay = Some(Duration::from_millis(50));
        let rec = Recording::start(&cfg, meta("flood")).unwrap();
        let chunk = vec![b'x'; 4096];
        let started = Instant::now();
        let mut max_queued = 0;
        let mut calls = 0u64;
        while rec.failed().is_none() && started.elapsed() < Duration::from_secs(10) {
            rec.output(&chunk);
            calls += 1;
            max_queued = max_queued.max(rec.queued_bytes());
        }
        let why = rec.failed().expect("the flood fails the recording");
        assert!(why.starts_with("the recorder cannot keep up"), "{why}");
        // Keep flooding after the failure: calls return at once and nothing more is queued.
        let t = Instant::now();
        for _ in 0..100_000 {
            rec.output(&chunk);
            max_queued = max_queued.max(rec.queued_bytes());
        }
        assert!(t.elapsed() < Duration::from_secs(5), "output() never blocks");
        assert!(
            max_queued <= cfg.queue_bytes + 4096,
            "queue bounded: {max_queued} after {calls} calls"
        );
        assert_eq!(rec.wait_failed().await, why);
        // What was accepted is sealed, with the loss recorded.
        let sealed = rec.finish().await.unwrap();
        assert_eq!(sealed.lost.as_deref(), Some(why.as_str()));
        let v = verify(&sealed.path, &key().verifying_key()).unwrap();
        assert!(v.data_lost && !v.truncated);
        let cast = cast_of(&sealed.path);
        assert!(cast
            .lines()
            .last()
            .unwrap()
            .contains("recording-failed: the recorder cannot keep up"));
    }

    #[tokio::test]
    async fn many_tiny_events_are_bounded_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RecorderConfig::new(dir.path(), key());
        cfg.queue_bytes = 64 * 1024;
        cfg.write_delay = Some(Duration::from_millis(200));
        let rec = Recording::start(&cfg, meta("tiny")).unwrap();
        for _ in 0..100_000 {
            rec.resize(80, 24);
            assert!(rec.queued_bytes() <= cfg.queue_bytes + 256);
        }
        assert!(rec.failed().is_some());
        drop(rec);
    }

    #[tokio::test]
    async fn writable_applies_backpressure_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RecorderConfig::new(dir.path(), key());
        cfg.queue_bytes = 256 * 1024;
        cfg.write_delay = Some(Duration::from_millis(2));
        let rec = Recording::start(&cfg, meta("paced")).unwrap();
        let chunk = vec![b'y'; 16 * 1024];
        for _ in 0..200 {
            rec.writable().await;
            rec.output(&chunk);
        }
        assert!(rec.failed().is_none());
        let sealed = rec.finish().await.unwrap();
        assert_eq!(output_of(&cast_of(&sealed.path)).len(), 200 * 16 * 1024);
    }

    #[tokio::test]
    async fn huge_markers_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RecorderConfig::new(dir.path(), key());
        let rec = Recording::start(&cfg, meta("marker")).unwrap();
        rec.marker("exec", &"é".repeat(100_000));
        rec.marker("exit-status", "");
        let sealed = rec.finish().await.unwrap();
        let cast = cast_of(&sealed.path);
        let events: Vec<serde_json::Value> = cast.lines().skip(1).map(|l| serde_json::from_str(l).unwrap()).collect();
        let label = events[0][2].as_str().unwrap();
        assert!(label.starts_with("exec: éé") && label.ends_with('…'));
        assert!(label.len() <= MAX_MARKER + 3);
        assert_eq!(events[1][2], "exit-status");
    }

    #[tokio::test]
    async fn under_pressure_the_writer_compresses_faster_and_still_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RecorderConfig::new(dir.path(), key());
        cfg.queue_bytes = 6 << 20; // more than all the output: pressure but no overflow
        cfg.write_delay = Some(Duration::from_millis(100));
        let rec = Recording::start(&cfg, meta("noise")).unwrap();
        let mut seed = 0x1234_5678_u64;
        let mut sent = Vec::new();
        for _ in 0..300 {
            let piece: Vec<u8> = (0..16 * 1024)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b'!' + (seed % 90) as u8 // printable noise: compresses poorly
                })
                .collect();
            rec.output(&piece);
            sent.extend_from_slice(&piece);
            std::thread::sleep(Duration::from_micros(300));
        }
        let sealed = rec.finish().await.unwrap();
        assert!(sealed.lost.is_none());
        verify(&sealed.path, &key().verifying_key()).unwrap();
        let cast = cast_of(&sealed.path);
        assert_eq!(output_of(&cast).as_bytes(), &sent[..]);
    }

    /// A file that fails with ENOSPC once `left` bytes have been written.
    struct FailAfter {
        file: File,
        left: usize,
    }

    impl Sink for FailAfter {
        fn write_record(&mut self, bytes: &[u8]) -> io::Result<()> {
            if bytes.len() > self.left {
                let n = self.left;
                self.file.write_all(&bytes[..n])?;
                self.left = 0;
                return Err(io::Error::from_raw_os_error(28));
            }
            self.left -= bytes.len();
            self.file.write_all(bytes)
        }

        fn sync(&mut self) -> io::Result<()> {
            self.file.sync_all()
        }
    }

    #[tokio::test]
    async fn disk_full_mid_session_fails_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RecorderConfig::new(dir.path(), key());
        cfg.chunk_bytes = 2048;
        let path = dir.path().join("full.pcast");
        let file = open_file(&path, true).unwrap();
        let rec = Recording::start_with_sink(
            &cfg,
            meta("full"),
            path.clone(),
            Box::new(FailAfter { file, left: 6000 }),
        )
        .unwrap();
        let failed = tokio::time::timeout(Duration::from_secs(10), async {
            let mut i = 0u64;
            loop {
                rec.output(format!("{i:08} some output that does not compress too well {}\r\n", i * 7919).as_bytes());
                i += 1;
                if i.is_multiple_of(64) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if let Some(f) = rec.failed() {
                    break f;
                }
            }
        })
        .await
        .expect("the write error is noticed");
        assert_eq!(failed, "disk full: No space left on device (os error 28)");
        let err = rec.finish().await.unwrap_err();
        assert!(matches!(&err, Error::Failed(m) if m == &failed), "{err}");
        // The file holds the header and the chunks written before the disk filled.
        let v = verify(&path, &key().verifying_key()).unwrap();
        assert!(v.truncated);
        assert!(v.chunks >= 1);
    }

    #[tokio::test]
    async fn dev_full_fails_at_start() {
        if !Path::new("/dev/full").exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = RecorderConfig::new(dir.path(), key());
        let err = Recording::start_at(&cfg, meta("devfull"), "/dev/full").unwrap_err();
        assert_eq!(
            err.to_string(),
            "recording failed: disk full: No space left on device (os error 28)"
        );
    }

    #[test]
    fn bad_session_ids_and_huge_headers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RecorderConfig::new(dir.path(), key());
        assert!(matches!(
            Recording::start(&cfg, meta("../etc/x")),
            Err(Error::InvalidSessionId(_))
        ));
        let mut m = meta("huge");
        m.title = Some("t".repeat(100_000));
        assert!(matches!(Recording::start(&cfg, m), Err(Error::HeaderTooLarge(_))));
        assert!(!dir.path().join("huge.pcast").exists(), "a failed start leaves no file");
    }
}
