//! The graphical account picker for a plain `USER` RDP login.
//!
//! When the Client Info PDU names only a user who may use several RDP accounts, the gateway finishes the
//! client's connection sequence itself (licensing skipped with "valid client", its own Demand Active, the
//! client's Confirm Active and finalization answered) and draws a list of the accounts with uncompressed
//! bitmap updates (fast-path). Keys (scancodes or unicode events, fast-path or slow-path) and mouse clicks
//! choose one. The caller then connects the target and reactivates the client towards it (Deactivate All,
//! then the target's own Demand Active relayed): see `server.rs`.
//!
//! The model ([`Picker`]: filter, selection, hit-testing, rendering) is plain code with unit tests; [`run`]
//! speaks RDP to the client.

use std::borrow::Cow;
use std::time::Duration;

use font8x8::UnicodeFonts;
use ironrdp_core::{Encode, WriteCursor};
use ironrdp_pdu::bitmap::{BitmapData, BitmapUpdateData, Compression};
use ironrdp_pdu::fast_path::{EncryptionFlags, FastPathHeader, FastPathUpdatePdu, Fragmentation, UpdateCode};
use ironrdp_pdu::geometry::InclusiveRectangle;
use ironrdp_pdu::input::fast_path::{FastPathInput, FastPathInputEvent, KeyboardFlags as FpKeyFlags};
use ironrdp_pdu::input::mouse::PointerFlags;
use ironrdp_pdu::input::scan_code::KeyboardFlags;
use ironrdp_pdu::input::InputEvent;
use ironrdp_pdu::mcs::{McsMessage, SendDataIndication};
use ironrdp_pdu::rdp::capability_sets::{
    self, CapabilitySet, DemandActive, GeneralExtraFlags, InputFlags, ServerDemandActive,
};
use ironrdp_pdu::rdp::client_info::CompressionType;
use ironrdp_pdu::rdp::finalization_messages::{ControlAction, ControlPdu, FontPdu, SynchronizePdu};
use ironrdp_pdu::rdp::headers::{
    CompressionFlags, ServerDeactivateAll, ShareControlHeader, ShareControlPdu, ShareDataHeader, ShareDataPdu,
    StreamPriority,
};
use ironrdp_pdu::rdp::server_license::{LicensePdu, LicensingErrorMessage};
use ironrdp_pdu::x224::X224;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::rdp::channels::Framer;
use crate::rdp::pdu::{self, IO_CHANNEL, SERVER_CHANNEL};

/// The share id of the picker's own activation (the target's activation brings its own).
pub(crate) const PICKER_SHARE_ID: u32 = 0x0001_03EA;

/// Glyphs are font8x8's 8x8 cells scaled up by this.
const SCALE: usize = 2;
const GLYPH: usize = 8 * SCALE;
const TITLE_SCALE: usize = 3;
const MARGIN: usize = 24;
const ROW_HEIGHT: usize = GLYPH + 10;
/// Where the first row starts.
const ROWS_TOP: usize = MARGIN + 8 * TITLE_SCALE + 16 + GLYPH + 16;

/// The hint at the bottom, one entry per line.
const HINT: [&str; 2] = [
    "Up/Down, number: choose  Enter, click: connect",
    "Type: filter  Backspace: erase  Esc: quit",
];

/// Colours (0xRRGGBB).
pub(crate) const BACKGROUND: u32 = 0x10_1C_2C;
pub(crate) const TEXT: u32 = 0xE8_EC_F0;
pub(crate) const DIM: u32 = 0x8C_9A_AA;
pub(crate) const SELECTED: u32 = 0x2E_6D_B4;
pub(crate) const TITLE: u32 = 0xFF_C8_4A;

/// Bitmap tiles: at most this wide; as high as the size limit allows.
const TILE_WIDTH: usize = 64;
/// The largest fast-path update payload sent unfragmented (MS-RDPBCGR's limit is 16 383 with headers).
const MAX_UPDATE: usize = 16_000;

/// One account offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub account: String,
    pub resource: String,
    /// `host:port`, shown beside it.
    pub host: String,
}

impl Entry {
    fn label(&self) -> String {
        format!("{}@{}", self.account, self.resource)
    }
}

/// A key the picker understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Enter,
    Esc,
    Backspace,
    Char(char),
}

/// What a key or click led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing visible changed.
    Unchanged,
    /// The screen must be redrawn.
    Changed,
    /// This entry (an index into the entries) was chosen.
    Pick(usize),
    /// The user left the picker.
    Quit,
}

/// The picker's state: the accounts, the filter typed, the selection.
#[derive(Debug, Clone)]
pub(crate) struct Picker {
    entries: Vec<Entry>,
    filter: String,
    /// Digits typed with an empty filter: the row number being chosen.
    number: String,
    /// Index into [`Picker::shown`].
    selected: usize,
    /// The first shown row on screen (scrolling).
    top: usize,
    width: usize,
    height: usize,
    /// The status line (e.g. "Connecting to ...").
    status: Option<String>,
}

impl Picker {
    /// A picker over `entries` for a `width` x `height` desktop.
    pub(crate) fn new(entries: Vec<Entry>, width: u16, height: u16) -> Picker {
        Picker {
            entries,
            filter: String::new(),
            number: String::new(),
            selected: 0,
            top: 0,
            width: usize::from(width).max(64),
            height: usize::from(height).max(64),
            status: None,
        }
    }

    /// The entries.
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The indices of the entries the filter lets through, in order.
    pub(crate) fn shown(&self) -> Vec<usize> {
        let f = self.filter.to_lowercase();
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| f.is_empty() || e.label().to_lowercase().contains(&f) || e.host.contains(&f))
            .map(|(i, _)| i)
            .collect()
    }

    /// The entry selected (an index into the entries), if any is shown.
    pub(crate) fn selected(&self) -> Option<usize> {
        self.shown().get(self.selected).copied()
    }

    /// Sets the status line (shown instead of the hint).
    pub(crate) fn set_status(&mut self, s: impl Into<String>) {
        self.status = Some(s.into());
    }

    /// How many rows fit on the screen.
    fn visible_rows(&self) -> usize {
        (self
            .height
            .saturating_sub(ROWS_TOP + 2 * MARGIN + HINT.len() * (GLYPH + 6))
            / ROW_HEIGHT)
            .max(1)
    }

    fn select(&mut self, i: usize) {
        let n = self.shown().len();
        self.selected = if n == 0 { 0 } else { i.min(n - 1) };
        let rows = self.visible_rows();
        if self.selected < self.top {
            self.top = self.selected;
        } else if self.selected >= self.top + rows {
            self.top = self.selected + 1 - rows;
        }
    }

    fn refilter(&mut self) {
        self.top = 0;
        self.select(0);
    }

    /// Applies a key press.
    pub(crate) fn key(&mut self, k: Key) -> Outcome {
        let before = (self.selected, self.top, self.filter.clone());
        let n = self.shown().len();
        let page = self.visible_rows();
        match k {
            Key::Esc => return Outcome::Quit,
            Key::Enter => {
                return match self.selected() {
                    Some(i) => Outcome::Pick(i),
                    None => Outcome::Unchanged,
                }
            }
            Key::Up => self.select(self.selected.saturating_sub(1)),
            Key::Down if n > 0 => self.select((self.selected + 1).min(n - 1)),
            Key::Down => {}
            Key::PageUp => self.select(self.selected.saturating_sub(page)),
            Key::PageDown => self.select(self.selected + page),
            Key::Home => self.select(0),
            Key::End => self.select(n.saturating_sub(1)),
            Key::Backspace => {
                if self.number.pop().is_none() && self.filter.pop().is_some() {
                    self.refilter();
                }
            }
            Key::Char(c) if c.is_ascii_digit() && self.filter.is_empty() => {
                // Row numbers: "1" then "2" is row 12 when there is one, else row 2.
                self.number.push(c);
                let mut row = self.number.parse::<usize>().unwrap_or(0);
                if row == 0 || row > n {
                    self.number = c.to_string();
                    row = self.number.parse::<usize>().unwrap_or(0);
                }
                if (1..=n).contains(&row) {
                    self.select(row - 1);
                } else {
                    self.number.clear();
                }
            }
            Key::Char(c) if (c.is_ascii_graphic() || c == ' ') && self.filter.len() < 64 => {
                self.number.clear();
                self.filter.push(c);
                self.refilter();
            }
            Key::Char(_) => {}
        }
        if before == (self.selected, self.top, self.filter.clone()) {
            Outcome::Unchanged
        } else {
            Outcome::Changed
        }
    }

    /// The shown row (an index into [`Picker::shown`]) at screen position `(x, y)`.
    pub(crate) fn row_at(&self, x: u16, y: u16) -> Option<usize> {
        let (x, y) = (usize::from(x), usize::from(y));
        if x < MARGIN || x >= self.width.saturating_sub(MARGIN) || y < ROWS_TOP {
            return None;
        }
        let r = (y - ROWS_TOP) / ROW_HEIGHT;
        if r >= self.visible_rows() {
            return None;
        }
        let i = self.top + r;
        (i < self.shown().len()).then_some(i)
    }

    /// A click at `(x, y)`: a row picks its entry.
    pub(crate) fn click(&mut self, x: u16, y: u16) -> Outcome {
        match self.row_at(x, y) {
            Some(r) => {
                self.select(r);
                self.selected().map_or(Outcome::Unchanged, Outcome::Pick)
            }
            None => Outcome::Unchanged,
        }
    }

    /// The whole screen.
    pub(crate) fn render(&self) -> Canvas {
        let mut c = Canvas::new(self.width, self.height, BACKGROUND);
        c.text(MARGIN, MARGIN, TITLE_SCALE, TITLE, "Postern: choose an account");
        let y = MARGIN + 8 * TITLE_SCALE + 16;
        let filter = if self.filter.is_empty() {
            "Type to filter".to_owned()
        } else {
            format!("Filter: {}_", self.filter)
        };
        c.text(MARGIN, y, SCALE, DIM, &filter);
        let shown = self.shown();
        let rows = self.visible_rows();
        let host_x = MARGIN + (self.width.saturating_sub(2 * MARGIN)) * 3 / 5;
        for (r, &i) in shown.iter().enumerate().skip(self.top).take(rows) {
            let y = ROWS_TOP + (r - self.top) * ROW_HEIGHT;
            let e = &self.entries[i];
            if r == self.selected {
                c.fill(
                    MARGIN - 8,
                    y,
                    self.width.saturating_sub(2 * MARGIN) + 16,
                    ROW_HEIGHT,
                    SELECTED,
                );
            }
            let label = format!("{}. {}", r + 1, e.label());
            c.text_clipped(MARGIN, y + 5, SCALE, TEXT, &label, host_x.saturating_sub(GLYPH));
            c.text_clipped(host_x, y + 5, SCALE, DIM, &e.host, self.width.saturating_sub(MARGIN));
        }
        if shown.is_empty() {
            c.text(MARGIN, ROWS_TOP + 5, SCALE, DIM, "(nothing matches)");
        } else if shown.len() > rows {
            let more = format!(
                "rows {}-{} of {}",
                self.top + 1,
                (self.top + rows).min(shown.len()),
                shown.len()
            );
            c.text(MARGIN, ROWS_TOP + rows * ROW_HEIGHT + 4, SCALE, DIM, &more);
        }
        let hint: Vec<String> = match &self.status {
            Some(st) => vec![st.clone()],
            None => HINT.iter().map(|l| (*l).to_owned()).collect(),
        };
        for (i, line) in hint.iter().rev().enumerate() {
            let hy = self.height.saturating_sub(MARGIN + GLYPH + i * (GLYPH + 6));
            c.text_clipped(MARGIN, hy, SCALE, TEXT, line, self.width.saturating_sub(MARGIN));
        }
        c
    }
}

/// An RGB image (0xRRGGBB per pixel, rows top-down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u32>,
}

impl Canvas {
    fn new(width: usize, height: usize, colour: u32) -> Canvas {
        Canvas {
            width,
            height,
            pixels: vec![colour; width * height],
        }
    }

    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, colour: u32) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                self.pixels[yy * self.width + xx] = colour;
            }
        }
    }

    fn text(&mut self, x: usize, y: usize, scale: usize, colour: u32, s: &str) {
        self.text_clipped(x, y, scale, colour, s, self.width);
    }

    /// Draws `s` from `(x, y)` with font8x8 glyphs scaled by `scale`; characters that would pass `right` are
    /// left out (the last one shown as `~` when some were).
    fn text_clipped(&mut self, x: usize, y: usize, scale: usize, colour: u32, s: &str, right: usize) {
        let cell = 8 * scale;
        let fit = right.saturating_sub(x) / cell;
        let chars: Vec<char> = s.chars().collect();
        for (n, ch) in chars.iter().enumerate().take(fit) {
            let ch = if n + 1 == fit && chars.len() > fit { '~' } else { *ch };
            let glyph = font8x8::BASIC_FONTS
                .get(ch)
                .unwrap_or(font8x8::BASIC_FONTS.get('?').unwrap_or([0; 8]));
            let gx = x + n * cell;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.fill(gx + col * scale, y + row * scale, scale, scale, colour);
                    }
                }
            }
        }
    }

    /// The pixel at `(x, y)`.
    pub(crate) fn at(&self, x: usize, y: usize) -> u32 {
        self.pixels[y * self.width + x]
    }
}

/// A rectangle of the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// How the client wants bitmaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// 32 or 24.
    pub bpp: u16,
    /// The largest update payload (bytes) the client takes unfragmented.
    pub max_update: usize,
}

impl Limits {
    fn bytes_per_pixel(&self) -> usize {
        usize::from(self.bpp / 8)
    }

    /// Tile height for a tile of `TILE_WIDTH` so that one tile fits one update.
    fn tile_height(&self) -> usize {
        let row = TILE_WIDTH * self.bytes_per_pixel();
        ((self.max_update.min(MAX_UPDATE) - 64) / row).clamp(1, 64)
    }
}

/// The tiles of `new` that differ from `old` (all of them without `old`).
pub(crate) fn changed_tiles(old: Option<&Canvas>, new: &Canvas, limits: Limits) -> Vec<Rect> {
    let th = limits.tile_height();
    let mut out = Vec::new();
    let same_size = old.is_some_and(|o| o.width == new.width && o.height == new.height);
    for ty in (0..new.height).step_by(th) {
        for tx in (0..new.width).step_by(TILE_WIDTH) {
            let r = Rect {
                x: tx,
                y: ty,
                w: TILE_WIDTH.min(new.width - tx),
                h: th.min(new.height - ty),
            };
            let differs = match old {
                Some(o) if same_size => (r.y..r.y + r.h).any(|y| {
                    let a = y * new.width + r.x;
                    o.pixels[a..a + r.w] != new.pixels[a..a + r.w]
                }),
                _ => true,
            };
            if differs {
                out.push(r);
            }
        }
    }
    out
}

/// The fast-path Bitmap Update PDU (uncompressed, bottom-up rows, widths padded to 4 pixels) drawing `r` of `c`.
pub(crate) fn bitmap_update(c: &Canvas, r: Rect, limits: Limits) -> Result<Vec<u8>, String> {
    let bpp = limits.bytes_per_pixel();
    let padded = r.w.div_ceil(4) * 4;
    let mut data = Vec::with_capacity(padded * r.h * bpp);
    for y in (r.y..r.y + r.h).rev() {
        for x in r.x..r.x + padded {
            let p = c.at(x.min(r.x + r.w - 1), y);
            let [_, red, green, blue] = p.to_be_bytes();
            data.extend_from_slice(&[blue, green, red]);
            if bpp == 4 {
                data.push(0xff);
            }
        }
    }
    let u16_of = |v: usize| u16::try_from(v).map_err(|_| format!("bitmap coordinate {v} out of range"));
    let rect = BitmapData {
        rectangle: InclusiveRectangle {
            left: u16_of(r.x)?,
            top: u16_of(r.y)?,
            right: u16_of(r.x + r.w - 1)?,
            bottom: u16_of(r.y + r.h - 1)?,
        },
        width: u16_of(padded)?,
        height: u16_of(r.h)?,
        bits_per_pixel: limits.bpp,
        compression_flags: Compression::empty(),
        compressed_data_header: None,
        bitmap_data: &data,
    };
    let update = BitmapUpdateData { rectangles: vec![rect] };
    let body = pdu::encode(&update)?;
    let fp = FastPathUpdatePdu {
        fragmentation: Fragmentation::Single,
        update_code: UpdateCode::Bitmap,
        compression_flags: None,
        compression_type: None,
        data: &body,
    };
    let header = FastPathHeader::new(EncryptionFlags::empty(), fp.size());
    let mut out = vec![0u8; header.size() + fp.size()];
    let mut cur = WriteCursor::new(&mut out);
    header
        .encode(&mut cur)
        .map_err(|e| format!("encoding a fast-path header: {e}"))?;
    fp.encode(&mut cur)
        .map_err(|e| format!("encoding a bitmap update: {e}"))?;
    Ok(out)
}

/// A PDU to the client on the I/O channel.
fn to_client<T: Encode>(pdu: &T) -> Result<Vec<u8>, String> {
    let data = pdu::encode(pdu)?;
    pdu::encode(&X224(SendDataIndication {
        initiator_id: SERVER_CHANNEL,
        channel_id: IO_CHANNEL,
        user_data: Cow::Owned(data),
    }))
}

fn share_data(pdu: ShareDataPdu) -> ShareControlHeader {
    ShareControlHeader {
        share_control_pdu: ShareControlPdu::Data(ShareDataHeader {
            share_data_pdu: pdu,
            stream_priority: StreamPriority::Low,
            compression_flags: CompressionFlags::empty(),
            compression_type: CompressionType::K8,
        }),
        pdu_source: SERVER_CHANNEL,
        share_id: PICKER_SHARE_ID,
    }
}

/// The Deactivate All PDU that ends the picker's activation before the target's Demand Active is relayed.
pub(crate) fn deactivate_all() -> Result<Vec<u8>, String> {
    to_client(&ShareControlHeader {
        share_control_pdu: ShareControlPdu::ServerDeactivateAll(ServerDeactivateAll),
        pdu_source: SERVER_CHANNEL,
        share_id: PICKER_SHARE_ID,
    })
}

/// The gateway's capabilities for the picker's activation.
fn capabilities(width: u16, height: u16, bpp: u16) -> Vec<CapabilitySet> {
    vec![
        CapabilitySet::General(capability_sets::General {
            extra_flags: GeneralExtraFlags::FASTPATH_OUTPUT_SUPPORTED,
            refresh_rect_support: true,
            suppress_output_support: true,
            ..Default::default()
        }),
        CapabilitySet::Bitmap(capability_sets::Bitmap {
            pref_bits_per_pix: bpp,
            desktop_width: width,
            desktop_height: height,
            // Lets FreeRDP take the reactivation towards the target (whose size may differ).
            desktop_resize_flag: true,
            drawing_flags: capability_sets::BitmapDrawingFlags::empty(),
        }),
        CapabilitySet::Order(capability_sets::Order::new(
            capability_sets::OrderFlags::empty(),
            capability_sets::OrderSupportExFlags::empty(),
            0,
            0,
        )),
        CapabilitySet::Pointer(capability_sets::Pointer {
            color_pointer_cache_size: 25,
            pointer_cache_size: 25,
        }),
        CapabilitySet::Input(capability_sets::Input {
            input_flags: InputFlags::SCANCODES
                | InputFlags::MOUSEX
                | InputFlags::UNICODE
                | InputFlags::FASTPATH_INPUT
                | InputFlags::FASTPATH_INPUT_2,
            keyboard_layout: 0,
            keyboard_type: None,
            keyboard_subtype: 0,
            keyboard_function_key: 0,
            keyboard_ime_filename: String::new(),
        }),
        CapabilitySet::VirtualChannel(capability_sets::VirtualChannel {
            flags: capability_sets::VirtualChannelFlags::NO_COMPRESSION,
            chunk_size: None,
        }),
        // The share capability names the server's MCS id, as Windows does.
        CapabilitySet::Share(SERVER_CHANNEL.to_le_bytes().into_iter().chain([0, 0]).collect()),
    ]
}

/// The licensing ("valid client", no license exchange) and Demand Active PDUs that start the picker's
/// activation.
fn activation(width: u16, height: u16, bpp: u16) -> Result<Vec<u8>, String> {
    let license: LicensePdu = LicensingErrorMessage::new_valid_client()
        .map_err(|e| format!("encoding the license PDU: {e}"))?
        .into();
    let mut out = to_client(&license)?;
    out.extend(to_client(&ShareControlHeader {
        share_control_pdu: ShareControlPdu::ServerDemandActive(ServerDemandActive {
            pdu: DemandActive {
                source_descriptor: "RDP".into(),
                capability_sets: capabilities(width, height, bpp),
            },
        }),
        pdu_source: SERVER_CHANNEL,
        share_id: PICKER_SHARE_ID,
    })?);
    Ok(out)
}

/// The server's half of the finalization (after the client's Font List).
fn finalization(user_channel: u16) -> Result<Vec<u8>, String> {
    let mut out = to_client(&share_data(ShareDataPdu::Synchronize(SynchronizePdu {
        target_user_id: user_channel,
    })))?;
    out.extend(to_client(&share_data(ShareDataPdu::Control(ControlPdu {
        action: ControlAction::Cooperate,
        grant_id: 0,
        control_id: 0,
    })))?);
    out.extend(to_client(&share_data(ShareDataPdu::Control(ControlPdu {
        action: ControlAction::GrantedControl,
        grant_id: user_channel,
        control_id: u32::from(SERVER_CHANNEL),
    })))?);
    out.extend(to_client(&share_data(ShareDataPdu::FontMap(FontPdu::default())))?);
    Ok(out)
}

/// What the client wants from the picker's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    Key(Key),
    Click(u16, u16),
    /// Redraw everything (Refresh Rect).
    Refresh,
}

/// A keyboard's state (shift) for turning US-layout scancodes into keys.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Keyboard {
    shift: bool,
}

impl Keyboard {
    /// A scancode event (set 1), `None` for releases and keys the picker ignores.
    pub(crate) fn scancode(&mut self, code: u16, extended: bool, release: bool) -> Option<Key> {
        if code == 0x2a || code == 0x36 {
            self.shift = !release;
            return None;
        }
        if release {
            return None;
        }
        let key = match (code, extended) {
            (0x48, _) => Key::Up,
            (0x50, _) => Key::Down,
            (0x49, _) => Key::PageUp,
            (0x51, _) => Key::PageDown,
            (0x47, _) => Key::Home,
            (0x4f, _) => Key::End,
            (0x1c, _) => Key::Enter,
            (0x01, _) => Key::Esc,
            (0x0e, _) => Key::Backspace,
            (_, true) => return None,
            _ => Key::Char(us_char(code, self.shift)?),
        };
        Some(key)
    }
}

/// The character of a US-layout scancode (set 1).
fn us_char(code: u16, shift: bool) -> Option<char> {
    const ROW_Q: &str = "qwertyuiop";
    const ROW_A: &str = "asdfghjkl";
    const ROW_Z: &str = "zxcvbnm";
    const DIGITS: &str = "1234567890";
    const SHIFTED: &str = "!@#$%^&*()";
    let nth = |s: &str, i: u16| s.chars().nth(usize::from(i));
    let c = match code {
        0x02..=0x0b if shift => nth(SHIFTED, code - 0x02)?,
        0x02..=0x0b => nth(DIGITS, code - 0x02)?,
        0x10..=0x19 => nth(ROW_Q, code - 0x10)?,
        0x1e..=0x26 => nth(ROW_A, code - 0x1e)?,
        0x2c..=0x32 => nth(ROW_Z, code - 0x2c)?,
        0x0c => {
            if shift {
                '_'
            } else {
                '-'
            }
        }
        0x34 => '.',
        0x39 => ' ',
        _ => return None,
    };
    Some(if shift { c.to_ascii_uppercase() } else { c })
}

/// A unicode keyboard event's key.
fn unicode_key(code: u16, release: bool) -> Option<Key> {
    if release {
        return None;
    }
    match code {
        0x1b => Some(Key::Esc),
        0x0d | 0x0a => Some(Key::Enter),
        0x08 | 0x7f => Some(Key::Backspace),
        c => char::from_u32(u32::from(c)).filter(|c| !c.is_control()).map(Key::Char),
    }
}

/// The client PDU's meaning for the picker.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    pub inputs: Vec<Input>,
    /// The client's Font List (the end of its finalization).
    pub font_list: bool,
    /// The client's Confirm Active, with its multifragment limit if it gave one.
    pub confirm_active: Option<Option<u32>>,
    /// The client asked to stop (Shutdown Request) or left the MCS domain.
    pub leaving: bool,
}

/// Decodes one client PDU (fast-path or slow-path), `kb` tracking shift.
pub(crate) fn decode_client(p: &[u8], kb: &mut Keyboard) -> Decoded {
    let mut d = Decoded::default();
    if p.first() != Some(&3) {
        let Ok(input) = pdu::parse::<FastPathInput>(p, "fast-path input") else {
            debug!("undecodable fast-path input ignored");
            return d;
        };
        for e in input.input_events() {
            match e {
                FastPathInputEvent::KeyboardEvent(f, code) => {
                    let k = kb.scancode(
                        u16::from(*code),
                        f.contains(FpKeyFlags::EXTENDED),
                        f.contains(FpKeyFlags::RELEASE),
                    );
                    d.inputs.extend(k.map(Input::Key));
                }
                FastPathInputEvent::UnicodeKeyboardEvent(f, code) => {
                    d.inputs
                        .extend(unicode_key(*code, f.contains(FpKeyFlags::RELEASE)).map(Input::Key));
                }
                FastPathInputEvent::MouseEvent(m)
                    if m.flags.contains(PointerFlags::DOWN | PointerFlags::LEFT_BUTTON) =>
                {
                    d.inputs.push(Input::Click(m.x_position, m.y_position));
                }
                _ => {}
            }
        }
        return d;
    }
    let sd = match pdu::parse::<X224<McsMessage<'_>>>(p, "MCS PDU").map(|m| m.0) {
        Ok(McsMessage::SendDataRequest(sd)) if sd.channel_id == IO_CHANNEL => sd,
        Ok(McsMessage::DisconnectProviderUltimatum(_)) => {
            d.leaving = true;
            return d;
        }
        _ => return d,
    };
    let Ok(h) = pdu::parse::<ShareControlHeader>(&sd.user_data, "Share Control PDU") else {
        debug!("undecodable slow-path PDU ignored");
        return d;
    };
    match h.share_control_pdu {
        ShareControlPdu::ClientConfirmActive(c) => {
            let max = c.pdu.capability_sets.iter().find_map(|s| match s {
                CapabilitySet::MultiFragmentUpdate(m) => Some(m.max_request_size),
                _ => None,
            });
            d.confirm_active = Some(max);
        }
        ShareControlPdu::Data(data) => match data.share_data_pdu {
            ShareDataPdu::FontList(_) => d.font_list = true,
            ShareDataPdu::ShutdownRequest => d.leaving = true,
            ShareDataPdu::RefreshRectangle(_) => d.inputs.push(Input::Refresh),
            ShareDataPdu::Input(events) => {
                for e in events.0 {
                    match e {
                        InputEvent::ScanCode(s) => {
                            let k = kb.scancode(
                                s.key_code,
                                s.flags.contains(KeyboardFlags::EXTENDED),
                                s.flags.contains(KeyboardFlags::RELEASE),
                            );
                            d.inputs.extend(k.map(Input::Key));
                        }
                        InputEvent::Unicode(u) => {
                            let release = u.flags.contains(ironrdp_pdu::input::unicode::KeyboardFlags::RELEASE);
                            d.inputs.extend(unicode_key(u.unicode_code, release).map(Input::Key));
                        }
                        InputEvent::Mouse(m) if m.flags.contains(PointerFlags::DOWN | PointerFlags::LEFT_BUTTON) => {
                            d.inputs.push(Input::Click(m.x_position, m.y_position));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        },
        _ => {}
    }
    d
}

/// How the picker ended without a pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Left {
    /// Esc (the client is then told so and disconnected).
    Quit,
    /// The client closed the connection or asked to (Shutdown Request, MCS disconnect).
    Disconnected,
    /// No input for the idle time given.
    Idle(Duration),
    /// The gateway is shutting down.
    Shutdown,
}

impl std::fmt::Display for Left {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Left::Quit => f.write_str("the user pressed Esc"),
            Left::Disconnected => f.write_str("the client disconnected"),
            Left::Idle(d) => write!(f, "no input for {}s", d.as_secs()),
            Left::Shutdown => f.write_str("the gateway is shutting down"),
        }
    }
}

/// The client's side of the picker: activation, drawing, input, until a pick (an index into the picker's
/// entries, the screen then saying "Connecting to ...") or the end. `idle` ends a picker left untouched.
/// Errors are the client's (malformed stream, write failures).
pub(crate) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    picker: &mut Picker,
    user_channel: u16,
    bpp: u16,
    idle: Duration,
    cancel: &CancellationToken,
) -> Result<Result<usize, Left>, String> {
    let (w, h) = (
        u16::try_from(picker.width).unwrap_or(u16::MAX),
        u16::try_from(picker.height).unwrap_or(u16::MAX),
    );
    s.write_all(&activation(w, h, bpp)?)
        .await
        .map_err(|e| format!("sending the Demand Active: {e}"))?;
    let mut limits = Limits {
        bpp,
        max_update: MAX_UPDATE,
    };
    let mut frames = Framer::default();
    let mut kb = Keyboard::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut active = false;
    let mut shown: Option<Canvas> = None;
    let idle_deadline = tokio::time::sleep(idle);
    tokio::pin!(idle_deadline);
    loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => return Ok(Err(Left::Shutdown)),
            _ = &mut idle_deadline => return Ok(Err(Left::Idle(idle))),
            r = s.read(&mut buf) => match r {
                Ok(n) => n,
                // A client killed or closed without TLS close_notify has left, as one that closed cleanly.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) => 0,
                Err(e) => return Err(format!("reading: {e}")),
            },
        };
        if n == 0 {
            return Ok(Err(Left::Disconnected));
        }
        frames.push(&buf[..n]);
        let mut redraw = false;
        let mut full = false;
        while let Some(p) = frames.next_pdu()? {
            let d = decode_client(&p, &mut kb);
            if d.leaving {
                return Ok(Err(Left::Disconnected));
            }
            if let Some(max) = d.confirm_active {
                if let Some(m) = max.filter(|m| *m > 0) {
                    limits.max_update = usize::try_from(m).unwrap_or(MAX_UPDATE).clamp(1024, MAX_UPDATE);
                }
            }
            if d.font_list && !active {
                s.write_all(&finalization(user_channel)?)
                    .await
                    .map_err(|e| format!("finalization: {e}"))?;
                active = true;
                full = true;
            }
            if !active {
                continue;
            }
            for i in d.inputs {
                idle_deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                let outcome = match i {
                    Input::Key(k) => picker.key(k),
                    Input::Click(x, y) => picker.click(x, y),
                    Input::Refresh => {
                        full = true;
                        Outcome::Unchanged
                    }
                };
                match outcome {
                    Outcome::Unchanged => {}
                    Outcome::Changed => redraw = true,
                    Outcome::Quit => return Ok(Err(Left::Quit)),
                    Outcome::Pick(i) => {
                        let label = picker.entries()[i].label();
                        picker.set_status(format!("Connecting to {label} ..."));
                        draw(s, picker, &mut shown, false, limits).await?;
                        return Ok(Ok(i));
                    }
                }
            }
        }
        if full || redraw {
            draw(s, picker, &mut shown, full, limits).await?;
        }
    }
}

/// Sends the tiles that changed since `shown` (all with `full`).
async fn draw<S: AsyncWrite + Unpin>(
    s: &mut S,
    picker: &Picker,
    shown: &mut Option<Canvas>,
    full: bool,
    limits: Limits,
) -> Result<(), String> {
    let canvas = picker.render();
    let old = if full { None } else { shown.as_ref() };
    let mut out = Vec::new();
    for r in changed_tiles(old, &canvas, limits) {
        out.extend(bitmap_update(&canvas, r, limits)?);
    }
    s.write_all(&out).await.map_err(|e| format!("drawing: {e}"))?;
    *shown = Some(canvas);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                account: format!("acct{i}"),
                resource: if i % 2 == 0 { "web".into() } else { "db".into() },
                host: format!("10.0.0.{i}:3389"),
            })
            .collect()
    }

    #[test]
    fn selection_moves_within_the_shown_rows() {
        let mut p = Picker::new(entries(3), 800, 600);
        assert_eq!(p.selected(), Some(0));
        assert_eq!(p.key(Key::Up), Outcome::Unchanged);
        assert_eq!(p.key(Key::Down), Outcome::Changed);
        assert_eq!(p.key(Key::Down), Outcome::Changed);
        assert_eq!(p.key(Key::Down), Outcome::Unchanged, "the last row stays selected");
        assert_eq!(p.selected(), Some(2));
        assert_eq!(p.key(Key::Home), Outcome::Changed);
        assert_eq!(p.key(Key::End), Outcome::Changed);
        assert_eq!(p.key(Key::Enter), Outcome::Pick(2));
        assert_eq!(p.key(Key::Esc), Outcome::Quit);
        // Digits choose a row by its number.
        assert_eq!(p.key(Key::Char('2')), Outcome::Changed);
        assert_eq!(p.selected(), Some(1));
        assert_eq!(p.key(Key::Char('9')), Outcome::Unchanged, "no row 9 (nor 29)");
        assert_eq!(p.selected(), Some(1));
    }

    #[test]
    fn numbers_reach_rows_past_nine() {
        let mut p = Picker::new(entries(12), 800, 2000);
        p.key(Key::Char('1'));
        assert_eq!(p.selected(), Some(0));
        p.key(Key::Char('2'));
        assert_eq!(p.selected(), Some(11), "1 then 2 is row 12");
        p.key(Key::Char('3'));
        assert_eq!(p.selected(), Some(2), "123 is no row: 3 starts again");
    }

    #[test]
    fn typing_filters_and_backspace_widens_again() {
        let mut p = Picker::new(entries(4), 800, 600);
        for c in "db".chars() {
            assert_eq!(p.key(Key::Char(c)), Outcome::Changed);
        }
        assert_eq!(p.shown(), vec![1, 3]);
        assert_eq!(p.selected(), Some(1));
        p.key(Key::Down);
        assert_eq!(p.key(Key::Enter), Outcome::Pick(3), "picks map back to the entries");
        // Digits after letters are part of the filter.
        p.key(Key::Char('x'));
        assert!(p.shown().is_empty());
        assert_eq!(p.selected(), None);
        assert_eq!(p.key(Key::Enter), Outcome::Unchanged, "nothing to pick");
        p.key(Key::Backspace);
        assert_eq!(p.shown(), vec![1, 3]);
        p.key(Key::Backspace);
        p.key(Key::Backspace);
        assert_eq!(p.shown(), vec![0, 1, 2, 3]);
        assert_eq!(p.key(Key::Backspace), Outcome::Unchanged);
        // Case-insensitive, on the label and the host.
        p.key(Key::Char('A'));
        p.key(Key::Char('C'));
        p.key(Key::Char('C'));
        p.key(Key::Char('T'));
        p.key(Key::Char('2'));
        assert_eq!(p.shown(), vec![2]);
    }

    #[test]
    fn rows_are_hit_by_clicks_and_scrolling_keeps_the_selection_visible() {
        let mut p = Picker::new(entries(3), 800, 600);
        let y = |r: usize| u16::try_from(ROWS_TOP + r * ROW_HEIGHT + ROW_HEIGHT / 2).unwrap();
        assert_eq!(p.row_at(100, y(0)), Some(0));
        assert_eq!(p.row_at(100, y(2)), Some(2));
        assert_eq!(p.row_at(100, y(3)), None, "below the last row");
        assert_eq!(p.row_at(2, y(1)), None, "in the margin");
        assert_eq!(p.row_at(100, 5), None, "the title");
        assert_eq!(p.click(100, y(1)), Outcome::Pick(1));
        assert_eq!(p.click(100, 5), Outcome::Unchanged);

        let mut p = Picker::new(entries(50), 800, 300);
        let rows = p.visible_rows();
        assert!(rows < 50);
        for _ in 0..rows + 3 {
            p.key(Key::Down);
        }
        assert_eq!(p.selected(), Some(rows + 3));
        assert_eq!(p.top, 4, "scrolled so the selection is the last visible row");
        assert_eq!(p.row_at(100, y(rows - 1)), Some(rows + 3));
        assert_eq!(p.click(100, y(0)), Outcome::Pick(4));
    }

    #[test]
    fn scancodes_and_unicode_events_on_a_us_layout() {
        let mut kb = Keyboard::default();
        assert_eq!(kb.scancode(0x48, true, false), Some(Key::Up));
        assert_eq!(kb.scancode(0x50, true, false), Some(Key::Down));
        assert_eq!(kb.scancode(0x50, true, true), None, "releases are ignored");
        assert_eq!(kb.scancode(0x1c, false, false), Some(Key::Enter));
        assert_eq!(kb.scancode(0x1c, true, false), Some(Key::Enter), "keypad Enter");
        assert_eq!(kb.scancode(0x01, false, false), Some(Key::Esc));
        assert_eq!(kb.scancode(0x0e, false, false), Some(Key::Backspace));
        assert_eq!(kb.scancode(0x03, false, false), Some(Key::Char('2')));
        assert_eq!(kb.scancode(0x1e, false, false), Some(Key::Char('a')));
        assert_eq!(kb.scancode(0x2a, false, false), None, "shift down");
        assert_eq!(kb.scancode(0x03, false, false), Some(Key::Char('@')));
        assert_eq!(kb.scancode(0x32, false, false), Some(Key::Char('M')));
        assert_eq!(kb.scancode(0x2a, false, true), None, "shift up");
        assert_eq!(kb.scancode(0x0c, false, false), Some(Key::Char('-')));
        assert_eq!(kb.scancode(0x1d, true, false), None, "right Ctrl");
        assert_eq!(unicode_key(u16::from(b'x'), false), Some(Key::Char('x')));
        assert_eq!(unicode_key(0x1b, false), Some(Key::Esc));
        assert_eq!(unicode_key(u16::from(b'x'), true), None);
    }

    #[test]
    fn client_input_pdus_decode_into_keys_and_clicks() {
        use ironrdp_pdu::input::{InputEventPdu, MousePdu, ScanCodePdu};
        let mut kb = Keyboard::default();
        let fp = pdu::encode(
            &FastPathInput::new(vec![
                FastPathInputEvent::KeyboardEvent(FpKeyFlags::EXTENDED, 0x50),
                FastPathInputEvent::KeyboardEvent(FpKeyFlags::EXTENDED | FpKeyFlags::RELEASE, 0x50),
                FastPathInputEvent::UnicodeKeyboardEvent(FpKeyFlags::empty(), u16::from(b'q')),
                FastPathInputEvent::MouseEvent(MousePdu {
                    flags: PointerFlags::DOWN | PointerFlags::LEFT_BUTTON,
                    number_of_wheel_rotation_units: 0,
                    x_position: 10,
                    y_position: 20,
                }),
            ])
            .unwrap(),
        )
        .unwrap();
        let d = decode_client(&fp, &mut kb);
        assert_eq!(
            d.inputs,
            vec![Input::Key(Key::Down), Input::Key(Key::Char('q')), Input::Click(10, 20)]
        );
        let slow = share_data(ShareDataPdu::Input(InputEventPdu(vec![InputEvent::ScanCode(
            ScanCodePdu {
                flags: KeyboardFlags::empty(),
                key_code: 0x01,
            },
        )])));
        let frame = pdu::send_data_request(1007, &pdu::encode(&slow).unwrap()).unwrap();
        assert_eq!(decode_client(&frame, &mut kb).inputs, vec![Input::Key(Key::Esc)]);
        let font = pdu::send_data_request(
            1007,
            &pdu::encode(&share_data(ShareDataPdu::FontList(FontPdu::default()))).unwrap(),
        )
        .unwrap();
        assert!(decode_client(&font, &mut kb).font_list);
        assert!(
            decode_client(&[0x44, 3, 0], &mut kb).inputs.is_empty(),
            "garbage is ignored"
        );
    }

    #[test]
    fn rendering_draws_the_rows_and_highlights_the_selection() {
        let mut p = Picker::new(entries(3), 800, 600);
        let c = p.render();
        assert_eq!((c.width, c.height, c.pixels.len()), (800, 600, 800 * 600));
        let mid = |r: usize| ROWS_TOP + r * ROW_HEIGHT + 1;
        assert_eq!(c.at(MARGIN, mid(0)), SELECTED);
        assert_eq!(c.at(MARGIN, mid(1)), BACKGROUND);
        assert!(c.pixels.contains(&TITLE) && c.pixels.contains(&TEXT) && c.pixels.contains(&DIM));
        p.key(Key::Down);
        let c2 = p.render();
        assert_eq!(c2.at(MARGIN, mid(0)), BACKGROUND);
        assert_eq!(c2.at(MARGIN, mid(1)), SELECTED);
        // Only the tiles of the two rows changed.
        let limits = Limits {
            bpp: 32,
            max_update: MAX_UPDATE,
        };
        let all = changed_tiles(None, &c2, limits);
        let changed = changed_tiles(Some(&c), &c2, limits);
        assert!(
            !changed.is_empty() && changed.len() < all.len() / 2,
            "{} of {}",
            changed.len(),
            all.len()
        );
        assert!(changed_tiles(Some(&c2), &c2, limits).is_empty());
        // The tiles cover the screen exactly once.
        let area: usize = all.iter().map(|r| r.w * r.h).sum();
        assert_eq!(area, 800 * 600);
    }

    #[test]
    fn bitmap_updates_fit_the_clients_limits() {
        use ironrdp_core::decode;
        let p = Picker::new(entries(2), 1366, 768);
        let c = p.render();
        for (bpp, max_update) in [(32, MAX_UPDATE), (24, MAX_UPDATE), (32, 4096)] {
            let limits = Limits { bpp, max_update };
            let tiles = changed_tiles(None, &c, limits);
            for r in &tiles {
                assert!(r.x + r.w <= 1366 && r.y + r.h <= 768);
                let pdu = bitmap_update(&c, *r, limits).unwrap();
                assert!(pdu.len() <= max_update.min(MAX_UPDATE) + 16, "{} bytes", pdu.len());
                let header: FastPathHeader = decode(&pdu).unwrap();
                let body = &pdu[header.size()..];
                let fp: FastPathUpdatePdu<'_> = decode(body).unwrap();
                assert_eq!(fp.update_code, UpdateCode::Bitmap);
                let upd: BitmapUpdateData<'_> = decode(fp.data).unwrap();
                let b = &upd.rectangles[0];
                assert_eq!(usize::from(b.rectangle.right - b.rectangle.left + 1), r.w);
                assert_eq!(usize::from(b.width) % 4, 0, "widths padded to 4 pixels");
                assert_eq!(
                    b.bitmap_data.len(),
                    usize::from(b.width) * usize::from(b.height) * usize::from(bpp / 8)
                );
            }
            // The right edge (1366 is not a multiple of 64 nor of 4) is covered.
            assert!(tiles.iter().any(|r| r.x + r.w == 1366));
        }
        // Bottom-up BGR(X): the first bytes are the bottom-left pixel.
        let r = Rect { x: 0, y: 0, w: 4, h: 2 };
        let mut c = Canvas::new(4, 2, 0x11_22_33);
        c.pixels[4] = 0xAA_BB_CC;
        let limits = Limits {
            bpp: 32,
            max_update: MAX_UPDATE,
        };
        let pdu = bitmap_update(&c, r, limits).unwrap();
        let header: FastPathHeader = ironrdp_core::decode(&pdu).unwrap();
        let fp: FastPathUpdatePdu<'_> = ironrdp_core::decode(&pdu[header.size()..]).unwrap();
        let upd: BitmapUpdateData<'_> = ironrdp_core::decode(fp.data).unwrap();
        assert_eq!(
            &upd.rectangles[0].bitmap_data[..8],
            &[0xCC, 0xBB, 0xAA, 0xFF, 0x33, 0x22, 0x11, 0xFF]
        );
    }

    #[test]
    fn activation_and_finalization_pdus_decode() {
        let a = activation(800, 600, 32).unwrap();
        let mut r = Framer::default();
        r.push(&a);
        let lic = r.next_pdu().unwrap().unwrap();
        let da = r.next_pdu().unwrap().unwrap();
        assert!(r.next_pdu().unwrap().is_none());
        let user_data = |f: &[u8]| match pdu::parse::<X224<McsMessage<'_>>>(f, "t").unwrap().0 {
            McsMessage::SendDataIndication(sd) => sd.user_data.into_owned(),
            other => panic!("{other:?}"),
        };
        let lic = user_data(&lic);
        assert_eq!(lic[0] & 0x80, 0x80, "SEC_LICENSE_PKT");
        let h: ShareControlHeader = pdu::parse(&user_data(&da), "t").unwrap();
        assert_eq!(h.share_id, PICKER_SHARE_ID);
        match h.share_control_pdu {
            ShareControlPdu::ServerDemandActive(d) => assert!(d.pdu.capability_sets.iter().any(|c| matches!(
                c,
                CapabilitySet::Bitmap(b) if (b.desktop_width, b.desktop_height, b.pref_bits_per_pix) == (800, 600, 32)
            ))),
            other => panic!("{other:?}"),
        }
        let mut r = Framer::default();
        r.push(&finalization(1007).unwrap());
        let mut n = 0;
        while let Some(f) = r.next_pdu().unwrap() {
            let _: ShareControlHeader = pdu::parse(&user_data(&f), "t").unwrap();
            n += 1;
        }
        assert_eq!(n, 4);
        let h: ShareControlHeader = pdu::parse(&user_data(&deactivate_all().unwrap()), "t").unwrap();
        assert!(matches!(h.share_control_pdu, ShareControlPdu::ServerDeactivateAll(_)));
    }
}
