//! The on-disk framing of a recording and the asciicast v2 text inside it.
//! `docs/recording-format.md` is the reference; keep the two in step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

/// File name extension of a recording (`<session_id>.pcast`).
pub const FILE_EXTENSION: &str = "pcast";

/// First 8 bytes of every recording.
pub(crate) const MAGIC: [u8; 8] = *b"PSTNREC\0";
/// Format version written after the magic (u32, big-endian).
/// Format version written: 2 (binary events, zstd). Version 1 (asciicast text, deflate) is
/// still read.
pub(crate) const VERSION: u32 = 2;
/// The first format version: chunks of deflated asciicast text.
pub(crate) const VERSION_1: u32 = 1;
/// Magic + version.
pub(crate) const PROLOGUE_LEN: usize = 12;
/// Record frame: kind u8, 3 zero bytes, body length u32 BE, frame check u32.
pub(crate) const FRAME_LEN: usize = 12;

pub(crate) const KIND_HEADER: u8 = b'H';
pub(crate) const KIND_CHUNK: u8 = b'C';
pub(crate) const KIND_SEAL: u8 = b'S';

pub(crate) const HASH_LEN: usize = 32;
pub(crate) const SIG_LEN: usize = 64;
pub(crate) const KEY_LEN: usize = 32;

/// Chunk body fixed part: index u64, events u32, raw_len u32, flags u8.
pub(crate) const CHUNK_FIXED: usize = 17;
/// Chunk flag: a checkpoint signature follows the chain hash.
pub(crate) const CHUNK_SIGNED: u8 = 1;
/// Chunk flag: every event of the chunk is of the output stream (`o`, or `s` in RDP recordings), so a
/// reader that wants no more output (the search indexer past its output budget) need not decompress it.
pub(crate) const CHUNK_OUTPUT_ONLY: u8 = 2;

/// Seal body: chunks u64, events u64, cast_bytes u64, end_unix_ms u64, flags u32,
/// reserved u32, final hash, public key, signature.
pub(crate) const SEAL_BODY_LEN: usize = 8 * 4 + 4 + 4 + HASH_LEN + KEY_LEN + SIG_LEN;
/// Seal flag: events were dropped (the recorder could not keep up).
pub(crate) const SEAL_DATA_LOST: u32 = 1;

/// Upper bound of the header JSON the writer produces.
pub(crate) const MAX_HEADER_JSON: usize = 64 * 1024;
/// Upper bound of any record body a reader accepts (the writer stays far below).
pub(crate) const MAX_RECORD: usize = 16 << 20;
/// Upper bound of a chunk's uncompressed text a reader accepts.
pub(crate) const MAX_RAW: usize = 16 << 20;

/// Domain separation of checkpoint signatures: `CHECKPOINT_DOMAIN || index u64 BE || chain_i`.
pub(crate) const CHECKPOINT_DOMAIN: &[u8] = b"postern-recording-checkpoint-v1\0";
/// Domain separation of the seal signature: `SEAL_DOMAIN || seal frame || seal body minus signature`.
pub(crate) const SEAL_DOMAIN: &[u8] = b"postern-recording-seal-v1\0";

/// The prologue: magic and version.
pub(crate) fn prologue() -> [u8; PROLOGUE_LEN] {
    let mut p = [0u8; PROLOGUE_LEN];
    p[..8].copy_from_slice(&MAGIC);
    p[8..].copy_from_slice(&VERSION.to_be_bytes());
    p
}

/// The 12-byte frame in front of every record.
pub(crate) fn frame(kind: u8, body_len: usize) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0] = kind;
    // Writers keep bodies far below 4 GiB (MAX_RECORD); saturate rather than wrap.
    let len = u32::try_from(body_len).unwrap_or(u32::MAX);
    f[4..8].copy_from_slice(&len.to_be_bytes());
    let check = Sha256::digest(&f[..8]);
    f[8..].copy_from_slice(&check[..4]);
    f
}

/// Checks a frame; returns (kind, body length) or why it is bad.
pub(crate) fn parse_frame(f: &[u8; FRAME_LEN]) -> Result<(u8, usize), String> {
    let check = Sha256::digest(&f[..8]);
    if check[..4] != f[8..] {
        return Err("record frame check mismatch (kind or length damaged)".into());
    }
    if f[1..4] != [0, 0, 0] {
        return Err("reserved frame bytes are not zero".into());
    }
    let kind = f[0];
    if ![KIND_HEADER, KIND_CHUNK, KIND_SEAL].contains(&kind) {
        return Err(format!("unknown record kind 0x{kind:02x}"));
    }
    let len = u32::from_be_bytes([f[4], f[5], f[6], f[7]]) as usize;
    if len > MAX_RECORD {
        return Err(format!("record length {len} exceeds the maximum {MAX_RECORD}"));
    }
    Ok((kind, len))
}

/// `SHA-256(a || b || c)`.
pub(crate) fn sha256_parts(parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

pub(crate) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

pub(crate) fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

/// Who and what a recording is about: written into the asciicast header (the terminal
/// geometry and `TERM` at the top level, the rest in a `"postern"` object).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SessionMeta {
    /// Session id; also names the file (`<session_id>.pcast`).
    pub session_id: String,
    /// Postern user name of the person connected.
    pub user: String,
    /// Where the session goes (`account@resource`).
    pub target: String,
    /// Protocol (`ssh`…).
    pub protocol: String,
    /// Client address, when known.
    pub client: Option<String>,
    /// Terminal columns at the start (80 when there is no terminal).
    pub width: u32,
    /// Terminal rows at the start (24 when there is no terminal).
    pub height: u32,
    /// `TERM` of the client's terminal, when it asked for one.
    pub term: Option<String>,
    /// Title shown by players (defaults to `user → target`).
    pub title: Option<String>,
}

/// The asciicast v2 header line.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CastHeader {
    pub version: u32,
    pub width: u32,
    pub height: u32,
    #[serde(default)]
    pub timestamp: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub postern: PosternBlock,
}

/// Postern's own part of the header.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PosternBlock {
    pub session_id: String,
    pub user: String,
    pub target: String,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default)]
    pub input_recorded: bool,
    #[serde(default)]
    pub recorder: String,
}

impl CastHeader {
    pub(crate) fn new(meta: &SessionMeta, timestamp: u64, input_recorded: bool) -> Self {
        let mut env = BTreeMap::new();
        if let Some(t) = &meta.term {
            env.insert("TERM".to_owned(), t.clone());
        }
        CastHeader {
            version: 2,
            // RDP: 0x0, the desktop size comes in `r` events.
            width: if meta.width == 0 && meta.protocol != "rdp" {
                80
            } else {
                meta.width
            },
            height: if meta.height == 0 && meta.protocol != "rdp" {
                24
            } else {
                meta.height
            },
            timestamp,
            env,
            title: Some(
                meta.title
                    .clone()
                    .unwrap_or_else(|| format!("{} → {}", meta.user, meta.target)),
            ),
            postern: PosternBlock {
                session_id: meta.session_id.clone(),
                user: meta.user.clone(),
                target: meta.target.clone(),
                protocol: meta.protocol.clone(),
                client: meta.client.clone(),
                input_recorded,
                recorder: concat!("postern-recorder ", env!("CARGO_PKG_VERSION")).to_owned(),
            },
        }
    }

    pub(crate) fn meta(&self) -> SessionMeta {
        SessionMeta {
            session_id: self.postern.session_id.clone(),
            user: self.postern.user.clone(),
            target: self.postern.target.clone(),
            protocol: self.postern.protocol.clone(),
            client: self.postern.client.clone(),
            width: self.width,
            height: self.height,
            term: self.env.get("TERM").cloned(),
            title: self.title.clone(),
        }
    }
}

/// Session ids name files: keep them to a safe alphabet.
pub(crate) fn check_session_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSessionId(id.to_owned()))
    }
}

/// Appends one asciicast event line `[t, "code", "text"]\n`; `t_us` is microseconds since
/// the start of the session, written as seconds with 6 decimals.
pub(crate) fn push_event(out: &mut Vec<u8>, t_us: u64, code: u8, text: &str) {
    out.push(b'[');
    push_decimal(out, t_us / 1_000_000);
    out.push(b'.');
    let frac = t_us % 1_000_000;
    let mut digits = [b'0'; 6];
    let mut f = frac;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (f % 10) as u8;
        f /= 10;
    }
    out.extend_from_slice(&digits);
    out.extend_from_slice(b", \"");
    out.push(code);
    out.extend_from_slice(b"\", ");
    push_json_string(out, text);
    out.extend_from_slice(b"]\n");
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// A JSON string literal for `s` (control characters escaped, everything else verbatim, so
/// valid UTF-8 round-trips byte for byte).
pub(crate) fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(short);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Decodes a stream of terminal bytes piecewise: appends to `out` the text of `carry ++ data`
/// up to an incomplete UTF-8 sequence at its end, which stays in `carry` for the next piece.
/// Invalid sequences become U+FFFD; valid UTF-8 is kept byte for byte.
pub(crate) fn decode_utf8_stream(carry: &mut Vec<u8>, data: &[u8], out: &mut String) {
    let joined;
    let mut rest: &[u8] = if carry.is_empty() {
        data
    } else {
        carry.extend_from_slice(data);
        joined = std::mem::take(carry);
        &joined
    };
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                return;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(&String::from_utf8_lossy(good));
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        rest = &bad[n..];
                    }
                    None => {
                        carry.extend_from_slice(bad);
                        return;
                    }
                }
            }
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Appends one binary event (format version 2) to a chunk payload:
/// `code:u8 t_us:varint len:varint data`. Output and input are the raw terminal bytes.
pub(crate) fn push_bin_event(out: &mut Vec<u8>, t_us: u64, code: u8, data: &[u8]) {
    out.push(code);
    put_varint(out, t_us);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// Event code of an RDP recording's server stream: the bytes the target sent to the client after the
/// connection sequence (slow-path TPKT and fast-path PDUs, as on the wire inside TLS).
pub(crate) const RDP_SERVER: u8 = b's';
/// Event code of an RDP recording's client stream (input PDUs and the rest of what the client sent),
/// only when input is recorded.
pub(crate) const RDP_CLIENT: u8 = b'c';

/// One binary event of a version 2 chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BinEvent<'a> {
    pub t_us: u64,
    pub code: u8,
    pub data: &'a [u8],
}

/// Parses a version 2 chunk payload: events with known codes, times never decreasing
/// (from `after_t`), resize data `COLSxROWS`, marker labels UTF-8.
pub(crate) fn parse_bin_events(payload: &[u8], after_t: u64) -> Result<Vec<BinEvent<'_>>, String> {
    let mut events = Vec::new();
    let mut pos = 0;
    let mut last = after_t;
    while pos < payload.len() {
        let at = pos;
        let code = payload[pos];
        pos += 1;
        let bad = |what: &str| format!("event at payload byte {at}: {what}");
        let t_us = get_varint(payload, &mut pos).ok_or_else(|| bad("bad time"))?;
        let len = get_varint(payload, &mut pos).ok_or_else(|| bad("bad length"))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= payload.len())
            .ok_or_else(|| bad("length past the end of the chunk"))?;
        let data = &payload[pos..end];
        pos = end;
        if t_us < last {
            return Err(bad("time goes backwards"));
        }
        last = t_us;
        match code {
            b'o' | b'i' | RDP_SERVER | RDP_CLIENT => {}
            b'r' => {
                let ok = std::str::from_utf8(data)
                    .ok()
                    .and_then(|s| s.split_once('x'))
                    .is_some_and(|(c, r)| {
                        !c.is_empty() && !r.is_empty() && c.bytes().chain(r.bytes()).all(|b| b.is_ascii_digit())
                    });
                if !ok {
                    return Err(bad("resize is not COLSxROWS"));
                }
            }
            b'm' => {
                std::str::from_utf8(data).map_err(|_| bad("marker is not UTF-8"))?;
            }
            other => return Err(bad(&format!("unknown event code 0x{other:02x}"))),
        }
        events.push(BinEvent { t_us, code, data });
    }
    Ok(events)
}

/// Turns version 2 binary events into asciicast v2 lines, carrying incomplete UTF-8 across
/// events of the same stream (and chunks) as a terminal would.
#[derive(Default)]
pub(crate) struct CastConverter {
    /// Keystrokes of an RDP recording's client stream, turned into text (`"i"` lines).
    rdp_keys: Option<crate::rdp::InputText>,
    carry_out: Vec<u8>,
    carry_in: Vec<u8>,
    text: String,
    last_t: u64,
    /// Lines written so far.
    pub lines: u64,
}

impl CastConverter {
    /// Appends the lines of `ev` to `out`.
    pub(crate) fn event(&mut self, out: &mut Vec<u8>, ev: &BinEvent<'_>) {
        self.last_t = ev.t_us;
        match ev.code {
            // The server stream of an RDP recording is graphics: rendered by `rdp`, not exported.
            RDP_SERVER => {}
            RDP_CLIENT => {
                let keys = self.rdp_keys.get_or_insert_with(Default::default);
                let text = keys.feed(ev.data);
                if !text.is_empty() {
                    push_event(out, ev.t_us, b'i', &text);
                    self.lines += 1;
                }
            }
            b'o' | b'i' => {
                let carry = if ev.code == b'o' {
                    &mut self.carry_out
                } else {
                    &mut self.carry_in
                };
                self.text.clear();
                decode_utf8_stream(carry, ev.data, &mut self.text);
                if !self.text.is_empty() {
                    push_event(out, ev.t_us, ev.code, &self.text);
                    self.lines += 1;
                }
            }
            code => {
                push_event(out, ev.t_us, code, &String::from_utf8_lossy(ev.data));
                self.lines += 1;
            }
        }
    }

    /// Incomplete UTF-8 left at the end becomes U+FFFD.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        for code in [b'o', b'i'] {
            let carry = if code == b'o' {
                &mut self.carry_out
            } else {
                &mut self.carry_in
            };
            if !carry.is_empty() {
                let text = String::from_utf8_lossy(carry).into_owned();
                carry.clear();
                push_event(out, self.last_t, code, &text);
                self.lines += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_events_round_trip_and_are_checked() {
        let mut p = Vec::new();
        push_bin_event(&mut p, 5, b'o', &[0, 1, 0xe2, 0x82]);
        push_bin_event(&mut p, 300_000_000, b'o', &[0xac, b'x']);
        push_bin_event(&mut p, 300_000_001, b'r', b"120x40");
        push_bin_event(&mut p, 300_000_002, b'm', "exec: ls".as_bytes());
        let ev = parse_bin_events(&p, 0).unwrap();
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[1].t_us, 300_000_000);
        let mut out = Vec::new();
        let mut c = CastConverter::default();
        for e in &ev {
            c.event(&mut out, e);
        }
        c.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "[0.000005, \"o\", \"\\u0000\\u0001\"]\n[300.000000, \"o\", \"€x\"]\n\
             [300.000001, \"r\", \"120x40\"]\n[300.000002, \"m\", \"exec: ls\"]\n"
        );
        assert_eq!(c.lines, 4);
        // Damage of every kind is an error, never a panic.
        assert!(
            parse_bin_events(&p, 400_000_000).is_err(),
            "time before the previous chunk"
        );
        for cut in 1..p.len() {
            let _ = parse_bin_events(&p[..cut], 0);
        }
        let mut bad = Vec::new();
        push_bin_event(&mut bad, 1, b'z', b"");
        assert!(parse_bin_events(&bad, 0).unwrap_err().contains("unknown event code"));
        let mut bad = Vec::new();
        push_bin_event(&mut bad, 1, b'r', b"wide");
        assert!(parse_bin_events(&bad, 0).is_err());
        assert!(parse_bin_events(
            &[b'o', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            0
        )
        .is_err());
        assert!(parse_bin_events(&[b'o', 1, 0x7f], 0)
            .unwrap_err()
            .contains("past the end"));
    }

    #[test]
    fn frames_check_themselves() {
        let f = frame(KIND_CHUNK, 1234);
        assert_eq!(parse_frame(&f).unwrap(), (KIND_CHUNK, 1234));
        for i in 0..FRAME_LEN {
            let mut g = f;
            g[i] ^= 0x20;
            assert!(parse_frame(&g).is_err(), "flip at {i} undetected");
        }
        assert!(parse_frame(&frame(b'X', 1))
            .unwrap_err()
            .contains("unknown record kind"));
        assert!(parse_frame(&frame(KIND_SEAL, MAX_RECORD + 1))
            .unwrap_err()
            .contains("exceeds"));
    }

    #[test]
    fn event_lines_are_json() {
        let mut out = Vec::new();
        let text = "a\"b\\c\n\r\t\u{8}\u{c}\u{0}\u{1b}[1mé€😀\u{7f}";
        push_event(&mut out, 12_345_678, b'o', text);
        push_event(&mut out, 0, b'r', "80x24");
        let s = std::str::from_utf8(&out).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0].split(',').next().unwrap(), "[12.345678");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v[0].as_f64().unwrap(), 12.345678);
        assert_eq!(v[1], "o");
        assert_eq!(v[2].as_str().unwrap(), text);
        assert_eq!(lines[1], r#"[0.000000, "r", "80x24"]"#);
        // Matches serde_json's own escaping, except that serde_json escapes nothing more.
        let mut mine = Vec::new();
        push_json_string(&mut mine, text);
        assert_eq!(serde_json::from_slice::<String>(&mine).unwrap(), text);
    }

    #[test]
    fn utf8_sequences_are_carried_not_split() {
        let src = "héllo wörld € 😀 done".as_bytes();
        for cut in 0..src.len() {
            let mut carry = Vec::new();
            let mut a = String::new();
            let mut b = String::new();
            decode_utf8_stream(&mut carry, &src[..cut], &mut a);
            assert!(carry.len() <= 3);
            decode_utf8_stream(&mut carry, &src[cut..], &mut b);
            assert!(carry.is_empty());
            assert_eq!(format!("{a}{b}").as_bytes(), src, "cut at {cut}");
        }
        // Byte by byte.
        let mut carry = Vec::new();
        let mut all = String::new();
        for b in src {
            decode_utf8_stream(&mut carry, std::slice::from_ref(b), &mut all);
        }
        assert_eq!(all.as_bytes(), src);
        // Invalid bytes become U+FFFD and do not swallow what follows.
        let mut carry = Vec::new();
        let mut s = String::new();
        decode_utf8_stream(&mut carry, b"a\xffb\xc3(c\xe2\x82", &mut s);
        assert_eq!(s, "a\u{FFFD}b\u{FFFD}(c");
        assert_eq!(carry, b"\xe2\x82");
    }

    #[test]
    fn header_round_trip() {
        let meta = SessionMeta {
            session_id: "s1".into(),
            user: "alice".into(),
            target: "root@web".into(),
            protocol: "ssh".into(),
            client: Some("10.0.0.1:5555".into()),
            width: 120,
            height: 40,
            term: Some("xterm-256color".into()),
            title: None,
        };
        let h = CastHeader::new(&meta, 1_700_000_000, true);
        let json = serde_json::to_string(&h).unwrap();
        let back: CastHeader = serde_json::from_str(&json).unwrap();
        let mut expect = meta.clone();
        expect.title = Some("alice → root@web".into());
        assert_eq!(back.meta(), expect);
        assert!(back.postern.input_recorded);
        assert!(json.starts_with(
            r#"{"version":2,"width":120,"height":40,"timestamp":1700000000,"env":{"TERM":"xterm-256color"}"#
        ));
    }
}
