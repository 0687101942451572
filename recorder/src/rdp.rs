//! RDP recordings: rendering frames from the recorded server stream, PNG encoding, and the
//! keystrokes of the client stream as text (for the search index).
//!
//! An RDP recording (protocol `rdp`) holds the bytes the target sent to the client after the
//! connection sequence as `s` events and, when input is recorded, what the client sent as `c`
//! events; `r` events give the desktop size in pixels (`WIDTHxHEIGHT`). The concatenation of the
//! `s` events is the target's PDU stream (TPKT slow-path and fast-path PDUs, plaintext: the
//! gateway terminates TLS). [`Decoder`] replays it through IronRDP's graphics pipeline
//! (`ironrdp-session`'s fast-path processor: interleaved RLE and planar bitmaps, RemoteFX
//! surface bits, slow-path bitmap updates) into a framebuffer; [`Player`] seeks in a recording
//! file (forward seeks continue from where the last one stopped); [`encode_png`] turns a
//! frame into a PNG.

use std::path::{Path, PathBuf};

use ironrdp_core::{decode, ReadCursor, WriteBuf};
use ironrdp_graphics::image_processing::PixelFormat;
use ironrdp_pdu::input::fast_path::{FastPathInput, FastPathInputEvent, KeyboardFlags};
use ironrdp_pdu::mcs::McsMessage;
use ironrdp_pdu::rdp::capability_sets::CapabilitySet;
use ironrdp_pdu::rdp::headers::{ShareControlHeader, ShareControlPdu, ShareDataPdu};
use ironrdp_pdu::slow_path::{self, GraphicsUpdateType};
use ironrdp_pdu::x224::X224;
use ironrdp_session::fast_path::{Processor, ProcessorBuilder};
use ironrdp_session::image::DecodedImage;

use crate::format::{BinEvent, RDP_SERVER};
use crate::Error;

/// The MCS I/O channel (where graphics and the share control PDUs travel).
const IO_CHANNEL: u16 = 1003;
/// The largest PDU the framer accepts (TPKT lengths are 16-bit, fast-path 15-bit).
const MAX_PDU: usize = 64 * 1024;
/// The largest desktop side a decoder accepts (RDP's own limit is 8192)…
const MAX_SIDE: u16 = 8192;
/// …and the most pixels (64 MiB of RGBA: two 4K screens), whatever a target announces.
const MAX_PIXELS: u32 = 16 << 20;
/// The desktop size used until the recording says otherwise.
const DEFAULT_SIZE: (u16, u16) = (1024, 768);

/// Splits a byte stream into whole RDP PDUs (slow-path TPKT or fast-path), by their length
/// headers, holding at most one partial PDU.
#[derive(Debug, Default)]
struct Framer {
    buf: Vec<u8>,
    start: usize,
}

impl Framer {
    fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole PDU; `Ok(None)` when more bytes are needed; an error (and the buffer
    /// dropped) for bytes that are not RDP.
    fn next_pdu(&mut self) -> Result<Option<&[u8]>, String> {
        let b = &self.buf[self.start..];
        let Some(&first) = b.first() else { return Ok(None) };
        // TPKT (version 3) or fast-path (action 0), the length read by IronRDP; anything else is refused at its
        // first byte.
        let info = match ironrdp_pdu::find_size(b) {
            _ if first != 3 && first & 0x03 != 0 => Err(format!("action {:#04x}", first & 0x03)),
            Ok(Some(info)) => Ok(info),
            Ok(None) => return Ok(None),
            Err(e) => Err(e.to_string()),
        };
        let info = match info {
            Ok(info) => info,
            Err(e) => {
                self.buf.clear();
                self.start = 0;
                return Err(format!("not an RDP PDU (first byte {first:#04x}): {e}"));
            }
        };
        let len = info.length;
        if !(2..=MAX_PDU).contains(&len) || (info.action == ironrdp_pdu::Action::X224 && len < 4) {
            self.buf.clear();
            self.start = 0;
            return Err(format!("RDP PDU length {len} out of range"));
        }
        if b.len() < len {
            return Ok(None);
        }
        let at = self.start;
        self.start += len;
        Ok(Some(&self.buf[at..at + len]))
    }
}

/// A rendered frame: RGBA pixels, row by row.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// `width * height * 4` bytes, R G B A.
    pub rgba: Vec<u8>,
    /// The recording time this frame shows (microseconds since the start).
    pub t_us: u64,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("t_us", &self.t_us)
            .finish_non_exhaustive()
    }
}

impl Frame {
    /// The frame as a PNG file (8-bit RGB).
    pub fn png(&self) -> Vec<u8> {
        encode_png(self.width.into(), self.height.into(), &self.rgba)
    }
}

/// Replays an RDP server stream into a framebuffer.
pub struct Decoder {
    framer: Framer,
    image: DecodedImage,
    processor: Processor,
    /// PDUs that could not be decoded (skipped).
    pub errors: u64,
    /// The last decoding problem, for diagnostics.
    pub last_error: Option<String>,
    /// PDUs decoded.
    pub pdus: u64,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("width", &self.image.width())
            .field("height", &self.image.height())
            .field("pdus", &self.pdus)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

fn new_processor() -> Processor {
    ProcessorBuilder {
        io_channel_id: IO_CHANNEL,
        user_channel_id: 1007,
        share_id: 0,
        enable_server_pointer: false,
        pointer_software_rendering: false,
        bulk_decompressor: None,
    }
    .build()
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_SIZE.0, DEFAULT_SIZE.1)
    }
}

impl Decoder {
    /// A black desktop of `width` x `height` (clamped to 1..=8192).
    pub fn new(width: u16, height: u16) -> Self {
        let (w, h) = bounded(width, height);
        Decoder {
            framer: Framer::default(),
            image: DecodedImage::new(PixelFormat::RgbA32, w, h),
            processor: new_processor(),
            errors: 0,
            last_error: None,
            pdus: 0,
        }
    }

    /// Desktop width.
    pub fn width(&self) -> u16 {
        self.image.width()
    }

    /// Desktop height.
    pub fn height(&self) -> u16 {
        self.image.height()
    }

    /// The desktop changed size: a new, black framebuffer (the target repaints after a resize). Sizes over
    /// 8192 on a side or 16 Mi pixels are cut down.
    pub fn resize(&mut self, width: u16, height: u16) {
        let (w, h) = bounded(width, height);
        if (w, h) != (self.width(), self.height()) {
            self.image = DecodedImage::new(PixelFormat::RgbA32, w, h);
        }
    }

    /// Feeds bytes of the server stream; whole PDUs are decoded as they complete.
    pub fn feed(&mut self, data: &[u8]) {
        self.framer.push(data);
        loop {
            let pdu = match self.framer.next_pdu() {
                Ok(Some(p)) => p.to_vec(),
                Ok(None) => return,
                Err(e) => return self.fail(e),
            };
            // Recorded bytes come from the target: a PDU the decoding library cannot cope with (even by
            // panicking) is skipped like any undecodable one, never the end of playback.
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.pdu(&pdu)));
            if done.is_err() {
                self.fail("the decoder failed on a PDU (skipped)".into());
            }
        }
    }

    fn fail(&mut self, why: String) {
        self.errors += 1;
        self.last_error = Some(why);
    }

    fn pdu(&mut self, pdu: &[u8]) {
        self.pdus += 1;
        if pdu[0] == 3 {
            if let Err(e) = self.slow_path(pdu) {
                self.fail(e);
            }
            return;
        }
        let mut out = WriteBuf::new();
        if let Err(e) = self.processor.process(&mut self.image, pdu, &mut out) {
            self.fail(format!("fast-path update: {e}"));
        }
    }

    /// Slow-path PDUs: the Demand Active's desktop size, bitmap updates; the rest (licensing,
    /// virtual channels, keep-alives…) is skipped.
    fn slow_path(&mut self, pdu: &[u8]) -> Result<(), String> {
        let Ok(X224(McsMessage::SendDataIndication(sd))) = decode::<X224<McsMessage<'_>>>(pdu) else {
            return Ok(());
        };
        if sd.channel_id != IO_CHANNEL {
            return Ok(());
        }
        // Licensing and other PDUs with a security header do not decode as share control PDUs.
        let Ok(h) = decode::<ShareControlHeader>(&sd.user_data) else {
            return Ok(());
        };
        match h.share_control_pdu {
            ShareControlPdu::ServerDemandActive(d) => {
                for c in &d.pdu.capability_sets {
                    if let CapabilitySet::Bitmap(b) = c {
                        self.resize(b.desktop_width, b.desktop_height);
                    }
                }
                Ok(())
            }
            ShareControlPdu::Data(d) => match d.share_data_pdu {
                ShareDataPdu::Update(data) => {
                    let mut src = ReadCursor::new(&data);
                    let kind = slow_path::read_graphics_update_type(&mut src).map_err(|e| e.to_string())?;
                    if kind == GraphicsUpdateType::Bitmap {
                        let bitmap = slow_path::decode_slow_path_bitmap(&mut src).map_err(|e| e.to_string())?;
                        self.processor
                            .process_bitmap_update(&mut self.image, bitmap)
                            .map_err(|e| format!("slow-path bitmap: {e}"))?;
                    }
                    Ok(())
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// The current framebuffer as RGBA.
    pub fn frame(&self, t_us: u64) -> Frame {
        let (w, h) = (usize::from(self.width()), usize::from(self.height()));
        let stride = self.image.stride();
        let data = self.image.data();
        let mut rgba = Vec::with_capacity(w * h * 4);
        for y in 0..h {
            let row = &data[y * stride..y * stride + w * 4];
            rgba.extend_from_slice(row);
        }
        // The pixel format has alpha, but RDP bitmaps leave it unset: the desktop is opaque.
        for px in rgba.chunks_exact_mut(4) {
            px[3] = 255;
        }
        Frame {
            width: self.width(),
            height: self.height(),
            rgba,
            t_us,
        }
    }
}

/// A desktop size within [`MAX_SIDE`] and [`MAX_PIXELS`].
fn bounded(width: u16, height: u16) -> (u16, u16) {
    let w = width.clamp(1, MAX_SIDE);
    let max_h = u16::try_from(MAX_PIXELS / u32::from(w)).unwrap_or(MAX_SIDE);
    (w, height.clamp(1, MAX_SIDE.min(max_h)))
}

/// Parses a `WIDTHxHEIGHT` size event.
fn parse_size(data: &[u8]) -> Option<(u16, u16)> {
    let s = std::str::from_utf8(data).ok()?;
    let (w, h) = s.split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

/// Seeks in an RDP recording and renders frames. Forward seeks continue from the last one, in the file and in
/// the decoder (nothing is read or decoded twice; a live recording's new chunks are picked up); a backward seek
/// starts over.
pub struct Player {
    path: PathBuf,
    decoder: Decoder,
    cursor: Option<crate::verify::ChunkCursor>,
    /// The payload of the chunk being played, and how many of its events were applied.
    chunk: Vec<u8>,
    used: usize,
    /// The time up to which events were applied.
    t_us: u64,
    /// The recording's duration as far as read (time of the last event read).
    pub duration_us: u64,
}

impl std::fmt::Debug for Player {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Player")
            .field("path", &self.path)
            .field("decoder", &self.decoder)
            .field("t_us", &self.t_us)
            .finish_non_exhaustive()
    }
}

impl Player {
    /// A player of the recording at `path` (read when a frame is asked for).
    pub fn open(path: impl Into<PathBuf>) -> Self {
        Player {
            path: path.into(),
            decoder: Decoder::default(),
            cursor: None,
            chunk: Vec::new(),
            used: 0,
            t_us: 0,
            duration_us: 0,
        }
    }

    /// The recording file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decoding problems met so far (PDUs skipped) and the last one.
    pub fn errors(&self) -> (u64, Option<&str>) {
        (self.decoder.errors, self.decoder.last_error.as_deref())
    }

    /// The screen at `t_us` microseconds after the start (every event up to and including that
    /// time applied). A recording that is not RDP gives a black frame; a damaged one renders
    /// its intact prefix. Blocking file I/O and CPU: call it off the async runtime.
    pub fn frame_at(&mut self, t_us: u64) -> Result<Frame, Error> {
        if t_us < self.t_us {
            *self = Player::open(std::mem::take(&mut self.path));
        }
        if self.cursor.is_none() {
            let c = crate::verify::ChunkCursor::open(&self.path)?;
            let h = &c.header;
            if h.width > 0 && h.height > 0 && h.postern.protocol == "rdp" {
                self.decoder.resize(
                    u16::try_from(h.width).unwrap_or(MAX_SIDE),
                    u16::try_from(h.height).unwrap_or(MAX_SIDE),
                );
            }
            self.cursor = Some(c);
        }
        loop {
            let events = crate::format::parse_bin_events(&self.chunk, 0).unwrap_or_default();
            let mut stopped = false;
            for ev in &events[self.used.min(events.len())..] {
                self.duration_us = self.duration_us.max(ev.t_us);
                // The desktop size announced before any graphics applies from the start (it is the first
                // event, a few microseconds in).
                let initial_size = ev.code == b'r' && self.decoder.pdus == 0;
                if ev.t_us > t_us && !initial_size {
                    stopped = true;
                    break;
                }
                match ev.code {
                    RDP_SERVER => self.decoder.feed(ev.data),
                    b'r' => {
                        if let Some((w, h)) = parse_size(ev.data) {
                            self.decoder.resize(w, h);
                        }
                    }
                    _ => {}
                }
                self.used += 1;
            }
            if stopped {
                break;
            }
            let Some(cursor) = self.cursor.as_mut() else { break };
            match cursor.next_chunk() {
                Ok(Some(raw)) => {
                    self.chunk = raw;
                    self.used = 0;
                }
                // The end of what the file holds now, or a damaged chunk: render the intact prefix.
                Ok(None) | Err(Error::Corrupt { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        self.t_us = self.t_us.max(t_us);
        Ok(self.decoder.frame(t_us))
    }
}

/// How many bytes of server stream the recording at `path` holds so far (its intact chunks; a live recording's
/// last second may still be in the writer's queue).
pub fn server_stream_len(path: impl AsRef<Path>) -> Result<u64, Error> {
    let mut n = 0u64;
    let mut on_event = |ev: &BinEvent<'_>| {
        if ev.code == RDP_SERVER {
            n += ev.data.len() as u64;
        }
        true
    };
    match crate::verify::for_each_event(path.as_ref(), &mut |_| {}, &mut on_event) {
        Ok(_) | Err(Error::Corrupt { .. }) => Ok(n),
        Err(e) => Err(e),
    }
}

/// The two streams of an RDP recording as recorded: (what the target sent, what the client sent — empty unless
/// input was recorded), from its intact chunks. For forensic export and tests; memory grows with the recording.
pub fn streams(path: impl AsRef<Path>) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let (mut server, mut client) = (Vec::new(), Vec::new());
    let mut on_event = |ev: &BinEvent<'_>| {
        match ev.code {
            RDP_SERVER => server.extend_from_slice(ev.data),
            crate::format::RDP_CLIENT => client.extend_from_slice(ev.data),
            _ => {}
        }
        true
    };
    match crate::verify::for_each_event(path.as_ref(), &mut |_| {}, &mut on_event) {
        Ok(_) | Err(Error::Corrupt { .. }) => Ok((server, client)),
        Err(e) => Err(e),
    }
}

/// A decoder fed with the first `limit` bytes of the server stream of the recording at `path` (and its size
/// events up to there): where a live viewer starts before following the session's hub. Returns the decoder and
/// the bytes fed (less than `limit` when the file holds less).
pub fn decode_prefix(path: impl AsRef<Path>, limit: u64) -> Result<(Decoder, u64), Error> {
    let mut dec = Decoder::default();
    let mut fed = 0u64;
    let header_size = std::cell::Cell::new(None);
    let mut on_header = |h: &crate::format::CastHeader| {
        if h.width > 0 && h.height > 0 {
            header_size.set(Some((
                u16::try_from(h.width).unwrap_or(MAX_SIDE),
                u16::try_from(h.height).unwrap_or(MAX_SIDE),
            )));
        }
    };
    let mut on_event = |ev: &BinEvent<'_>| {
        if let Some((w, h)) = header_size.take() {
            dec.resize(w, h);
        }
        if fed >= limit {
            return false;
        }
        match ev.code {
            RDP_SERVER => {
                let take = usize::try_from(limit - fed).unwrap_or(usize::MAX).min(ev.data.len());
                dec.feed(&ev.data[..take]);
                fed += take as u64;
            }
            b'r' => {
                if let Some((w, h)) = parse_size(ev.data) {
                    dec.resize(w, h);
                }
            }
            _ => {}
        }
        true
    };
    match crate::verify::for_each_event(path.as_ref(), &mut on_header, &mut on_event) {
        Ok(_) | Err(Error::Corrupt { .. }) => {}
        Err(e) => return Err(e),
    }
    Ok((dec, fed))
}

/// Renders the screen of the RDP recording at `path` at `t_us` microseconds after the start.
pub fn render_at(path: impl AsRef<Path>, t_us: u64) -> Result<Frame, Error> {
    Player::open(path.as_ref()).frame_at(t_us)
}

/// Encodes RGBA pixels (`width * height * 4` bytes, row by row) as an 8-bit RGB PNG (the `png`
/// crate, fast compression). Missing pixels are black.
pub fn encode_png(width: u32, height: u32, rgba: &[u8]) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let mut rgb = Vec::with_capacity(h * w * 3);
    for i in 0..w * h {
        match rgba.get(i * 4..i * 4 + 3) {
            Some(px) => rgb.extend_from_slice(px),
            None => rgb.extend_from_slice(&[0, 0, 0]),
        }
    }
    let mut out = Vec::with_capacity(rgb.len() / 8 + 64);
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    // Writing to a Vec cannot fail, and the sizes match by construction; an empty image
    // (0 pixels, which png refuses) yields no bytes.
    match enc.write_header().and_then(|mut wr| wr.write_image_data(&rgb)) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

/// Turns an RDP client stream into the text it typed: fast-path keyboard events (scancodes,
/// mapped with a US layout and the shift state; Enter as `\r`, Backspace as DEL) and Unicode
/// keyboard events. Mouse and other PDUs are skipped.
#[derive(Debug, Default)]
pub struct InputText {
    framer: Framer,
    shift: bool,
    caps: bool,
}

impl InputText {
    /// Feeds client stream bytes; returns the text typed by the PDUs they completed.
    pub fn feed(&mut self, data: &[u8]) -> String {
        let mut text = String::new();
        self.framer.push(data);
        loop {
            let pdu = match self.framer.next_pdu() {
                Ok(Some(p)) => p,
                Ok(None) | Err(_) => return text,
            };
            if pdu[0] == 3 {
                continue;
            }
            let Ok(input) = decode::<FastPathInput>(pdu) else {
                continue;
            };
            for ev in input.input_events() {
                match ev {
                    FastPathInputEvent::KeyboardEvent(flags, code) => {
                        let up = flags.contains(KeyboardFlags::RELEASE);
                        let ext = flags.contains(KeyboardFlags::EXTENDED);
                        match (*code, ext) {
                            (0x2a | 0x36, false) => self.shift = !up,
                            (0x3a, false) if !up => self.caps = !self.caps,
                            (0x1c, _) if !up => text.push('\r'),
                            (c, false) if !up => {
                                if let Some(ch) = scancode_char(c, self.shift, self.caps) {
                                    text.push(ch);
                                }
                            }
                            _ => {}
                        }
                    }
                    FastPathInputEvent::UnicodeKeyboardEvent(flags, unit)
                        if !flags.contains(KeyboardFlags::RELEASE) =>
                    {
                        if let Some(ch) = char::from_u32(u32::from(*unit)) {
                            text.push(ch);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The character of a scancode (set 1) on a US keyboard.
fn scancode_char(code: u8, shift: bool, caps: bool) -> Option<char> {
    const ROWS: [(u8, &str, &str); 4] = [
        (0x02, "1234567890-=", "!@#$%^&*()_+"),
        (0x10, "qwertyuiop[]", "QWERTYUIOP{}"),
        (0x1e, "asdfghjkl;'`", "ASDFGHJKL:\"~"),
        (0x2b, "\\zxcvbnm,./", "|ZXCVBNM<>?"),
    ];
    match code {
        0x0e => return Some('\u{7f}'),
        0x0f => return Some('\t'),
        0x39 => return Some(' '),
        _ => {}
    }
    for (first, lower, upper) in ROWS {
        let Some(i) = code.checked_sub(first).map(usize::from) else {
            continue;
        };
        let (Some(l), Some(u)) = (lower.chars().nth(i), upper.chars().nth(i)) else {
            continue;
        };
        let up = if l.is_ascii_alphabetic() { shift ^ caps } else { shift };
        return Some(if up { u } else { l });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fast-path key press (or release) of scancode `code`.
    fn key_event(code: u8, up: bool) -> FastPathInputEvent {
        let flags = if up {
            KeyboardFlags::RELEASE
        } else {
            KeyboardFlags::empty()
        };
        FastPathInputEvent::KeyboardEvent(flags, code)
    }

    #[test]
    fn png_is_well_formed() {
        let rgba = [255u8, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255, 9, 9, 9, 255];
        let png = encode_png(2, 2, &rgba);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let mut reader = png::Decoder::new(std::io::Cursor::new(&png[..])).read_info().unwrap();
        let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut rgb).unwrap();
        assert_eq!((info.width, info.height, info.color_type), (2, 2, png::ColorType::Rgb));
        assert_eq!(rgb, [255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]);
        // Short input: the missing pixels are black.
        let short = encode_png(2, 1, &rgba[..4]);
        let mut reader = png::Decoder::new(std::io::Cursor::new(&short[..])).read_info().unwrap();
        let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut rgb).unwrap();
        assert_eq!(rgb, [255, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn keystrokes_become_text() {
        use ironrdp_core::encode_vec;
        // "Ls -A" then Enter, typed with shift, in two PDUs split across feeds.
        let a = encode_vec(
            &FastPathInput::new(vec![
                key_event(0x2a, false),
                key_event(0x26, false),
                key_event(0x26, true),
                key_event(0x2a, true),
                key_event(0x1f, false),
            ])
            .unwrap(),
        )
        .unwrap();
        let b = encode_vec(
            &FastPathInput::new(vec![
                key_event(0x39, false),
                key_event(0x0c, false),
                key_event(0x36, false),
                key_event(0x1e, false),
                key_event(0x36, true),
                FastPathInputEvent::UnicodeKeyboardEvent(KeyboardFlags::empty(), u16::from(b'!')),
                FastPathInputEvent::UnicodeKeyboardEvent(KeyboardFlags::RELEASE, u16::from(b'!')),
                key_event(0x1c, false),
            ])
            .unwrap(),
        )
        .unwrap();
        let stream = [a, b].concat();
        for cut in 0..stream.len() {
            let mut t = InputText::default();
            let text = t.feed(&stream[..cut]) + &t.feed(&stream[cut..]);
            assert_eq!(text, "Ls -A!\r", "cut at {cut}");
        }
        assert_eq!(scancode_char(0x0e, false, false), Some('\u{7f}'));
        assert_eq!(scancode_char(0x01, false, false), None, "Escape");
        assert_eq!(scancode_char(0x35, true, false), Some('?'));
    }

    #[test]
    fn the_decoder_survives_garbage_and_reads_sizes() {
        let mut d = Decoder::new(64, 32);
        d.feed(&[0x07, 1, 2, 3]);
        assert_eq!(d.errors, 1);
        // A fast-path PDU that is not a valid update: counted, skipped.
        d.feed(&[0x00, 0x05, 0xff, 0xff, 0xff]);
        assert!(d.errors >= 1);
        let f = d.frame(5);
        assert_eq!((f.width, f.height, f.rgba.len()), (64, 32, 64 * 32 * 4));
        assert!(f.rgba.chunks(4).all(|p| p == [0, 0, 0, 255]));
        assert_eq!(parse_size(b"800x600"), Some((800, 600)));
        assert_eq!(parse_size(b"800x"), None);
        d.resize(0, 9000);
        assert_eq!((d.width(), d.height()), (1, MAX_SIDE));
        d.resize(8192, 8192);
        assert_eq!((d.width(), d.height()), (8192, 2048), "at most 16 Mi pixels");
    }

    /// A fast-path bitmap update painting `rect` (inclusive) in one colour, uncompressed 32 bpp.
    fn fill(left: u16, top: u16, right: u16, bottom: u16, bgrx: [u8; 4]) -> Vec<u8> {
        use ironrdp_core::encode_vec;
        use ironrdp_pdu::bitmap::{BitmapData, BitmapUpdateData, Compression};
        use ironrdp_pdu::fast_path::{FastPathHeader, FastPathUpdatePdu, Fragmentation, UpdateCode};
        use ironrdp_pdu::geometry::InclusiveRectangle;
        let (w, h) = (right - left + 1, bottom - top + 1);
        let pixels: Vec<u8> = bgrx.repeat(usize::from(w) * usize::from(h));
        let update = encode_vec(&BitmapUpdateData {
            rectangles: vec![BitmapData {
                rectangle: InclusiveRectangle {
                    left,
                    top,
                    right,
                    bottom,
                },
                width: w,
                height: h,
                bits_per_pixel: 32,
                compression_flags: Compression::empty(),
                compressed_data_header: None,
                bitmap_data: &pixels,
            }],
        })
        .unwrap();
        let pdu = encode_vec(&FastPathUpdatePdu {
            fragmentation: Fragmentation::Single,
            update_code: UpdateCode::Bitmap,
            compression_flags: None,
            compression_type: None,
            data: &update,
        })
        .unwrap();
        let header = encode_vec(&FastPathHeader::new(
            ironrdp_pdu::fast_path::EncryptionFlags::empty(),
            pdu.len(),
        ))
        .unwrap();
        [header, pdu].concat()
    }

    #[test]
    fn an_rdp_recording_verifies_renders_at_offsets_and_indexes_keystrokes() {
        use crate::{export_cast, verify, Indexer, RecorderConfig, Recording, SessionMeta, SigningKey};
        use ironrdp_core::encode_vec;
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut cfg = RecorderConfig::new(dir.path(), key.clone());
        cfg.record_input = true;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let red = fill(0, 0, 63, 47, [0, 0, 255, 0]);
        let green = fill(16, 8, 31, 15, [0, 255, 0, 0]);
        // "ls" Enter
        let typed = encode_vec(
            &FastPathInput::new(vec![
                key_event(0x26, false),
                key_event(0x26, true),
                key_event(0x1f, false),
                key_event(0x1c, false),
            ])
            .unwrap(),
        )
        .unwrap();
        let sealed = rt.block_on(async {
            let rec = Recording::start(
                &cfg,
                SessionMeta {
                    session_id: "rdp1".into(),
                    user: "u".into(),
                    target: "t".into(),
                    protocol: "rdp".into(),
                    ..Default::default()
                },
            )
            .unwrap();
            rec.resize(64, 48);
            // The PDU split across two events: the decoder reframes the stream.
            rec.output(&red[..10]);
            rec.output(&red[10..]);
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            rec.input(&typed);
            rec.output(&green);
            rec.finish().await.unwrap()
        });
        let v = verify(&sealed.path, &key.verifying_key()).unwrap();
        assert!(!v.truncated);
        let red_px = [255, 0, 0, 255];
        let green_px = [0, 255, 0, 255];
        let px = |f: &Frame, x: usize, y: usize| f.rgba[(y * usize::from(f.width) + x) * 4..][..4].to_vec();
        let mut p = Player::open(&sealed.path);
        let black = p.frame_at(0).unwrap();
        assert_eq!((black.width, black.height), (64, 48), "the size applies from the start");
        let f0 = p.frame_at(100_000).unwrap();
        assert_eq!((f0.width, f0.height), (64, 48));
        assert_eq!(px(&f0, 20, 10), red_px, "before the green rectangle");
        let f1 = p.frame_at(10_000_000).unwrap();
        assert_eq!(px(&f1, 20, 10), green_px);
        assert_eq!(px(&f1, 40, 30), red_px);
        assert_eq!(p.errors().0, 0, "{:?}", p.errors());
        // Backwards, and again from a fresh player: the same frames.
        assert_eq!(p.frame_at(100_000).unwrap().rgba, f0.rgba);
        assert_eq!(render_at(&sealed.path, 10_000_000).unwrap().rgba, f1.rgba);
        assert!(p.duration_us >= 300_000);
        // A late live viewer's prefix: all of the server stream, or just the first rectangle.
        let total = server_stream_len(&sealed.path).unwrap();
        assert_eq!(total as usize, red.len() + green.len());
        assert_eq!(
            streams(&sealed.path).unwrap(),
            ([red.clone(), green.clone()].concat(), typed.clone())
        );
        let (d, fed) = decode_prefix(&sealed.path, red.len() as u64).unwrap();
        assert_eq!(fed as usize, red.len());
        assert_eq!(px(&d.frame(0), 20, 10), red_px);
        // The export has no graphics, only the typed text, which the index turns into a command.
        let mut cast = Vec::new();
        export_cast(&sealed.path, &mut cast).unwrap();
        let cast = String::from_utf8(cast).unwrap();
        assert!(cast.contains(r#""i", "ls\r""#), "{cast}");
        let mut ix = Indexer::default();
        crate::index_recording(&sealed.path, &mut ix).unwrap();
        let ix = ix.finish();
        assert!(ix.entries.iter().any(|e| e.text == "ls"), "{:?}", ix.entries);
        // The PNG of a frame has the frame's size.
        let png = f1.png();
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 64);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 48);
    }

    #[test]
    fn a_player_follows_a_live_recording_as_it_grows() {
        use crate::{RecorderConfig, Recording, SessionMeta, SigningKey};
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RecorderConfig::new(dir.path(), SigningKey::from_bytes(&[7; 32]));
        cfg.flush_interval = std::time::Duration::from_millis(20);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let rec = Recording::start(
                &cfg,
                SessionMeta {
                    session_id: "live".into(),
                    protocol: "rdp".into(),
                    ..Default::default()
                },
            )
            .unwrap();
            let wait = || tokio::time::sleep(std::time::Duration::from_millis(200));
            rec.resize(64, 48);
            rec.output(&fill(0, 0, 63, 47, [0, 0, 255, 0]));
            wait().await;
            let mut p = Player::open(rec.path());
            let px = |f: &Frame| f.rgba[(10 * 64 + 20) * 4..][..4].to_vec();
            assert_eq!(px(&p.frame_at(u64::MAX / 2).unwrap()), [255, 0, 0, 255]);
            rec.output(&fill(16, 8, 31, 15, [0, 255, 0, 0]));
            wait().await;
            assert_eq!(
                px(&p.frame_at(u64::MAX / 2 + 1).unwrap()),
                [0, 255, 0, 255],
                "the new chunk is read"
            );
            rec.finish().await.unwrap();
            assert_eq!(
                px(&p.frame_at(u64::MAX / 2 + 2).unwrap()),
                [0, 255, 0, 255],
                "the seal ends it"
            );
        });
    }

    #[test]
    fn arbitrary_bytes_never_stop_the_decoder() {
        // A small xorshift generator: the same bytes every run.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut d = Decoder::new(64, 48);
        let mut pdus = Vec::new();
        for _ in 0..3000 {
            let len = 4 + (next() % 200) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Mostly well-framed fast-path bitmap/surface updates with random bodies, some slow-path frames.
            if next() % 4 == 0 {
                p[0] = 3;
                p[1] = 0;
                p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            } else {
                p[0] = 0;
                p[1] = 0x80 | (len >> 8) as u8;
                p[2] = len as u8;
                p[3] = [0x01, 0x04, 0x00, 0x05][(next() % 4) as usize];
            }
            pdus.extend_from_slice(&p);
        }
        for piece in pdus.chunks(977) {
            d.feed(piece);
        }
        let f = d.frame(0);
        assert_eq!(f.rgba.len(), usize::from(f.width) * usize::from(f.height) * 4);
        assert!(d.errors > 0);
        // Pure noise too.
        let noise: Vec<u8> = (0..50_000).map(|_| next() as u8).collect();
        d.feed(&noise);
        let _ = d.frame(1);
    }
}
