//! Reading recordings back: verification of the chain and signatures, and export of the
//! plain asciicast text.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use ed25519_dalek::{Signature, VerifyingKey};
use flate2::read::DeflateDecoder;

use crate::format::{
    be_u32, be_u64, parse_bin_events, parse_frame, sha256_parts, BinEvent, CastConverter, CastHeader, SessionMeta,
    CHECKPOINT_DOMAIN, CHUNK_FIXED, CHUNK_OUTPUT_ONLY, CHUNK_SIGNED, FRAME_LEN, HASH_LEN, KEY_LEN, KIND_CHUNK,
    KIND_HEADER, KIND_SEAL, MAGIC, MAX_RAW, PROLOGUE_LEN, RDP_SERVER, SEAL_BODY_LEN, SEAL_DATA_LOST, SEAL_DOMAIN,
    SIG_LEN, VERSION, VERSION_1,
};
use crate::Error;

/// The outcome of [`verify`] on a recording whose intact part checks out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The session metadata of the header.
    pub meta: SessionMeta,
    /// Unix time (seconds) the recording started.
    pub started_unix: u64,
    /// Whether the user's input was recorded.
    pub input_recorded: bool,
    /// Intact data chunks.
    pub chunks: u64,
    /// Events in the intact chunks.
    pub events: u64,
    /// Uncompressed payload bytes of the intact chunks (binary events in version 2, cast text
    /// in version 1).
    pub cast_bytes: u64,
    /// Hex chain hash of the last intact chunk (of the header when there is none). For a
    /// sealed recording it is the one in the seal and in the session's audit event.
    pub final_hash: String,
    /// No seal: the recording was cut (crash, kill, disk full) and only its intact prefix is
    /// reported. Without a seal, the chunks after the last checkpoint are protected against
    /// accidental damage by the chain but not authenticated by a signature.
    pub truncated: bool,
    /// Chunks covered by a valid signature: all of them when sealed, else those up to the
    /// last signed checkpoint.
    pub authenticated_chunks: u64,
    /// Length of the verified prefix of the file (the whole file when sealed).
    pub intact_bytes: u64,
    /// Size of the file.
    pub file_bytes: u64,
    /// When the recording was sealed (Unix milliseconds), if it was.
    pub sealed_unix_ms: Option<u64>,
    /// The seal says events were dropped because the recorder could not keep up.
    pub data_lost: bool,
}

/// What [`export_cast`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// Chunks exported.
    pub chunks: u64,
    /// Events exported.
    pub events: u64,
    /// The recording had no seal (only its intact prefix exists).
    pub truncated: bool,
}

/// Verifies a recording: recomputes the hash chain over every byte, checks the checkpoint
/// signatures and the seal with `public_key`.
///
/// * A sealed, intact recording: `Ok` with `truncated: false`.
/// * A recording cut short (crash, `kill -9`, disk full): `Ok` with `truncated: true` and the
///   counts of the intact prefix.
/// * Any damaged byte: [`Error::Corrupt`] naming the first bad chunk and its offset.
/// * A signature that does not verify with `public_key`: [`Error::BadSignature`].
///
/// Never panics, whatever the file holds; memory use is bounded by the largest record
/// (16 MiB at most).
pub fn verify(path: impl AsRef<Path>, public_key: &VerifyingKey) -> Result<Verification, Error> {
    walk(path.as_ref(), Some(public_key), &mut |_| Ok(()))
}

/// Writes the plain asciicast v2 text of a recording (header line, then one line per event)
/// to `out`, for every chunk whose chain hash checks out. Signatures are not checked (use
/// [`verify`]). On a damaged chunk, the intact prefix has been written when the
/// [`Error::Corrupt`] is returned.
pub fn export_cast(path: impl AsRef<Path>, mut out: impl Write) -> Result<Exported, Error> {
    let mut conv = CastConverter::default();
    let mut text_lines = 0u64;
    let mut buf = Vec::new();
    let wr = |e| Error::io("write the exported cast", e);
    let mut emit = |piece: Piece<'_>| -> Result<(), Error> {
        match piece {
            Piece::Header(json) => out.write_all(json).and_then(|()| out.write_all(b"\n")).map_err(wr),
            Piece::Text(text) => {
                text_lines += text.iter().filter(|&&b| b == b'\n').count() as u64;
                out.write_all(text).map_err(wr)
            }
            Piece::Events(events) => {
                buf.clear();
                for ev in &events {
                    conv.event(&mut buf, ev);
                }
                out.write_all(&buf).map_err(wr)
            }
        }
    };
    let res = walk(path.as_ref(), None, &mut emit);
    // The intact prefix is written even when a later chunk is damaged.
    buf.clear();
    conv.finish(&mut buf);
    let tail = out.write_all(&buf).and_then(|()| out.flush());
    let v = res?;
    tail.map_err(wr)?;
    Ok(Exported {
        chunks: v.chunks,
        events: text_lines + conv.lines,
        truncated: v.truncated,
    })
}

/// Calls `on_event` for every event of the intact chunks of a version 2 recording, in order, after
/// `on_header` with its header; `on_event` returns false to stop early. Signatures are not checked.
/// Returns whether the walk stopped early; a damaged chunk ends the walk with [`Error::Corrupt`]
/// after the events of the intact prefix.
pub(crate) fn for_each_event(
    path: &Path,
    on_header: &mut dyn FnMut(&CastHeader),
    on_event: &mut dyn FnMut(&BinEvent<'_>) -> bool,
) -> Result<bool, Error> {
    let mut emit = |piece: Piece<'_>| -> Result<(), Error> {
        match piece {
            Piece::Header(json) => {
                if let Ok(h) = serde_json::from_slice::<CastHeader>(json) {
                    on_header(&h);
                }
                Ok(())
            }
            Piece::Text(_) => Ok(()),
            Piece::Events(events) => {
                for ev in &events {
                    if !on_event(ev) {
                        // A sentinel walk never produces itself.
                        return Err(Error::Closed);
                    }
                }
                Ok(())
            }
        }
    };
    match walk(path, None, &mut emit) {
        Ok(_) => Ok(false),
        Err(Error::Closed) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Extracts the searchable text of a recording into `ix` (see [`crate::index`]), reading the
/// events straight from the file: no asciicast text in between. Like [`export_cast`],
/// signatures are not checked and, on a damaged chunk, the intact prefix has been fed when
/// [`Error::Corrupt`] is returned.
pub fn index_recording(path: impl AsRef<Path>, ix: &mut crate::Indexer) -> Result<(), Error> {
    // Once the indexer wants no more output, chunks holding only output are not decompressed.
    let want_output = std::cell::Cell::new(true);
    let mut feed = |piece: Piece<'_>| -> Result<(), Error> {
        match piece {
            Piece::Header(_) => {}
            // Version 1 chunks hold cast text: the indexer's line parser reads it.
            Piece::Text(text) => ix.write_all(text).map_err(|e| Error::io("index", e))?,
            Piece::Events(events) => {
                for ev in &events {
                    ix.bin_event(ev);
                }
                want_output.set(ix.wants_output());
            }
        }
        Ok(())
    };
    walk_skipping(path.as_ref(), None, Some(&want_output), &mut feed).map(|_| ())
}

/// What [`walk`] hands out as it goes.
enum Piece<'a> {
    /// The header JSON (no newline).
    Header(&'a [u8]),
    /// The cast text of an intact version 1 chunk (whole lines).
    Text(&'a [u8]),
    /// The events of an intact version 2 chunk.
    Events(Vec<BinEvent<'a>>),
}

enum Rec {
    /// End of file at a record boundary.
    Eof,
    /// The file ends inside a record.
    Truncated,
    /// The frame is damaged.
    Bad(String),
    /// A complete record.
    Full {
        kind: u8,
        frame: [u8; FRAME_LEN],
        body: Vec<u8>,
    },
}

struct Reader {
    r: BufReader<File>,
    offset: u64,
    path: std::path::PathBuf,
}

impl Reader {
    fn io(&self, e: io::Error) -> Error {
        Error::io_path("read recording", &self.path, e)
    }

    /// Reads as much of `buf` as the file holds.
    fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        self.offset += n as u64;
        Ok(n)
    }

    fn record(&mut self) -> Result<Rec, Error> {
        let mut frame = [0u8; FRAME_LEN];
        let n = self.read_up_to(&mut frame)?;
        if n == 0 {
            return Ok(Rec::Eof);
        }
        if n < FRAME_LEN {
            return Ok(Rec::Truncated);
        }
        let (kind, len) = match parse_frame(&frame) {
            Ok(x) => x,
            Err(why) => return Ok(Rec::Bad(why)),
        };
        let mut body = Vec::with_capacity(len.min(1 << 20));
        let got = (&mut self.r)
            .take(len as u64)
            .read_to_end(&mut body)
            .map_err(|e| self.io(e))?;
        self.offset += got as u64;
        if got < len {
            return Ok(Rec::Truncated);
        }
        Ok(Rec::Full { kind, frame, body })
    }
}

fn corrupt(chunk: u64, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        chunk,
        offset,
        reason: reason.into(),
    }
}

fn bad_sig(chunk: u64, offset: u64, reason: impl Into<String>) -> Error {
    Error::BadSignature {
        chunk,
        offset,
        reason: reason.into(),
    }
}

/// Reads the prologue and the header record: (format version, chain_0, header, header JSON).
fn read_head(r: &mut Reader) -> Result<(u32, [u8; HASH_LEN], CastHeader, Vec<u8>), Error> {
    // Prologue.
    let mut pro = [0u8; PROLOGUE_LEN];
    let n = r.read_up_to(&mut pro)?;
    let m = n.min(MAGIC.len());
    if pro[..m] != MAGIC[..m] {
        return Err(Error::NotARecording);
    }
    if n < PROLOGUE_LEN {
        return Err(corrupt(0, 0, "the file ends before its header is complete"));
    }
    let version = be_u32(&pro[8..]);
    if version != VERSION && version != VERSION_1 {
        return Err(Error::UnsupportedVersion(version));
    }

    // Header record: JSON, then chain_0.
    let header_offset = r.offset;
    let (frame, body) = match r.record()? {
        Rec::Eof | Rec::Truncated => {
            return Err(corrupt(0, header_offset, "the file ends before its header is complete"))
        }
        Rec::Bad(why) => return Err(corrupt(0, header_offset, why)),
        Rec::Full { kind, frame, body } if kind == KIND_HEADER => (frame, body),
        Rec::Full { .. } => return Err(corrupt(0, header_offset, "the first record is not the header")),
    };
    if body.len() < HASH_LEN {
        return Err(corrupt(0, header_offset, "header record too short"));
    }
    let (json, stored) = body.split_at(body.len() - HASH_LEN);
    let chain = sha256_parts(&[&pro, &frame, json]);
    if chain[..] != stored[..] {
        return Err(corrupt(0, header_offset, "header hash mismatch"));
    }
    let header: CastHeader = serde_json::from_slice(json).map_err(|e| {
        corrupt(
            0,
            header_offset,
            format!("header is not a Postern asciicast header: {e}"),
        )
    })?;
    if header.version != 2 {
        return Err(corrupt(
            0,
            header_offset,
            format!("asciicast version {} is not 2", header.version),
        ));
    }
    Ok((version, chain, header, json.to_vec()))
}

/// Reads a recording's chunks one at a time and resumes where it stopped, also after the file grew (a live
/// recording): what a player uses to go forward without reading the file from its start again. Chain hashes
/// are checked, signatures are not.
pub(crate) struct ChunkCursor {
    /// Positioned where the next record starts.
    r: Reader,
    chain: [u8; HASH_LEN],
    /// Index of the next chunk.
    next: u64,
    last_t: u64,
    version: u32,
    /// The seal was read: nothing follows.
    sealed: bool,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    /// The recording's header.
    pub(crate) header: CastHeader,
}

impl ChunkCursor {
    /// Opens a recording and reads its header.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::io_path("open recording", path, e))?;
        let mut r = Reader {
            r: BufReader::with_capacity(256 * 1024, file),
            offset: 0,
            path: path.to_owned(),
        };
        let (version, chain, header, _) = read_head(&mut r)?;
        Ok(ChunkCursor {
            r,
            chain,
            next: 1,
            last_t: 0,
            version,
            sealed: false,
            zstd: None,
            header,
        })
    }

    /// The payload (binary events, already checked) of the next intact chunk; `None` at the end of what the
    /// file holds now (or after the seal). Version 1 chunks give an empty payload.
    pub(crate) fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        use std::io::{Seek, SeekFrom};
        if self.sealed {
            return Ok(None);
        }
        let (k, offset) = (self.next, self.r.offset);
        let (kind, frame, body) = match self.r.record()? {
            Rec::Eof | Rec::Truncated => {
                // Read that record again next time (the writer may still be writing it).
                self.r.r.seek(SeekFrom::Start(offset)).map_err(|e| self.r.io(e))?;
                self.r.offset = offset;
                return Ok(None);
            }
            Rec::Bad(why) => return Err(corrupt(k, offset, why)),
            Rec::Full { kind, frame, body } => (kind, frame, body),
        };
        match kind {
            KIND_CHUNK => {
                let text = check_chunk(
                    k,
                    offset,
                    &frame,
                    &body,
                    &mut self.chain,
                    None,
                    self.version,
                    &mut self.zstd,
                    false,
                )?;
                self.next += 1;
                if self.version == VERSION_1 {
                    return Ok(Some(Vec::new()));
                }
                let events = parse_bin_events(&text.raw, self.last_t).map_err(|why| corrupt(k, offset, why))?;
                if events.len() != text.events as usize {
                    return Err(corrupt(k, offset, "chunk event count mismatch"));
                }
                self.last_t = events.last().map_or(self.last_t, |e| e.t_us);
                Ok(Some(text.raw))
            }
            KIND_SEAL => {
                self.sealed = true;
                Ok(None)
            }
            _ => Err(corrupt(k, offset, "unexpected second header")),
        }
    }
}

/// Walks a recording, checking everything; `emit` gets the header and the cast text of each
/// intact chunk, in order. With `key: None` signatures are skipped.
fn walk(
    path: &Path,
    key: Option<&VerifyingKey>,
    emit: &mut dyn FnMut(Piece<'_>) -> Result<(), Error>,
) -> Result<Verification, Error> {
    walk_skipping(path, key, None, emit)
}

/// [`walk`], except that while `want_output` is false, chunks flagged output-only are checked (chain hash,
/// signature) but not decompressed, and not emitted.
fn walk_skipping(
    path: &Path,
    key: Option<&VerifyingKey>,
    want_output: Option<&std::cell::Cell<bool>>,
    emit: &mut dyn FnMut(Piece<'_>) -> Result<(), Error>,
) -> Result<Verification, Error> {
    let file = File::open(path).map_err(|e| Error::io_path("open recording", path, e))?;
    let file_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = Reader {
        r: BufReader::with_capacity(256 * 1024, file),
        offset: 0,
        path: path.to_owned(),
    };

    let (version, mut chain, header, json) = read_head(&mut r)?;
    emit(Piece::Header(&json))?;

    let mut v = Verification {
        meta: header.meta(),
        started_unix: header.timestamp,
        input_recorded: header.postern.input_recorded,
        chunks: 0,
        events: 0,
        cast_bytes: 0,
        final_hash: hex::encode(chain),
        truncated: true,
        authenticated_chunks: 0,
        intact_bytes: r.offset,
        file_bytes,
        sealed_unix_ms: None,
        data_lost: false,
    };

    let mut last_t = 0u64;
    let mut zstd = None;
    loop {
        let offset = r.offset;
        let k = v.chunks + 1;
        let (kind, frame, body) = match r.record()? {
            Rec::Eof | Rec::Truncated => return Ok(v),
            Rec::Bad(why) => return Err(corrupt(k, offset, why)),
            Rec::Full { kind, frame, body } => (kind, frame, body),
        };
        match kind {
            KIND_CHUNK => {
                let skip = want_output.is_some_and(|w| !w.get());
                let text = check_chunk(k, offset, &frame, &body, &mut chain, key, version, &mut zstd, skip)?;
                if text.signed_ok {
                    v.authenticated_chunks = k;
                }
                if version == VERSION_1 {
                    emit(Piece::Text(&text.raw))?;
                } else if !text.skipped {
                    let events = parse_bin_events(&text.raw, last_t).map_err(|why| corrupt(k, offset, why))?;
                    if events.len() != text.events as usize {
                        return Err(corrupt(
                            k,
                            offset,
                            format!("chunk holds {} events, not {}", events.len(), text.events),
                        ));
                    }
                    if text.output_only
                        && !(events.iter().all(|e| e.code == b'o') || events.iter().all(|e| e.code == RDP_SERVER))
                    {
                        return Err(corrupt(k, offset, "chunk flagged output-only holds other events"));
                    }
                    last_t = events.last().map_or(last_t, |e| e.t_us);
                    emit(Piece::Events(events))?;
                }
                v.chunks = k;
                v.events += u64::from(text.events);
                v.cast_bytes += text.raw_len as u64;
                v.final_hash = hex::encode(chain);
                v.intact_bytes = r.offset;
            }
            KIND_SEAL => {
                let (ended, lost) = check_seal(k, offset, &frame, &body, &chain, &v, key)?;
                let mut extra = [0u8; 1];
                let end = r.offset;
                if r.read_up_to(&mut extra)? > 0 {
                    return Err(corrupt(k + 1, end, "unexpected data after the seal"));
                }
                v.truncated = false;
                v.sealed_unix_ms = Some(ended);
                v.data_lost = lost;
                if key.is_some() {
                    v.authenticated_chunks = v.chunks;
                }
                v.intact_bytes = end;
                return Ok(v);
            }
            _ => return Err(corrupt(k, offset, "unexpected second header")),
        }
    }
}

struct ChunkText {
    /// The decompressed payload (empty when skipped).
    raw: Vec<u8>,
    /// Its length, from the chunk's header.
    raw_len: usize,
    events: u32,
    signed_ok: bool,
    /// Flagged [`CHUNK_OUTPUT_ONLY`].
    output_only: bool,
    /// Not decompressed (output-only, and the reader wanted no output).
    skipped: bool,
}

#[allow(clippy::too_many_arguments)]
fn check_chunk(
    k: u64,
    offset: u64,
    frame: &[u8; FRAME_LEN],
    body: &[u8],
    chain: &mut [u8; HASH_LEN],
    key: Option<&VerifyingKey>,
    version: u32,
    zstd: &mut Option<zstd::bulk::Decompressor<'static>>,
    skip_output_only: bool,
) -> Result<ChunkText, Error> {
    if body.len() < CHUNK_FIXED + HASH_LEN {
        return Err(corrupt(k, offset, "chunk record too short"));
    }
    let flags = body[16];
    let known = if version == VERSION_1 {
        CHUNK_SIGNED
    } else {
        CHUNK_SIGNED | CHUNK_OUTPUT_ONLY
    };
    if flags & !known != 0 {
        return Err(corrupt(k, offset, format!("unknown chunk flags 0x{flags:02x}")));
    }
    let sig_len = if flags & CHUNK_SIGNED != 0 { SIG_LEN } else { 0 };
    if body.len() < CHUNK_FIXED + HASH_LEN + sig_len {
        return Err(corrupt(k, offset, "chunk record too short"));
    }
    let hashed_end = body.len() - HASH_LEN - sig_len;
    let computed = sha256_parts(&[&chain[..], frame, &body[..hashed_end]]);
    if computed[..] != body[hashed_end..hashed_end + HASH_LEN] {
        return Err(corrupt(k, offset, "chain hash mismatch"));
    }
    let index = be_u64(&body[0..8]);
    if index != k {
        return Err(corrupt(k, offset, format!("chunk says it is number {index}")));
    }
    let events = be_u32(&body[8..12]);
    let raw_len = be_u32(&body[12..16]) as usize;
    if raw_len > MAX_RAW {
        return Err(corrupt(
            k,
            offset,
            format!("chunk text length {raw_len} exceeds the maximum"),
        ));
    }
    let mut signed_ok = false;
    if sig_len > 0 {
        if let Some(key) = key {
            let mut s = [0u8; SIG_LEN];
            s.copy_from_slice(&body[hashed_end + HASH_LEN..]);
            let msg = [CHECKPOINT_DOMAIN, &k.to_be_bytes()[..], &computed[..]].concat();
            key.verify_strict(&msg, &Signature::from_bytes(&s))
                .map_err(|_| bad_sig(k, offset, "checkpoint signature does not verify with this key"))?;
            signed_ok = true;
        }
    }
    let data = &body[CHUNK_FIXED..hashed_end];
    let output_only = flags & CHUNK_OUTPUT_ONLY != 0;
    if output_only && skip_output_only {
        *chain = computed;
        return Ok(ChunkText {
            raw: Vec::new(),
            raw_len,
            events,
            signed_ok,
            output_only,
            skipped: true,
        });
    }
    let raw = if version == VERSION_1 {
        let mut raw = Vec::with_capacity(raw_len);
        let res = DeflateDecoder::new(data).take(raw_len as u64 + 1).read_to_end(&mut raw);
        match res {
            Ok(n) if n == raw_len => {}
            Ok(n) => return Err(corrupt(k, offset, format!("chunk text is {n} bytes, not {raw_len}"))),
            Err(e) => return Err(corrupt(k, offset, format!("chunk does not decompress: {e}"))),
        }
        let lines = raw.iter().filter(|&&b| b == b'\n').count();
        if lines != events as usize || raw.last().is_some_and(|&b| b != b'\n') {
            return Err(corrupt(
                k,
                offset,
                format!("chunk holds {lines} lines, not {events} events"),
            ));
        }
        raw
    } else {
        // The capacity bounds the output: a forged size cannot make it allocate more.
        // One decompression context per walk, not per chunk.
        let d = match zstd {
            Some(d) => d,
            None => {
                zstd.insert(zstd::bulk::Decompressor::new().map_err(|e| Error::io("start the zstd decompressor", e))?)
            }
        };
        let raw = d
            .decompress(data, raw_len)
            .map_err(|e| corrupt(k, offset, format!("chunk does not decompress: {e}")))?;
        if raw.len() != raw_len {
            return Err(corrupt(
                k,
                offset,
                format!("chunk holds {} bytes, not {raw_len}", raw.len()),
            ));
        }
        raw
    };
    *chain = computed;
    Ok(ChunkText {
        raw,
        raw_len,
        events,
        signed_ok,
        output_only,
        skipped: false,
    })
}

/// Checks the seal against what was counted; returns (end time, data lost).
fn check_seal(
    k: u64,
    offset: u64,
    frame: &[u8; FRAME_LEN],
    body: &[u8],
    chain: &[u8; HASH_LEN],
    v: &Verification,
    key: Option<&VerifyingKey>,
) -> Result<(u64, bool), Error> {
    if body.len() != SEAL_BODY_LEN {
        return Err(corrupt(k, offset, "seal record has the wrong length"));
    }
    let chunks = be_u64(&body[0..]);
    let events = be_u64(&body[8..]);
    let cast_bytes = be_u64(&body[16..]);
    let ended = be_u64(&body[24..]);
    let flags = be_u32(&body[32..]);
    let reserved = be_u32(&body[36..]);
    let final_hash = &body[40..40 + HASH_LEN];
    let pk = &body[72..72 + KEY_LEN];
    if (chunks, events, cast_bytes) != (v.chunks, v.events, v.cast_bytes) {
        return Err(corrupt(
            k,
            offset,
            format!(
                "seal counts {chunks} chunks, {events} events, {cast_bytes} bytes; the file holds {}, {}, {}",
                v.chunks, v.events, v.cast_bytes
            ),
        ));
    }
    if final_hash != &chain[..] {
        return Err(corrupt(k, offset, "seal hash differs from the chain"));
    }
    if flags & !SEAL_DATA_LOST != 0 || reserved != 0 {
        return Err(corrupt(k, offset, "unknown seal flags"));
    }
    if let Some(key) = key {
        if pk != key.as_bytes() {
            return Err(bad_sig(
                k,
                offset,
                format!(
                    "sealed by key {}, not by {}",
                    hex::encode(pk),
                    hex::encode(key.as_bytes())
                ),
            ));
        }
        let signed = SEAL_BODY_LEN - SIG_LEN;
        let mut s = [0u8; SIG_LEN];
        s.copy_from_slice(&body[signed..]);
        let msg = [SEAL_DOMAIN, frame, &body[..signed]].concat();
        key.verify_strict(&msg, &Signature::from_bytes(&s))
            .map_err(|_| bad_sig(k, offset, "seal signature does not verify"))?;
    }
    Ok((ended, flags & SEAL_DATA_LOST != 0))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use super::*;
    use crate::format;
    use crate::writer::{RecorderConfig, Recording};
    use crate::SigningKey;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn meta(id: &str) -> SessionMeta {
        SessionMeta {
            session_id: id.into(),
            user: "alice".into(),
            target: "root@web".into(),
            protocol: "ssh".into(),
            client: None,
            width: 80,
            height: 24,
            term: Some("xterm".into()),
            title: None,
        }
    }

    /// Small deterministic PRNG (xorshift64*), enough for fuzzing.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// A small sealed recording of several chunks (the first one a signed checkpoint, the
    /// others not, since they follow within the flush interval).
    async fn small_recording(dir: &Path, id: &str) -> PathBuf {
        let mut cfg = RecorderConfig::new(dir, key());
        cfg.chunk_bytes = 60;
        cfg.record_input = true;
        let rec = Recording::start(&cfg, meta(id)).unwrap();
        for i in 0..10 {
            rec.output(format!("\x1b[32m$\x1b[0m line {i} é€\r\n").as_bytes());
            rec.input(b"x");
            if i % 3 == 0 {
                rec.marker("exec", &format!("cmd {i}"));
            }
        }
        rec.resize(132, 43);
        rec.finish().await.unwrap().path
    }

    /// (start, end) of each record: [prologue, header, chunks…, seal].
    fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
        let mut out = vec![(0, PROLOGUE_LEN)];
        let mut at = PROLOGUE_LEN;
        while at < bytes.len() {
            let len = be_u32(&bytes[at + 4..]) as usize;
            out.push((at, at + FRAME_LEN + len));
            at += FRAME_LEN + len;
        }
        out
    }

    fn export_bytes(path: &Path) -> (Vec<u8>, Result<Exported, Error>) {
        let mut out = Vec::new();
        let r = export_cast(path, &mut out);
        (out, r)
    }

    #[tokio::test]
    async fn output_only_chunks_are_flagged_and_skipped_once_output_is_not_wanted() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RecorderConfig::new(dir.path(), key());
        cfg.chunk_bytes = 1024;
        let rec = Recording::start(&cfg, meta("skip")).unwrap();
        rec.output(b"$ ");
        rec.marker("exec", "first command");
        for i in 0..20u8 {
            // Shared pieces are queued as they are: one event, so one chunk, each.
            rec.output_bytes(bytes::Bytes::from(vec![b'a' + i; 5000]));
        }
        rec.marker("exec", "last command");
        let path = rec.finish().await.unwrap().path;
        let v = verify(&path, &key().verifying_key()).unwrap();
        // "$ ", the marker and the first piece; 19 pieces; the last marker.
        assert_eq!(v.chunks, 21);
        let emitted = |want: Option<bool>| {
            let cell = std::cell::Cell::new(want.unwrap_or(true));
            let mut n = 0;
            let w = walk_skipping(&path, None, want.map(|_| &cell), &mut |p| {
                n += usize::from(matches!(p, Piece::Events(_)));
                Ok(())
            })
            .unwrap();
            assert_eq!((w.chunks, w.events, w.cast_bytes), (v.chunks, v.events, v.cast_bytes));
            n
        };
        assert_eq!(emitted(None), 21);
        // Without output wanted: the first chunk (output and a marker) and the last (the marker) only.
        assert_eq!(emitted(Some(false)), 2);
        // The indexer, past a tiny output budget, skips the bulk and still finds the last command.
        let mut ix = crate::Indexer::new(crate::IndexLimits {
            max_output_bytes: 100,
            ..Default::default()
        });
        index_recording(&path, &mut ix).unwrap();
        let index = ix.finish();
        assert!(index.output_budget_spent);
        let commands: Vec<&str> = index.entries.iter().map(|e| e.text.as_str()).collect();
        assert!(
            commands.contains(&"first command") && commands.contains(&"last command"),
            "{commands:?}"
        );
        // Export reads every chunk.
        let (out, res) = export_bytes(&path);
        res.unwrap();
        assert!(String::from_utf8_lossy(&out).contains(&"t".repeat(5000)));
    }

    #[tokio::test]
    async fn every_flipped_byte_is_detected_and_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = small_recording(dir.path(), "flip").await;
        let good = std::fs::read(&path).unwrap();
        let pk = key().verifying_key();
        let ok = verify(&path, &pk).unwrap();
        assert!(!ok.truncated);
        assert!(ok.chunks >= 3, "{} chunks", ok.chunks);
        assert!(ok.authenticated_chunks == ok.chunks);
        let recs = records(&good);
        assert_eq!(recs.len() as u64, ok.chunks + 3);
        assert_eq!(recs.last().unwrap().1, good.len());
        let bad = dir.path().join("bad.pcast");
        for mask in [0x01u8, 0xff] {
            for pos in 0..good.len() {
                let mut b = good.clone();
                b[pos] ^= mask;
                std::fs::write(&bad, &b).unwrap();
                let err = verify(&bad, &pk).expect_err(&format!("flip {mask:#x} at {pos} undetected"));
                let rec = recs.iter().position(|(s, e)| (*s..*e).contains(&pos)).unwrap();
                match (rec, &err) {
                    (0, Error::NotARecording) if pos < 8 => {}
                    (0, Error::UnsupportedVersion(_)) if pos >= 8 => {}
                    (r, Error::Corrupt { chunk, offset, .. }) | (r, Error::BadSignature { chunk, offset, .. })
                        if r >= 1 && *chunk == r as u64 - 1 && *offset == recs[r].0 as u64 => {}
                    _ => panic!("flip {mask:#x} at {pos} (record {rec}) reported as {err}"),
                }
                // Export (which checks the chain, not signatures) stops at the same chunk and
                // keeps the intact prefix.
                let (out, res) = export_bytes(&bad);
                assert!(
                    res.is_err() || matches!(err, Error::BadSignature { .. }),
                    "flip at {pos}"
                );
                let (full, _) = export_bytes(&path);
                assert!(full.starts_with(&out));
            }
        }
    }

    #[tokio::test]
    async fn truncation_anywhere_verifies_the_intact_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = small_recording(dir.path(), "cut").await;
        let good = std::fs::read(&path).unwrap();
        let recs = records(&good);
        let header_end = recs[1].1;
        let pk = key().verifying_key();
        let (full_cast, _) = export_bytes(&path);
        let cut = dir.path().join("cut.pcast");
        for len in 0..good.len() {
            std::fs::write(&cut, &good[..len]).unwrap();
            let res = verify(&cut, &pk);
            if len < header_end {
                assert!(
                    matches!(res, Err(Error::Corrupt { chunk: 0, .. })),
                    "cut at {len}: {res:?}"
                );
                continue;
            }
            let v = res.unwrap_or_else(|e| panic!("cut at {len}: {e}"));
            assert!(v.truncated, "cut at {len}");
            let complete = recs[2..].iter().filter(|(_, e)| *e <= len).count() as u64;
            assert_eq!(v.chunks, complete.min(recs.len() as u64 - 3), "cut at {len}");
            assert_eq!(v.intact_bytes as usize, recs[1 + v.chunks as usize].1);
            assert_eq!(v.file_bytes as usize, len);
            assert!(
                v.authenticated_chunks >= v.chunks.min(1),
                "the first chunk is a checkpoint"
            );
            let (cast, res) = export_bytes(&cut);
            let e = res.unwrap();
            assert!(e.truncated && e.chunks == v.chunks && e.events == v.events);
            assert!(full_cast.starts_with(&cast));
            assert_eq!(cast.iter().filter(|&&b| b == b'\n').count() as u64, 1 + v.events);
        }
        // Data appended after the seal is refused.
        let mut more = good.clone();
        more.push(0);
        std::fs::write(&cut, &more).unwrap();
        assert!(matches!(verify(&cut, &pk), Err(Error::Corrupt { .. })));
    }

    #[tokio::test]
    async fn wrong_key_is_a_bad_signature() {
        let dir = tempfile::tempdir().unwrap();
        let path = small_recording(dir.path(), "key").await;
        let other = SigningKey::from_bytes(&[9u8; 32]).verifying_key();
        let err = verify(&path, &other).unwrap_err();
        assert!(matches!(err, Error::BadSignature { chunk: 1, .. }), "{err}");
        // Strip the checkpoint flag so only the seal is signed: the seal names its key.
        let good = std::fs::read(&path).unwrap();
        let recs = records(&good);
        let (s, e) = *recs.last().unwrap();
        let v = verify(&path, &key().verifying_key()).unwrap();
        // Re-sign the seal with another key (a forger's): still a bad signature for ours.
        let forger = SigningKey::from_bytes(&[9u8; 32]);
        let mut b = good.clone();
        let body = &mut b[s + FRAME_LEN..e];
        body[72..104].copy_from_slice(forger.verifying_key().as_bytes());
        let msg = [SEAL_DOMAIN, &good[s..s + FRAME_LEN], &body[..SEAL_BODY_LEN - SIG_LEN]].concat();
        use ed25519_dalek::Signer;
        body[SEAL_BODY_LEN - SIG_LEN..].copy_from_slice(&forger.sign(&msg).to_bytes());
        let forged = dir.path().join("forged.pcast");
        std::fs::write(&forged, &b).unwrap();
        let err = verify(&forged, &key().verifying_key()).unwrap_err();
        match &err {
            Error::BadSignature { chunk, reason, .. } => {
                assert_eq!(*chunk, v.chunks + 1);
                assert!(reason.starts_with("sealed by key"), "{reason}");
            }
            _ => panic!("{err}"),
        }
    }

    #[test]
    fn random_files_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("fuzz");
        let pk = key().verifying_key();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..3000 {
            let len = rng.below(600);
            let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Often start like a recording, so the fuzz gets past the magic.
            if round % 2 == 0 {
                let mut p = format::prologue().to_vec();
                if round % 4 == 0 {
                    let n = rng.below(300);
                    p.extend_from_slice(&format::frame([KIND_HEADER, KIND_CHUNK, KIND_SEAL][rng.below(3)], n));
                }
                b.splice(0..0, p);
            }
            std::fs::write(&f, &b).unwrap();
            let _ = verify(&f, &pk);
            let _ = export_cast(&f, std::io::sink());
        }
        assert!(matches!(verify(dir.path().join("missing"), &pk), Err(Error::Io { .. })));
        std::fs::write(&f, b"{\"version\": 2}\n").unwrap();
        assert!(matches!(verify(&f, &pk), Err(Error::NotARecording)));
        std::fs::write(&f, b"").unwrap();
        assert!(matches!(verify(&f, &pk), Err(Error::Corrupt { chunk: 0, .. })));
    }

    #[tokio::test]
    async fn random_damage_to_a_real_recording_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = small_recording(dir.path(), "dmg").await;
        let good = std::fs::read(&path).unwrap();
        let pk = key().verifying_key();
        let f = dir.path().join("dmg2");
        let header_end = records(&good)[1].1;
        let mut rng = Rng(42);
        for _ in 0..1500 {
            let mut b = good.clone();
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            b.truncate(rng.below(b.len() + 200));
            std::fs::write(&f, &b).unwrap();
            if b == good[..b.len()] {
                assert!(verify(&f, &pk).is_ok() || b.len() < header_end);
            } else {
                let _ = verify(&f, &pk);
            }
            let _ = export_cast(&f, std::io::sink());
        }
    }

    /// `asciinema` (Debian package) reads the exported cast unchanged: `cat` prints exactly
    /// the recorded output bytes, `play` too.
    #[tokio::test]
    async fn asciinema_reads_the_export() {
        if Command::new("asciinema")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            panic!("asciinema is not installed (run the suite via tests/run.sh, which installs it)");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RecorderConfig::new(dir.path(), key());
        cfg.chunk_bytes = 4096;
        cfg.record_input = true;
        let rec = Recording::start(&cfg, meta("asciinema")).unwrap();
        let mut expected = Vec::new();
        let mut out = |rec: &Recording, b: &[u8]| {
            rec.output(b);
            expected.extend_from_slice(b);
        };
        out(&rec, b"\x1b[?2004h$ ");
        rec.input(b"echo h\xc3\xa9llo\r");
        out(&rec, "echo héllo\r\nhéllo\r\n".as_bytes());
        rec.marker("exec", "echo héllo");
        let euro = "€ 😀 ".as_bytes();
        out(&rec, &euro[..2]); // a character split across two outputs
        std::thread::sleep(Duration::from_millis(15));
        out(&rec, &euro[2..]);
        rec.resize(120, 40);
        out(&rec, b"\x1b[1mtab\there\x1b[0m \x00nul \x07bell\r\n");
        for i in 0..2000 {
            out(&rec, format!("{i:05} the quick brown fox\r\n").as_bytes());
            if i % 100 == 0 {
                rec.marker("tick", ""); // separate events, several chunks
            }
        }
        rec.marker("exit-status", "0");
        let sealed = rec.finish().await.unwrap();
        assert!(sealed.chunks > 3);
        let cast = dir.path().join("export.cast");
        let e = export_cast(&sealed.path, File::create(&cast).unwrap()).unwrap();
        let lines = std::fs::read_to_string(&cast).unwrap().lines().count() as u64;
        assert_eq!(e.events, lines - 1, "events exported = lines after the header");
        // The split character was one stored event more than the lines it became.
        assert_eq!(e.events + 1, sealed.events);

        let cat = Command::new("script")
            .args(["-qec", &format!("asciinema cat '{}'", cast.display()), "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .expect("script (bsdutils) runs asciinema cat on a pty");
        assert!(
            cat.status.success(),
            "asciinema cat: {}",
            String::from_utf8_lossy(&cat.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&cat.stdout), String::from_utf8_lossy(&expected));
        assert!(
            cat.stdout == expected,
            "asciinema cat prints the recorded bytes exactly"
        );

        let play = Command::new("asciinema")
            .args(["play", "-i", "0.01", "-s", "100"])
            .arg(&cast)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            play.status.success(),
            "asciinema play: {}",
            String::from_utf8_lossy(&play.stderr)
        );
        assert!(
            play.stdout == expected,
            "asciinema play prints the recorded bytes exactly"
        );
    }
}
