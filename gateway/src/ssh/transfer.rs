//! File-transfer metadata read from the bytes a relay forwards, in both
//! directions: the SFTP protocol (version 3, what OpenSSH speaks, also under
//! OpenSSH 9's `scp`) and the legacy scp protocol (rcp over `exec scp -t` /
//! `scp -f`, i.e. `scp -O`).
//!
//! The parser never holds more than one packet: control packets (OPEN, CLOSE,
//! STATUS, …) are buffered whole up to [`MAX_CONTROL`] bytes, the data of WRITE
//! requests and DATA responses is streamed through SHA-256 without being kept,
//! and packets the parser does not need are skipped unread. Anything malformed
//! or oversized stops the parsing (one `stopped` event says why); the relay goes
//! on forwarding bytes untouched. Nothing here panics on any input.
//!
//! Each transferred file yields one [`FileEvent`] when it is closed: direction,
//! path, bytes, the SHA-256 of the data when it was transferred sequentially from
//! offset 0 (otherwise "non-sequential, no hash"), and the status. REMOVE,
//! RENAME, MKDIR, RMDIR and SETSTAT yield events too.

use std::collections::{HashMap, VecDeque};

use sha2::{Digest, Sha256};

/// Largest SFTP packet accepted (OpenSSH's limit is 256 KiB; data is streamed,
/// so this bounds nothing in memory, only sanity).
const MAX_PACKET: usize = 4 * 1024 * 1024;
/// Largest control packet buffered whole (paths, handles, attributes).
pub(crate) const MAX_CONTROL: usize = 64 * 1024;
/// Largest handle (the protocol says 256 bytes).
const MAX_HANDLE: usize = 256;
/// Requests awaiting their response (OpenSSH pipelines 64 by default).
const MAX_PENDING: usize = 4096;
/// Files open at once.
const MAX_FILES: usize = 1024;
/// Longest legacy scp header or message line.
const MAX_SCP_LINE: usize = 8 * 1024;
/// Deepest legacy scp directory recursion tracked.
const MAX_SCP_DEPTH: usize = 256;
/// Longest path kept in an event.
const MAX_PATH: usize = 4096;

/// What the relay reports when a hash could not be computed.
pub(crate) const NON_SEQUENTIAL: &str = "non-sequential, no hash";

/// One thing that happened to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileEvent {
    /// `sftp` or `scp`.
    pub protocol: &'static str,
    /// `upload`, `download`, `remove`, `rename`, `mkdir`, `rmdir`, `setstat`, `error` (a message
    /// from the scp sender) or `stopped` (the parser gave up; `status` says why).
    pub op: &'static str,
    /// The file (for a rename, the old name).
    pub path: String,
    /// The new name of a rename.
    pub to: Option<String>,
    /// Bytes transferred (uploads and downloads).
    pub bytes: Option<u64>,
    /// SHA-256 (hex) of the bytes, when they went sequentially from offset 0.
    pub sha256: Option<String>,
    /// `ok`, or what went wrong.
    pub status: String,
    /// Open flags, file mode or changed attributes.
    pub detail: Option<String>,
    /// Legacy scp: the path argument of the remote `scp -t`/`scp -f` command (`path` is the
    /// name the protocol carried, under the directories a recursive copy entered).
    pub remote: Option<String>,
}

impl FileEvent {
    fn new(protocol: &'static str, op: &'static str, path: String, status: String) -> Self {
        FileEvent {
            protocol,
            op,
            path,
            to: None,
            bytes: None,
            sha256: None,
            status,
            detail: None,
            remote: None,
        }
    }

    /// An upload or download (one audit event each).
    pub(crate) fn is_transfer(&self) -> bool {
        matches!(self.op, "upload" | "download")
    }

    /// Whether it went wrong.
    pub(crate) fn failed(&self) -> bool {
        self.status != "ok"
    }

    /// Compact JSON for the recording marker (`file: {...}`).
    pub(crate) fn to_json(&self) -> String {
        let mut m = serde_json::Map::new();
        m.insert("op".into(), self.op.into());
        m.insert("protocol".into(), self.protocol.into());
        m.insert("path".into(), self.path.clone().into());
        if let Some(to) = &self.to {
            m.insert("to".into(), to.clone().into());
        }
        if let Some(b) = self.bytes {
            m.insert("bytes".into(), b.into());
            match &self.sha256 {
                Some(h) => m.insert("sha256".into(), h.clone().into()),
                None => m.insert("sha256".into(), serde_json::Value::Null),
            };
            if self.sha256.is_none() {
                m.insert("note".into(), NON_SEQUENTIAL.into());
            }
        }
        if let Some(d) = &self.detail {
            m.insert("detail".into(), d.clone().into());
        }
        if let Some(r) = &self.remote {
            m.insert("remote".into(), r.clone().into());
        }
        m.insert("status".into(), self.status.clone().into());
        serde_json::Value::Object(m).to_string()
    }

    /// One line for the audit trail.
    pub(crate) fn summary(&self) -> String {
        let mut s = format!("{} {} {:?}", self.protocol, self.op, self.path);
        if let Some(r) = &self.remote {
            s += &format!(" (scp path argument {r:?})");
        }
        if let Some(to) = &self.to {
            s += &format!(" to {to:?}");
        }
        if let Some(b) = self.bytes {
            s += &format!(
                ", {b} bytes, sha256 {}",
                self.sha256.as_deref().unwrap_or(NON_SEQUENTIAL)
            );
        }
        s += &format!(", status: {}", self.status);
        s
    }
}

/// Tracks the file transfers of one channel.
pub(crate) enum Tracker {
    /// The `sftp` subsystem (also OpenSSH 9's default `scp`).
    Sftp(Box<Sftp>),
    /// Legacy scp (`exec scp -t`/`scp -f`).
    Scp(Box<Scp>),
    /// Parsing stopped.
    Stopped,
}

impl Tracker {
    /// For an `sftp` subsystem channel.
    pub(crate) fn sftp() -> Tracker {
        Tracker::Sftp(Box::default())
    }

    /// For an exec channel, when the command is the remote end of legacy scp.
    pub(crate) fn scp(command: &str) -> Option<Tracker> {
        Scp::from_command(command).map(|s| Tracker::Scp(Box::new(s)))
    }

    /// Bytes from the user's client to the target.
    pub(crate) fn client_bytes(&mut self, data: &[u8], out: &mut Vec<FileEvent>) {
        let (proto, r) = match self {
            Tracker::Sftp(s) => ("sftp", s.feed(Dir::Up, data, out)),
            Tracker::Scp(s) => ("scp", s.feed(s.upload, data, out)),
            Tracker::Stopped => return,
        };
        if let Err(why) = r {
            self.stop(proto, why, out);
        }
    }

    /// Bytes from the target to the user's client.
    pub(crate) fn target_bytes(&mut self, data: &[u8], out: &mut Vec<FileEvent>) {
        let (proto, r) = match self {
            Tracker::Sftp(s) => ("sftp", s.feed(Dir::Down, data, out)),
            Tracker::Scp(s) => ("scp", s.feed(!s.upload, data, out)),
            Tracker::Stopped => return,
        };
        if let Err(why) = r {
            self.stop(proto, why, out);
        }
    }

    /// The channel ended: files still open are reported as not completed.
    pub(crate) fn finish(&mut self, out: &mut Vec<FileEvent>) {
        match std::mem::replace(self, Tracker::Stopped) {
            Tracker::Sftp(s) => s.finish(out),
            Tracker::Scp(s) => s.finish(out),
            Tracker::Stopped => {}
        }
    }

    fn stop(&mut self, protocol: &'static str, why: String, out: &mut Vec<FileEvent>) {
        // Files in flight are reported as far as they were seen.
        let mut pending = Vec::new();
        self.finish(&mut pending);
        out.extend(pending);
        out.push(FileEvent::new(
            protocol,
            "stopped",
            String::new(),
            format!("transfer parsing stopped: {why}"),
        ));
        *self = Tracker::Stopped;
    }
}

/// Bytes counted and hashed in one direction of one file.
struct Progress {
    bytes: u64,
    /// Offset the next sequential chunk starts at.
    next: u64,
    /// `None` once the transfer was not sequential.
    hasher: Option<Sha256>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            bytes: 0,
            next: 0,
            hasher: Some(Sha256::new()),
        }
    }
}

impl Progress {
    /// A chunk of `len` bytes at `offset` starts; returns the hasher to feed it to, if the
    /// transfer is still sequential.
    fn start(&mut self, offset: u64, len: u64) -> Option<Sha256> {
        self.bytes = self.bytes.saturating_add(len);
        if offset != self.next {
            self.hasher = None;
        }
        self.next = offset.saturating_add(len);
        self.hasher.take()
    }

    fn digest(self) -> Option<String> {
        self.hasher.map(|h| hex::encode(h.finalize()))
    }
}

// ---------------------------------------------------------------------------------------------
// SFTP (draft-ietf-secsh-filexfer-02, version 3)

mod sftp {
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const RENAME: u8 = 18;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const EXTENDED: u8 = 200;

    pub const FXF_READ: u32 = 0x01;
    pub const FXF_WRITE: u32 = 0x02;
    pub const FXF_APPEND: u32 = 0x04;
    pub const FXF_CREAT: u32 = 0x08;
    pub const FXF_TRUNC: u32 = 0x10;
    pub const FXF_EXCL: u32 = 0x20;

    pub const FX_OK: u32 = 0;
    pub const FX_EOF: u32 = 1;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Client to target: requests.
    Up,
    /// Target to client: responses.
    Down,
}

/// Big-endian reader over one packet; every read is checked.
struct Rd<'a>(&'a [u8]);

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("packet shorter than its fields".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    fn string(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn path(&mut self) -> Result<String, String> {
        Ok(text(self.string()?))
    }
    fn handle(&mut self) -> Result<Vec<u8>, String> {
        let h = self.string()?;
        if h.len() > MAX_HANDLE {
            return Err(format!("handle of {} bytes (at most {MAX_HANDLE})", h.len()));
        }
        Ok(h.to_vec())
    }
    /// ATTRS; returns a description of what is set.
    fn attrs(&mut self) -> Result<String, String> {
        let flags = self.u32()?;
        let mut parts = Vec::new();
        if flags & 0x1 != 0 {
            parts.push(format!("size={}", self.u64()?));
        }
        if flags & 0x2 != 0 {
            let (u, g) = (self.u32()?, self.u32()?);
            parts.push(format!("uid={u} gid={g}"));
        }
        if flags & 0x4 != 0 {
            parts.push(format!("mode={:04o}", self.u32()? & 0o7777));
        }
        if flags & 0x8 != 0 {
            let (a, m) = (self.u32()?, self.u32()?);
            parts.push(format!("atime={a} mtime={m}"));
        }
        if flags & 0x8000_0000 != 0 {
            let n = self.u32()?;
            for _ in 0..n {
                self.string()?;
                self.string()?;
            }
        }
        Ok(parts.join(" "))
    }
}

/// Text for an event: lossy UTF-8, cut at [`MAX_PATH`] bytes.
fn text(b: &[u8]) -> String {
    let b = &b[..b.len().min(MAX_PATH)];
    String::from_utf8_lossy(b).into_owned()
}

fn status_text(code: u32, msg: &str) -> String {
    let name = match code {
        0 => "ok",
        1 => "end of file",
        2 => "no such file",
        3 => "permission denied",
        4 => "failure",
        5 => "bad message",
        6 => "no connection",
        7 => "connection lost",
        8 => "operation unsupported",
        _ => "error",
    };
    if code == sftp::FX_OK || msg.is_empty() || msg.eq_ignore_ascii_case(name) {
        name.to_owned()
    } else {
        format!("{name}: {msg}")
    }
}

fn open_flags(f: u32) -> String {
    let names = [
        (sftp::FXF_READ, "read"),
        (sftp::FXF_WRITE, "write"),
        (sftp::FXF_APPEND, "append"),
        (sftp::FXF_CREAT, "creat"),
        (sftp::FXF_TRUNC, "trunc"),
        (sftp::FXF_EXCL, "excl"),
    ];
    let v: Vec<&str> = names.iter().filter(|(b, _)| f & b != 0).map(|(_, n)| *n).collect();
    format!("flags={}", v.join(","))
}

/// Where one direction's byte stream is in the current packet.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Reading the 4-byte length.
    Len,
    /// Reading the type byte of a packet of `len` bytes.
    Type { len: usize },
    /// Buffering a whole control packet of `len` bytes.
    Whole { len: usize },
    /// Buffering the header of a WRITE or DATA packet of `len` bytes.
    Head { len: usize },
    /// Streaming the data of a WRITE or DATA packet, then skipping `rest` bytes.
    Data { left: usize, rest: usize },
    /// Skipping a packet the parser does not need.
    Skip { left: usize },
}

/// Splits one direction's stream into packets.
struct Framer {
    phase: Phase,
    buf: Vec<u8>,
    /// The data chunk being streamed in this direction.
    current: Option<Current>,
}

impl Default for Framer {
    fn default() -> Self {
        Framer {
            phase: Phase::Len,
            buf: Vec::new(),
            current: None,
        }
    }
}

struct OpenFile {
    path: String,
    flags: u32,
    up: Progress,
    down: Progress,
    error: Option<String>,
}

enum Pending {
    Open { path: String, flags: u32 },
    Read { handle: Vec<u8>, offset: u64 },
    Write { handle: Vec<u8> },
    Close { handle: Vec<u8> },
    Op(FileEvent),
}

/// The data chunk being streamed.
struct Current {
    handle: Vec<u8>,
    dir: Dir,
    hasher: Option<Sha256>,
}

/// SFTP state of one channel.
#[derive(Default)]
pub(crate) struct Sftp {
    up: Framer,
    down: Framer,
    pending: HashMap<u32, Pending>,
    files: HashMap<Vec<u8>, OpenFile>,
}

impl Sftp {
    fn feed(&mut self, dir: Dir, mut data: &[u8], out: &mut Vec<FileEvent>) -> Result<(), String> {
        while !data.is_empty() {
            let phase = match dir {
                Dir::Up => self.up.phase,
                Dir::Down => self.down.phase,
            };
            let next = match phase {
                Phase::Len => {
                    let buf = self.buf(dir);
                    let take = (4 - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if buf.len() < 4 {
                        continue;
                    }
                    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    buf.clear();
                    if len == 0 {
                        return Err("empty packet".into());
                    }
                    if len > MAX_PACKET {
                        return Err(format!("oversized packet ({len} bytes; at most {MAX_PACKET})"));
                    }
                    Phase::Type { len }
                }
                Phase::Type { len } => {
                    let t = data[0];
                    data = &data[1..];
                    let streamed = matches!((dir, t), (Dir::Up, sftp::WRITE) | (Dir::Down, sftp::DATA));
                    let wanted = match dir {
                        Dir::Up => matches!(
                            t,
                            sftp::INIT
                                | sftp::OPEN
                                | sftp::CLOSE
                                | sftp::READ
                                | sftp::SETSTAT
                                | sftp::FSETSTAT
                                | sftp::REMOVE
                                | sftp::MKDIR
                                | sftp::RMDIR
                                | sftp::RENAME
                                | sftp::EXTENDED
                        ),
                        Dir::Down => matches!(t, sftp::VERSION | sftp::STATUS | sftp::HANDLE),
                    };
                    if streamed {
                        self.buf(dir).push(t);
                        Phase::Head { len }
                    } else if wanted {
                        if len > MAX_CONTROL {
                            return Err(format!("oversized control packet (type {t}, {len} bytes)"));
                        }
                        self.buf(dir).push(t);
                        if len == 1 {
                            self.whole(dir, out)?;
                            Phase::Len
                        } else {
                            Phase::Whole { len }
                        }
                    } else if len > 1 {
                        Phase::Skip { left: len - 1 }
                    } else {
                        Phase::Len
                    }
                }
                Phase::Whole { len } => {
                    let buf = self.buf(dir);
                    let take = (len - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if buf.len() < len {
                        continue;
                    }
                    self.whole(dir, out)?;
                    Phase::Len
                }
                Phase::Head { len } => {
                    // WRITE: type id handle(string) offset(u64) len(u32); DATA: type id len(u32).
                    let buf = self.buf(dir);
                    let need = if buf.len() < 9 {
                        9
                    } else if dir == Dir::Up {
                        let h = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) as usize;
                        if h > MAX_HANDLE {
                            return Err(format!("WRITE with a handle of {h} bytes (at most {MAX_HANDLE})"));
                        }
                        9 + h + 12
                    } else {
                        9
                    };
                    if need > len {
                        return Err("data packet shorter than its header".into());
                    }
                    let take = (need - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if buf.len() < need || (dir == Dir::Up && need == 9) {
                        continue;
                    }
                    let head = std::mem::take(buf);
                    let n = self.data_start(dir, &head)?;
                    let left = len - need;
                    if n > left {
                        return Err("data longer than its packet".into());
                    }
                    if n == 0 {
                        self.data_end(dir);
                        if left > n {
                            Phase::Skip { left: left - n }
                        } else {
                            Phase::Len
                        }
                    } else {
                        Phase::Data {
                            left: n,
                            rest: left - n,
                        }
                    }
                }
                Phase::Data { left, rest } => {
                    let take = left.min(data.len());
                    if let Some(h) = self.framer(dir).current.as_mut().and_then(|c| c.hasher.as_mut()) {
                        h.update(&data[..take]);
                    }
                    data = &data[take..];
                    if take < left {
                        Phase::Data {
                            left: left - take,
                            rest,
                        }
                    } else {
                        self.data_end(dir);
                        if rest > 0 {
                            Phase::Skip { left: rest }
                        } else {
                            Phase::Len
                        }
                    }
                }
                Phase::Skip { left } => {
                    let take = left.min(data.len());
                    data = &data[take..];
                    if take < left {
                        Phase::Skip { left: left - take }
                    } else {
                        Phase::Len
                    }
                }
            };
            self.framer(dir).phase = next;
        }
        Ok(())
    }

    fn framer(&mut self, dir: Dir) -> &mut Framer {
        match dir {
            Dir::Up => &mut self.up,
            Dir::Down => &mut self.down,
        }
    }

    fn buf(&mut self, dir: Dir) -> &mut Vec<u8> {
        &mut self.framer(dir).buf
    }

    fn pend(&mut self, id: u32, p: Pending) -> Result<(), String> {
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&id) {
            return Err(format!("more than {MAX_PENDING} requests awaiting a response"));
        }
        self.pending.insert(id, p);
        Ok(())
    }

    /// A whole control packet is in the direction's buffer.
    fn whole(&mut self, dir: Dir, out: &mut Vec<FileEvent>) -> Result<(), String> {
        let framer = self.framer(dir);
        let pkt = std::mem::take(&mut framer.buf);
        let r = match dir {
            Dir::Up => self.request(&pkt),
            Dir::Down => self.response(&pkt, out),
        };
        // Keep a small buffer around, not the largest packet seen.
        let framer = self.framer(dir);
        if pkt.capacity() <= 4096 {
            framer.buf = pkt;
            framer.buf.clear();
        }
        r
    }

    fn request(&mut self, pkt: &[u8]) -> Result<(), String> {
        let mut r = Rd(pkt);
        let t = r.u8()?;
        if t == sftp::INIT {
            let v = r.u32()?;
            if v != 3 {
                return Err(format!("the client asked for SFTP version {v} (only 3 is parsed)"));
            }
            return Ok(());
        }
        let id = r.u32()?;
        let op = |op: &'static str, path: String| FileEvent::new("sftp", op, path, String::new());
        let p = match t {
            sftp::OPEN => {
                let path = r.path()?;
                let flags = r.u32()?;
                r.attrs()?;
                Pending::Open { path, flags }
            }
            sftp::CLOSE => Pending::Close { handle: r.handle()? },
            sftp::READ => {
                let handle = r.handle()?;
                let offset = r.u64()?;
                r.u32()?;
                Pending::Read { handle, offset }
            }
            sftp::REMOVE => Pending::Op(op("remove", r.path()?)),
            sftp::RMDIR => Pending::Op(op("rmdir", r.path()?)),
            sftp::MKDIR => {
                let mut e = op("mkdir", r.path()?);
                e.detail = Some(r.attrs()?).filter(|d| !d.is_empty());
                Pending::Op(e)
            }
            sftp::SETSTAT => {
                let mut e = op("setstat", r.path()?);
                e.detail = Some(r.attrs()?);
                Pending::Op(e)
            }
            sftp::FSETSTAT => {
                let handle = r.handle()?;
                let path = match self.files.get(&handle) {
                    Some(f) => f.path.clone(),
                    None => return Ok(()),
                };
                let mut e = op("setstat", path);
                e.detail = Some(r.attrs()?);
                Pending::Op(e)
            }
            sftp::RENAME => {
                let mut e = op("rename", r.path()?);
                e.to = Some(r.path()?);
                Pending::Op(e)
            }
            sftp::EXTENDED => {
                let name = r.string()?;
                if name != b"posix-rename@openssh.com" {
                    return Ok(());
                }
                let mut e = op("rename", r.path()?);
                e.to = Some(r.path()?);
                Pending::Op(e)
            }
            _ => return Ok(()),
        };
        self.pend(id, p)
    }

    fn response(&mut self, pkt: &[u8], out: &mut Vec<FileEvent>) -> Result<(), String> {
        let mut r = Rd(pkt);
        let t = r.u8()?;
        if t == sftp::VERSION {
            let v = r.u32()?;
            if v != 3 {
                return Err(format!("the target speaks SFTP version {v} (only 3 is parsed)"));
            }
            return Ok(());
        }
        let id = r.u32()?;
        match t {
            sftp::HANDLE => {
                let handle = r.handle()?;
                if let Some(Pending::Open { path, flags }) = self.pending.remove(&id) {
                    if self.files.len() >= MAX_FILES && !self.files.contains_key(&handle) {
                        return Err(format!("more than {MAX_FILES} files open at once"));
                    }
                    if let Some(old) = self.files.insert(
                        handle,
                        OpenFile {
                            path,
                            flags,
                            up: Progress::default(),
                            down: Progress::default(),
                            error: None,
                        },
                    ) {
                        // The target reused a handle we never saw closed.
                        close_events(old, "not closed (handle reused)".into(), out);
                    }
                }
            }
            sftp::STATUS => {
                let code = r.u32()?;
                // The message and language tag are optional in some old servers.
                let msg = r.string().map(text).unwrap_or_default();
                let status = status_text(code, &msg);
                match self.pending.remove(&id) {
                    Some(Pending::Open { path, flags }) => {
                        let op = if flags & (sftp::FXF_WRITE | sftp::FXF_APPEND | sftp::FXF_CREAT) != 0 {
                            "upload"
                        } else {
                            "download"
                        };
                        let mut e = FileEvent::new("sftp", op, path, status);
                        e.detail = Some(open_flags(flags));
                        if code == sftp::FX_OK {
                            e.status = "open answered without a handle".into();
                        }
                        out.push(e);
                    }
                    Some(Pending::Read { handle, .. }) | Some(Pending::Write { handle })
                        if code != sftp::FX_OK && code != sftp::FX_EOF =>
                    {
                        if let Some(f) = self.files.get_mut(&handle) {
                            f.error.get_or_insert(status);
                        }
                    }
                    Some(Pending::Close { handle }) => {
                        if let Some(f) = self.files.remove(&handle) {
                            let status = match (&f.error, code) {
                                (Some(e), _) => e.clone(),
                                (None, _) => status,
                            };
                            close_events(f, status, out);
                        }
                    }
                    Some(Pending::Op(mut e)) => {
                        e.status = status;
                        out.push(e);
                    }
                    Some(Pending::Read { .. }) | Some(Pending::Write { .. }) | None => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The header of a WRITE (up) or DATA (down) packet; returns the data length.
    fn data_start(&mut self, dir: Dir, head: &[u8]) -> Result<usize, String> {
        let mut r = Rd(head);
        r.u8()?;
        let id = r.u32()?;
        let (handle, offset, len) = match dir {
            Dir::Up => {
                let handle = r.handle()?;
                let offset = r.u64()?;
                let len = r.u32()? as usize;
                self.pend(id, Pending::Write { handle: handle.clone() })?;
                (handle, offset, len)
            }
            Dir::Down => {
                let len = r.u32()? as usize;
                match self.pending.remove(&id) {
                    Some(Pending::Read { handle, offset }) => (handle, offset, len),
                    _ => return Ok(len),
                }
            }
        };
        if let Some(f) = self.files.get_mut(&handle) {
            let p = match dir {
                Dir::Up => &mut f.up,
                Dir::Down => &mut f.down,
            };
            let hasher = p.start(offset, len as u64);
            self.framer(dir).current = Some(Current { handle, dir, hasher });
        }
        Ok(len)
    }

    /// The data of the current chunk went through: give the hasher back to its file.
    fn data_end(&mut self, dir: Dir) {
        if let Some(c) = self.framer(dir).current.take() {
            if let Some(f) = self.files.get_mut(&c.handle) {
                let p = match c.dir {
                    Dir::Up => &mut f.up,
                    Dir::Down => &mut f.down,
                };
                if c.hasher.is_some() {
                    p.hasher = c.hasher;
                }
            }
        }
    }

    /// Files still open: a chunk cut short leaves its file without a hash.
    fn finish(mut self: Box<Self>, out: &mut Vec<FileEvent>) {
        let mut files: Vec<(Vec<u8>, OpenFile)> = self.files.drain().collect();
        files.sort_by(|a, b| a.1.path.cmp(&b.1.path));
        for (_, f) in files {
            close_events(f, "not closed (the channel ended)".into(), out);
        }
    }
}

/// The events of a closed file: an upload if anything was written (or it was opened to
/// write), a download if anything was read (or it was opened only to read).
fn close_events(f: OpenFile, status: String, out: &mut Vec<FileEvent>) {
    let writes = f.flags & (sftp::FXF_WRITE | sftp::FXF_APPEND | sftp::FXF_CREAT) != 0;
    let up = f.up.bytes > 0 || (writes && f.down.bytes == 0);
    let down = f.down.bytes > 0 || !up;
    for (op, p) in [("upload", f.up), ("download", f.down)] {
        if (op == "upload" && !up) || (op == "download" && !down) {
            continue;
        }
        let mut e = FileEvent::new("sftp", op, f.path.clone(), status.clone());
        e.bytes = Some(p.bytes);
        e.sha256 = p.digest();
        e.detail = Some(open_flags(f.flags));
        out.push(e);
    }
}

// ---------------------------------------------------------------------------------------------
// Legacy scp (the rcp protocol)

/// What the receiver's next acknowledgement answers.
enum Ack {
    /// The receiver is ready.
    Start,
    /// A `T` (times), `D` (enter directory) or `E` (leave directory) line.
    Line,
    /// A `C` header: on success the data follows.
    Header,
    /// The end of a file's data.
    Done(Box<ScpFile>),
}

struct ScpFile {
    path: String,
    mode: String,
    size: u64,
    progress: Progress,
    error: Option<String>,
}

impl ScpFile {
    fn event(self, upload: bool, remote: &str, status: String) -> FileEvent {
        let mut e = FileEvent::new("scp", if upload { "upload" } else { "download" }, self.path, status);
        e.bytes = Some(self.progress.bytes);
        e.sha256 = if self.progress.bytes == self.size {
            self.progress.digest()
        } else {
            None
        };
        e.detail = Some(format!("mode={} size={}", self.mode, self.size));
        e.remote = Some(remote.to_owned()).filter(|r| !r.is_empty());
        e
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    /// Reading a header or message line.
    Line,
    /// A `C` header was sent; waiting for the receiver's answer.
    AwaitHeaderAck,
    /// File data.
    Data { left: u64 },
    /// The sender's status byte after the data.
    EndByte,
    /// The sender's error line after the data.
    EndMessage,
}

/// Legacy scp state of one exec channel.
pub(crate) struct Scp {
    /// `scp -t` (the client sends files) rather than `scp -f`.
    upload: bool,
    /// The path argument of the remote command.
    arg: String,
    src: Src,
    line: Vec<u8>,
    dirs: Vec<String>,
    file: Option<ScpFile>,
    acks: VecDeque<Ack>,
    /// The receiver's error line being read (after a 0x01 or 0x02 byte).
    ack_line: Option<Vec<u8>>,
}

impl Scp {
    /// Recognizes `scp [-v -r -p -d] -t|-f [--] PATH`.
    fn from_command(cmd: &str) -> Option<Scp> {
        let mut words = cmd.split_whitespace();
        let prog = words.next()?;
        if prog != "scp" && !prog.ends_with("/scp") {
            return None;
        }
        let mut mode = None;
        let mut rest = Vec::new();
        let mut opts = true;
        for w in words {
            if opts && w == "--" {
                opts = false;
            } else if opts && w.starts_with('-') && w.len() > 1 {
                if w.contains('t') {
                    mode = Some(true);
                } else if w.contains('f') {
                    mode = Some(false);
                }
            } else {
                opts = false;
                rest.push(w);
            }
        }
        let arg = rest.join(" ");
        let arg = arg
            .strip_prefix('\'')
            .and_then(|a| a.strip_suffix('\''))
            .unwrap_or(&arg);
        Some(Scp {
            upload: mode?,
            arg: text(arg.as_bytes()),
            src: Src::Line,
            line: Vec::new(),
            dirs: Vec::new(),
            file: None,
            acks: VecDeque::from([Ack::Start]),
            ack_line: None,
        })
    }

    /// `from_sender`: the bytes come from the side that sends the files.
    fn feed(&mut self, from_sender: bool, data: &[u8], out: &mut Vec<FileEvent>) -> Result<(), String> {
        if from_sender {
            self.sender(data, out)
        } else {
            self.receiver(data, out)
        }
    }

    fn path(&self, name: &str) -> String {
        let mut p = self.dirs.join("/");
        if !p.is_empty() {
            p.push('/');
        }
        p.push_str(name);
        if p.len() > MAX_PATH {
            p = text(p.as_bytes());
        }
        p
    }

    fn sender(&mut self, mut data: &[u8], out: &mut Vec<FileEvent>) -> Result<(), String> {
        while !data.is_empty() {
            match self.src {
                Src::Line | Src::EndMessage => {
                    let (line, rest, complete) = match data.iter().position(|&b| b == b'\n') {
                        Some(i) => (&data[..i], &data[i + 1..], true),
                        None => (data, &data[data.len()..], false),
                    };
                    if self.line.len() + line.len() > MAX_SCP_LINE {
                        return Err(format!("scp header line over {MAX_SCP_LINE} bytes"));
                    }
                    self.line.extend_from_slice(line);
                    data = rest;
                    if complete {
                        let line = std::mem::take(&mut self.line);
                        if self.src == Src::EndMessage {
                            let msg = text(line.get(1..).unwrap_or_default()).trim().to_owned();
                            if let Some(mut f) = self.file.take() {
                                f.error = Some(msg);
                                self.acks.push_back(Ack::Done(Box::new(f)));
                            }
                            self.src = Src::Line;
                        } else {
                            self.header(&line, out)?;
                        }
                    }
                }
                Src::AwaitHeaderAck => {
                    return Err("file data before the receiver accepted the header".into());
                }
                Src::Data { left } => {
                    let take = (data.len() as u64).min(left) as usize;
                    if let Some(f) = self.file.as_mut() {
                        f.progress.bytes += take as u64;
                        if let Some(h) = f.progress.hasher.as_mut() {
                            h.update(&data[..take]);
                        }
                    }
                    data = &data[take..];
                    let left = left - take as u64;
                    self.src = if left == 0 { Src::EndByte } else { Src::Data { left } };
                }
                Src::EndByte => {
                    let b = data[0];
                    match b {
                        0 => {
                            data = &data[1..];
                            if let Some(f) = self.file.take() {
                                self.acks.push_back(Ack::Done(Box::new(f)));
                            }
                            self.src = Src::Line;
                        }
                        1 | 2 => self.src = Src::EndMessage,
                        _ => return Err(format!("unexpected byte {b:#04x} after the file data")),
                    }
                }
            }
        }
        Ok(())
    }

    fn header(&mut self, line: &[u8], out: &mut Vec<FileEvent>) -> Result<(), String> {
        let Some((&kind, rest)) = line.split_first() else {
            return Err("empty scp header line".into());
        };
        let rest = std::str::from_utf8(rest).map_err(|_| "scp header is not UTF-8".to_string());
        match kind {
            b'C' | b'D' => {
                let rest = rest?;
                let mut parts = rest.splitn(3, ' ');
                let mode = parts.next().unwrap_or_default();
                let size = parts.next().unwrap_or_default();
                let name = parts.next().unwrap_or_default();
                let size: u64 = size.parse().map_err(|_| format!("bad size in scp header {size:?}"))?;
                if mode.len() != 4 || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                    return Err(format!("bad mode in scp header {mode:?}"));
                }
                if name.is_empty() || name.contains('/') || name == ".." || name == "." {
                    return Err(format!("bad name in scp header {name:?}"));
                }
                if kind == b'D' {
                    if self.dirs.len() >= MAX_SCP_DEPTH {
                        return Err(format!("scp directories nested over {MAX_SCP_DEPTH} levels"));
                    }
                    self.dirs.push(name.to_owned());
                    self.acks.push_back(Ack::Line);
                } else {
                    self.file = Some(ScpFile {
                        path: self.path(name),
                        mode: mode.to_owned(),
                        size,
                        progress: Progress::default(),
                        error: None,
                    });
                    self.acks.push_back(Ack::Header);
                    self.src = Src::AwaitHeaderAck;
                }
            }
            b'E' => {
                self.dirs.pop();
                self.acks.push_back(Ack::Line);
            }
            b'T' => {
                rest?;
                self.acks.push_back(Ack::Line);
            }
            1 | 2 => {
                // A message from the sender (no acknowledgement follows).
                let mut e = FileEvent::new(
                    "scp",
                    "error",
                    self.arg.clone(),
                    text(line.get(1..).unwrap_or_default()),
                );
                e.status = e.status.trim().to_owned();
                out.push(e);
            }
            other => return Err(format!("unknown scp header {:?}", char::from(other))),
        }
        Ok(())
    }

    fn receiver(&mut self, mut data: &[u8], out: &mut Vec<FileEvent>) -> Result<(), String> {
        while !data.is_empty() {
            let answer: Option<Result<(), String>> = match self.ack_line.as_mut() {
                None => {
                    let b = data[0];
                    data = &data[1..];
                    match b {
                        0 => Some(Ok(())),
                        1 | 2 => {
                            self.ack_line = Some(vec![b]);
                            None
                        }
                        _ => return Err(format!("unexpected byte {b:#04x} from the scp receiver")),
                    }
                }
                Some(line) => {
                    let (part, rest, done) = match data.iter().position(|&b| b == b'\n') {
                        Some(i) => (&data[..i], &data[i + 1..], true),
                        None => (data, &data[data.len()..], false),
                    };
                    if line.len() + part.len() > MAX_SCP_LINE {
                        return Err(format!("scp message over {MAX_SCP_LINE} bytes"));
                    }
                    line.extend_from_slice(part);
                    data = rest;
                    if done {
                        let line = self.ack_line.take().unwrap_or_default();
                        Some(Err(text(line.get(1..).unwrap_or_default()).trim().to_owned()))
                    } else {
                        None
                    }
                }
            };
            let Some(answer) = answer else { continue };
            match self.acks.pop_front() {
                None => return Err("an acknowledgement nobody asked for".into()),
                Some(Ack::Start) | Some(Ack::Line) => {}
                Some(Ack::Header) => match answer {
                    Ok(()) => {
                        let size = self.file.as_ref().map(|f| f.size).unwrap_or(0);
                        self.src = if size == 0 {
                            Src::EndByte
                        } else {
                            Src::Data { left: size }
                        };
                    }
                    Err(msg) => {
                        if let Some(f) = self.file.take() {
                            out.push(f.event(self.upload, &self.arg, format!("refused: {msg}")));
                        }
                        self.src = Src::Line;
                    }
                },
                Some(Ack::Done(f)) => {
                    let status = match (&f.error, answer) {
                        (Some(e), _) => format!("sender failed: {e}"),
                        (None, Err(e)) => e,
                        (None, Ok(())) => "ok".into(),
                    };
                    out.push(f.event(self.upload, &self.arg, status));
                }
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>, out: &mut Vec<FileEvent>) {
        let (upload, arg) = (self.upload, self.arg);
        for a in self.acks {
            if let Ack::Done(f) = a {
                out.push(f.event(upload, &arg, "not acknowledged (the channel ended)".into()));
            }
        }
        if let Some(f) = self.file {
            out.push(f.event(upload, &arg, "incomplete (the channel ended)".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    fn pkt(t: u8, body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        v.push(t);
        v.extend_from_slice(body);
        v
    }

    fn s(b: &[u8]) -> Vec<u8> {
        let mut v = (b.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    fn u32b(n: u32) -> Vec<u8> {
        n.to_be_bytes().to_vec()
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn open(id: u32, path: &str, flags: u32) -> Vec<u8> {
        pkt(
            sftp::OPEN,
            &cat(&[&u32b(id), &s(path.as_bytes()), &u32b(flags), &u32b(0)]),
        )
    }
    fn handle(id: u32, h: &[u8]) -> Vec<u8> {
        pkt(sftp::HANDLE, &cat(&[&u32b(id), &s(h)]))
    }
    fn write(id: u32, h: &[u8], off: u64, data: &[u8]) -> Vec<u8> {
        pkt(sftp::WRITE, &cat(&[&u32b(id), &s(h), &off.to_be_bytes(), &s(data)]))
    }
    fn read(id: u32, h: &[u8], off: u64, len: u32) -> Vec<u8> {
        pkt(sftp::READ, &cat(&[&u32b(id), &s(h), &off.to_be_bytes(), &u32b(len)]))
    }
    fn data(id: u32, d: &[u8]) -> Vec<u8> {
        pkt(sftp::DATA, &cat(&[&u32b(id), &s(d)]))
    }
    fn close(id: u32, h: &[u8]) -> Vec<u8> {
        pkt(sftp::CLOSE, &cat(&[&u32b(id), &s(h)]))
    }
    fn status(id: u32, code: u32, msg: &str) -> Vec<u8> {
        pkt(
            sftp::STATUS,
            &cat(&[&u32b(id), &u32b(code), &s(msg.as_bytes()), &s(b"")]),
        )
    }

    /// Feeds `up` then `down` byte streams, each cut into `step`-byte pieces.
    fn run(t: &mut Tracker, steps: &[(bool, Vec<u8>)], step: usize) -> Vec<FileEvent> {
        let mut out = Vec::new();
        for (up, bytes) in steps {
            for piece in bytes.chunks(step.max(1)) {
                if *up {
                    t.client_bytes(piece, &mut out);
                } else {
                    t.target_bytes(piece, &mut out);
                }
            }
        }
        out
    }

    fn init() -> Vec<(bool, Vec<u8>)> {
        vec![
            (true, pkt(sftp::INIT, &u32b(3))),
            (
                false,
                pkt(sftp::VERSION, &cat(&[&u32b(3), &s(b"limits@openssh.com"), &s(b"1")])),
            ),
        ]
    }

    #[test]
    fn sftp_upload_is_hashed_whatever_the_chunking() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        for step in [1, 3, 7, 4096, 1 << 20] {
            let mut steps = init();
            steps.push((
                true,
                open(1, "/tmp/up.bin", sftp::FXF_WRITE | sftp::FXF_CREAT | sftp::FXF_TRUNC),
            ));
            steps.push((false, handle(1, b"h0")));
            steps.push((true, write(2, b"h0", 0, &body[..60_000])));
            steps.push((true, write(3, b"h0", 60_000, &body[60_000..])));
            steps.push((false, status(2, 0, "")));
            steps.push((false, status(3, 0, "")));
            steps.push((true, close(4, b"h0")));
            steps.push((false, status(4, 0, "")));
            let mut t = Tracker::sftp();
            let ev = run(&mut t, &steps, step);
            assert_eq!(ev.len(), 1, "step {step}: {ev:?}");
            let e = &ev[0];
            assert_eq!(
                (e.op, e.path.as_str(), e.bytes),
                ("upload", "/tmp/up.bin", Some(100_000))
            );
            assert_eq!(e.sha256.as_deref(), Some(sha(&body).as_str()));
            assert_eq!(e.status, "ok");
            assert!(
                e.to_json().contains(&format!("\"sha256\":\"{}\"", sha(&body))),
                "{}",
                e.to_json()
            );
            assert!(matches!(t, Tracker::Sftp(_)), "still parsing");
        }
    }

    #[test]
    fn sftp_pipelined_download_and_eof() {
        let body = b"hello, download world".repeat(1000);
        let mut steps = init();
        steps.push((true, open(7, "etc/file", sftp::FXF_READ)));
        steps.push((false, handle(7, b"\x00\x01")));
        // Three reads in flight, answered in order; the third hits the end.
        steps.push((true, read(8, b"\x00\x01", 0, 10_000)));
        steps.push((true, read(9, b"\x00\x01", 10_000, 10_000)));
        steps.push((true, read(10, b"\x00\x01", 20_000, 10_000)));
        steps.push((false, data(8, &body[..10_000])));
        steps.push((false, data(9, &body[10_000..20_000])));
        steps.push((false, data(10, &body[20_000..])));
        steps.push((true, read(11, b"\x00\x01", 21_000, 10_000)));
        steps.push((false, status(11, sftp::FX_EOF, "EOF")));
        steps.push((true, close(12, b"\x00\x01")));
        steps.push((false, status(12, 0, "")));
        let mut t = Tracker::sftp();
        let ev = run(&mut t, &steps, 1000);
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].op, "download");
        assert_eq!(ev[0].bytes, Some(body.len() as u64));
        assert_eq!(ev[0].sha256.as_deref(), Some(sha(&body).as_str()));
        assert_eq!(ev[0].status, "ok");
    }

    #[test]
    fn sftp_non_sequential_has_no_hash_and_errors_are_reported() {
        let mut steps = init();
        steps.push((true, open(1, "a", sftp::FXF_WRITE)));
        steps.push((false, handle(1, b"h")));
        steps.push((true, write(2, b"h", 100, b"late")));
        steps.push((true, write(3, b"h", 0, b"early")));
        steps.push((false, status(2, 0, "")));
        steps.push((false, status(3, 4, "Failure")));
        steps.push((true, close(4, b"h")));
        steps.push((false, status(4, 0, "")));
        // A denied open.
        steps.push((true, open(5, "/root/x", sftp::FXF_READ)));
        steps.push((false, status(5, 3, "Permission denied")));
        let mut t = Tracker::sftp();
        let ev = run(&mut t, &steps, 5);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!((ev[0].bytes, ev[0].sha256.as_deref()), (Some(9), None));
        assert_eq!(ev[0].status, "failure");
        assert!(ev[0].to_json().contains(NON_SEQUENTIAL));
        assert!(ev[0].summary().contains(NON_SEQUENTIAL));
        assert_eq!((ev[1].op, ev[1].path.as_str()), ("download", "/root/x"));
        assert_eq!(ev[1].status, "permission denied");
    }

    #[test]
    fn sftp_file_operations_are_events() {
        let mut steps = init();
        let rename = pkt(sftp::RENAME, &cat(&[&u32b(1), &s(b"old"), &s(b"new")]));
        let posix = pkt(
            sftp::EXTENDED,
            &cat(&[&u32b(2), &s(b"posix-rename@openssh.com"), &s(b"a"), &s(b"b")]),
        );
        let remove = pkt(sftp::REMOVE, &cat(&[&u32b(3), &s(b"gone")]));
        let mkdir = pkt(sftp::MKDIR, &cat(&[&u32b(4), &s(b"d"), &u32b(4), &u32b(0o755)]));
        let rmdir = pkt(sftp::RMDIR, &cat(&[&u32b(5), &s(b"d")]));
        let setstat = pkt(sftp::SETSTAT, &cat(&[&u32b(6), &s(b"f"), &u32b(4), &u32b(0o100600)]));
        for (i, p) in [rename, posix, remove, mkdir, rmdir, setstat].into_iter().enumerate() {
            steps.push((true, p));
            steps.push((false, status(i as u32 + 1, if i == 2 { 2 } else { 0 }, "No such file")));
        }
        let mut t = Tracker::sftp();
        let ev = run(&mut t, &steps, 2);
        let ops: Vec<&str> = ev.iter().map(|e| e.op).collect();
        assert_eq!(ops, ["rename", "rename", "remove", "mkdir", "rmdir", "setstat"]);
        assert_eq!(ev[0].to.as_deref(), Some("new"));
        assert_eq!(ev[2].status, "no such file");
        assert_eq!(ev[3].detail.as_deref(), Some("mode=0755"));
        assert_eq!(ev[5].detail.as_deref(), Some("mode=0600"));
        assert!(ev.iter().all(|e| !e.is_transfer()));
        assert!(ev[0].to_json().starts_with("{\"op\":\"rename\""), "{}", ev[0].to_json());
    }

    #[test]
    fn sftp_unclosed_files_are_reported_at_the_end() {
        let mut steps = init();
        steps.push((true, open(1, "partial", sftp::FXF_WRITE)));
        steps.push((false, handle(1, b"h")));
        let w = write(2, b"h", 0, &[7u8; 1000]);
        steps.push((true, w[..500].to_vec()));
        let mut t = Tracker::sftp();
        let mut ev = run(&mut t, &steps, 64);
        assert!(ev.is_empty());
        t.finish(&mut ev);
        assert_eq!(ev.len(), 1);
        assert!(ev[0].status.starts_with("not closed"), "{ev:?}");
        assert_eq!(ev[0].bytes, Some(1000), "counted when the chunk started");
        assert_eq!(ev[0].sha256, None, "an incomplete chunk has no hash");
    }

    #[test]
    fn sftp_garbage_truncation_and_oversize_stop_the_parser_without_panic() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![0, 0, 0, 0]),
            ("oversized", u32b(u32::MAX)),
            ("huge control", cat(&[&u32b(1 << 20), &[sftp::OPEN]])),
            ("short open", pkt(sftp::OPEN, &cat(&[&u32b(1), &u32b(50), b"abc"]))),
            ("bad handle", pkt(sftp::CLOSE, &cat(&[&u32b(1), &u32b(100_000)]))),
            (
                "write handle too long",
                cat(&[&u32b(100), &[sftp::WRITE], &u32b(1), &u32b(5000), &[0; 91]]),
            ),
            (
                "write data beyond packet",
                pkt(
                    sftp::WRITE,
                    &cat(&[&u32b(1), &s(b"h"), &0u64.to_be_bytes(), &u32b(1000)]),
                ),
            ),
            ("bad version", pkt(sftp::INIT, &u32b(6))),
        ];
        for (name, bytes) in cases {
            let mut t = Tracker::sftp();
            let ev = run(&mut t, &[(true, bytes.clone())], 3);
            assert!(matches!(t, Tracker::Stopped), "{name}");
            assert_eq!(ev.len(), 1, "{name}: {ev:?}");
            assert_eq!(ev[0].op, "stopped");
            assert!(ev[0].status.starts_with("transfer parsing stopped"), "{name}");
            // Once stopped, more bytes are ignored.
            let mut more = Vec::new();
            t.client_bytes(&bytes, &mut more);
            t.target_bytes(&bytes, &mut more);
            assert!(more.is_empty());
        }
        // Random garbage in both directions never panics.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..300 {
            let mut t = Tracker::sftp();
            let mut out = Vec::new();
            for _ in 0..20 {
                let n = (x % 300) as usize;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    v.push(x as u8);
                }
                // Small plausible lengths now and then, to get past the framer.
                if round % 2 == 0 && v.len() > 5 {
                    v[..4].copy_from_slice(&u32b((x % 64) as u32 + 1));
                    v[4] = [sftp::OPEN, sftp::WRITE, sftp::STATUS, sftp::HANDLE, sftp::DATA][(x % 5) as usize];
                }
                if x.is_multiple_of(2) {
                    t.client_bytes(&v, &mut out);
                } else {
                    t.target_bytes(&v, &mut out);
                }
            }
            t.finish(&mut out);
        }
    }

    #[test]
    fn sftp_buffers_at_most_one_control_packet() {
        let mut t = Tracker::sftp();
        let mut out = Vec::new();
        // A 10 MB WRITE of unknown handle streams through without buffering.
        let head = cat(&[
            &u32b(1 + 4 + 5 + 8 + 4 + 3_000_000),
            &[sftp::WRITE],
            &u32b(9),
            &s(b"h"),
            &0u64.to_be_bytes(),
            &u32b(3_000_000),
        ]);
        t.client_bytes(&head, &mut out);
        for _ in 0..300 {
            t.client_bytes(&[1u8; 10_000], &mut out);
        }
        let Tracker::Sftp(st) = &t else {
            panic!("stopped: {out:?}")
        };
        assert!(st.up.buf.capacity() <= 4096, "{}", st.up.buf.capacity());
        assert!(matches!(st.up.phase, Phase::Len));
        // Skipped packets (a big NAME listing) are not buffered either.
        let name = cat(&[&u32b(200_000), &[104], &[0; 199_999]]);
        t.target_bytes(&name, &mut out);
        let Tracker::Sftp(st) = &t else { panic!() };
        assert!(st.down.buf.capacity() <= 4096);
        assert!(out.is_empty(), "{out:?}");
    }

    fn scp_up(steps: &[(bool, &[u8])], cmd: &str) -> (Tracker, Vec<FileEvent>) {
        let mut t = Tracker::scp(cmd).expect("an scp command");
        let mut out = Vec::new();
        for (client, b) in steps {
            for piece in b.chunks(3) {
                if *client {
                    t.client_bytes(piece, &mut out);
                } else {
                    t.target_bytes(piece, &mut out);
                }
            }
        }
        (t, out)
    }

    #[test]
    fn scp_commands() {
        assert!(Tracker::scp("ls -l").is_none());
        assert!(Tracker::scp("scp up.bin").is_none(), "neither -t nor -f");
        let Some(Tracker::Scp(s)) = Tracker::scp("scp -v -r -p -d -t -- /tmp/x y") else {
            panic!()
        };
        assert!(s.upload);
        assert_eq!(s.arg, "/tmp/x y");
        let Some(Tracker::Scp(s)) = Tracker::scp("/usr/bin/scp -f 'up.bin'") else {
            panic!()
        };
        assert!(!s.upload);
        assert_eq!(s.arg, "up.bin");
    }

    #[test]
    fn scp_upload_with_directories_and_times() {
        let body = b"0123456789".repeat(500);
        let header = format!("C0644 {} a.bin\n", body.len());
        let (t, ev) = scp_up(
            &[
                (false, b"\0"),
                (true, b"D0755 0 dir\n"),
                (false, b"\0"),
                (true, b"T1700000000 0 1700000000 0\n"),
                (false, b"\0"),
                (true, header.as_bytes()),
                (false, b"\0"),
                (true, &body),
                (true, b"\0"),
                (false, b"\0"),
                (true, b"E\n"),
                (false, b"\0"),
                (true, b"C0600 0 empty\n"),
                (false, b"\0"),
                (true, b"\0"),
                (false, b"\0"),
            ],
            "scp -r -t -- /tmp/",
        );
        assert!(matches!(t, Tracker::Scp(_)));
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!((ev[0].op, ev[0].path.as_str()), ("upload", "dir/a.bin"));
        assert_eq!(ev[0].bytes, Some(body.len() as u64));
        assert_eq!(ev[0].sha256.as_deref(), Some(sha(&body).as_str()));
        assert_eq!(ev[0].status, "ok");
        assert_eq!(ev[0].detail.as_deref(), Some("mode=0644 size=5000"));
        assert_eq!(ev[0].remote.as_deref(), Some("/tmp/"));
        assert!(ev[0].to_json().contains("\"remote\":\"/tmp/\""));
        assert_eq!(ev[1].path, "empty");
        assert_eq!(ev[1].sha256.as_deref(), Some(sha(b"").as_str()));
    }

    #[test]
    fn scp_download_refusals_and_errors() {
        // Download: the target sends; the client acknowledges.
        let (_, ev) = scp_up(
            &[
                (true, b"\0"),
                (false, b"\x01scp: nope: No such file or directory\n"),
                (false, b"C0644 4 f\n"),
                (true, b"\x01scp: f: Permission denied\n"),
                (false, b"C0644 4 g\n"),
                (true, b"\0"),
                (false, b"abcd\0"),
                (true, b"\x01scp: g: No space left on device\n"),
            ],
            "scp -f nope f g",
        );
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert_eq!(
            (ev[0].op, ev[0].status.as_str()),
            ("error", "scp: nope: No such file or directory")
        );
        assert_eq!((ev[1].op, ev[1].path.as_str()), ("download", "f"));
        assert_eq!(ev[1].status, "refused: scp: f: Permission denied");
        assert_eq!(ev[2].status, "scp: g: No space left on device");
        assert_eq!(ev[2].sha256.as_deref(), Some(sha(b"abcd").as_str()));
        // Data cut short by the end of the channel.
        let (mut t, mut ev) = scp_up(
            &[(true, b"\0"), (false, b"C0644 10 h\n"), (true, b"\0"), (false, b"abc")],
            "scp -f h",
        );
        t.finish(&mut ev);
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].bytes, ev[0].sha256.as_deref()), (Some(3), None));
        assert!(ev[0].status.starts_with("incomplete"));
    }

    #[test]
    fn scp_garbage_stops_the_parser() {
        let long = vec![b'C'; MAX_SCP_LINE + 10];
        type Steps<'a> = Vec<(bool, &'a [u8])>;
        let cases: Vec<(&str, Steps)> = vec![
            ("unknown header", vec![(false, b"\0"), (true, b"X what\n")]),
            ("bad mode", vec![(false, b"\0"), (true, b"C06x4 1 a\n")]),
            ("bad size", vec![(false, b"\0"), (true, b"C0644 -1 a\n")]),
            ("slash in name", vec![(false, b"\0"), (true, b"C0644 1 ../a\n")]),
            ("long line", vec![(false, b"\0"), (true, &long)]),
            ("unasked ack", vec![(false, b"\0\0")]),
            ("bad ack byte", vec![(false, b"\x07")]),
            ("data before ack", vec![(false, b"\0"), (true, b"C0644 1 a\nx")]),
            (
                "bad end byte",
                vec![(false, b"\0"), (true, b"C0644 1 a\n"), (false, b"\0"), (true, b"x\x09")],
            ),
        ];
        for (name, steps) in cases {
            let (t, ev) = scp_up(&steps, "scp -t .");
            assert!(matches!(t, Tracker::Stopped), "{name}: {ev:?}");
            assert_eq!(ev.last().map(|e| e.op), Some("stopped"), "{name}");
        }
    }
}
