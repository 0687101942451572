//! Text extraction for search: turns a recording's asciicast v2 text into plain lines with
//! time offsets (terminal escapes stripped), best-effort commands typed at a shell prompt,
//! and the markers (exec command lines, file transfers, exit statuses).
//!
//! Pure and bounded: [`Indexer`] is fed a recording's events, either straight from the file
//! ([`index_recording`](crate::index_recording), no JSON in between) or as asciicast text
//! ([`std::io::Write`], e.g. from [`export_cast`](crate::export_cast)). It keeps at most
//! [`IndexLimits::max_text_bytes`] of text, scans at most [`IndexLimits::max_output_bytes`] of
//! terminal output, drops repeated lines, and ignores cast lines longer than
//! [`IndexLimits::max_cast_line`]. Storage is someone else's job (the vault).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};

/// Bounds of what one recording contributes to the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLimits {
    /// Text kept per recording, all entries together (default 4 MiB). Past it the rest of the
    /// text is ignored and [`TextIndex::capped`] is set.
    pub max_text_bytes: usize,
    /// Characters kept per line (default 512; longer lines are cut).
    pub max_line_chars: usize,
    /// Markers kept per recording (default 1000).
    pub max_markers: usize,
    /// Longest cast line (one event as JSON) that is parsed (default 1 MiB; the writer's
    /// events stay far below).
    pub max_cast_line: usize,
    /// Terminal output scanned per recording (default 64 MiB). A session that prints more is
    /// a bulk transfer, not typing: past it output is skipped unread (input and markers are
    /// still indexed) and [`TextIndex::output_budget_spent`] is set. This bounds the CPU one
    /// recording costs the indexer, which shares the machine with live sessions.
    pub max_output_bytes: u64,
}

impl Default for IndexLimits {
    fn default() -> Self {
        IndexLimits {
            max_text_bytes: 4 << 20,
            max_line_chars: 512,
            max_markers: 1000,
            max_cast_line: 1 << 20,
            max_output_bytes: 64 << 20,
        }
    }
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A line of terminal output.
    Output,
    /// A command: typed at a shell prompt (seen in the output, or in the recorded input), or
    /// the command line of an `exec` request.
    Command,
}

impl EntryKind {
    /// `"output"` or `"command"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Output => "output",
            EntryKind::Command => "command",
        }
    }
}

/// One searchable line.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    /// Seconds since the start of the recording when the line began.
    pub offset: f64,
    /// Output line or command.
    pub kind: EntryKind,
    /// The text, without terminal escapes, trimmed.
    pub text: String,
}

/// A marker event of the recording (`exec`, `exit`, `file-upload`…).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexMarker {
    /// Seconds since the start of the recording.
    pub offset: f64,
    /// The marker's kind (before the first `": "`).
    pub kind: String,
    /// The rest (may be empty).
    pub detail: String,
}

/// The extracted text of a recording.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextIndex {
    /// Lines, in the order they ended.
    pub entries: Vec<IndexEntry>,
    /// Markers, in order (at most [`IndexLimits::max_markers`]).
    pub markers: Vec<IndexMarker>,
    /// Bytes of text in `entries`.
    pub text_bytes: usize,
    /// The text budget was reached: later text is not indexed.
    pub capped: bool,
    /// Repeated lines left out.
    pub duplicates: u64,
    /// Cast lines that could not be parsed (or were too long) and were skipped.
    pub skipped_events: u64,
    /// Bytes of terminal output scanned.
    pub output_scanned: u64,
    /// The output scan budget was reached: later output is not indexed.
    pub output_budget_spent: bool,
}

/// Strips terminal escape sequences (CSI, OSC, DCS/PM/APC strings, charset selections) from a
/// character stream. Keeps state across calls, so a sequence may be split between events.
#[derive(Debug, Default, Clone)]
struct AnsiStripper {
    state: Ansi,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Ansi {
    #[default]
    Ground,
    /// After ESC.
    Esc,
    /// After ESC followed by an intermediate byte (`(`, `)`, `#`…): one more character.
    EscIntermediate,
    /// In `ESC [ … final`.
    Csi,
    /// In a string (`ESC ]`, `ESC P`, `ESC ^`, `ESC _`) until BEL or ST (`ESC \`).
    Str,
    /// ESC seen inside a string.
    StrEsc,
}

/// The control characters the stripper passes on outside escape sequences (the line builders interpret
/// them); it drops the others.
fn kept_control(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\x08' | '\t' | '\u{7f}' | '\x15' | '\x03')
}

impl AnsiStripper {
    /// Feeds one character; returns it when it is text (or a control character the caller
    /// interprets: `\n`, `\r`, `\b`, `\t`).
    fn feed(&mut self, c: char) -> Option<char> {
        match self.state {
            Ansi::Ground => match c {
                '\x1b' => {
                    self.state = Ansi::Esc;
                    None
                }
                '\u{9b}' => {
                    self.state = Ansi::Csi;
                    None
                }
                '\u{9d}' | '\u{90}' | '\u{9e}' | '\u{9f}' => {
                    self.state = Ansi::Str;
                    None
                }
                c if kept_control(c) => Some(c),
                c if c.is_control() => None,
                c => Some(c),
            },
            Ansi::Esc => {
                self.state = match c {
                    '[' => Ansi::Csi,
                    ']' | 'P' | '^' | '_' | 'X' => Ansi::Str,
                    ' '..='/' => Ansi::EscIntermediate,
                    '\x1b' => Ansi::Esc,
                    _ => Ansi::Ground,
                };
                None
            }
            Ansi::EscIntermediate => {
                self.state = Ansi::Ground;
                None
            }
            Ansi::Csi => {
                if ('@'..='~').contains(&c) {
                    self.state = Ansi::Ground;
                } else if c == '\x1b' {
                    self.state = Ansi::Esc;
                } else if !(' '..='?').contains(&c) && !c.is_control() {
                    // Not a CSI byte: a broken sequence; end it here.
                    self.state = Ansi::Ground;
                }
                None
            }
            Ansi::Str => {
                match c {
                    '\x07' | '\u{9c}' => self.state = Ansi::Ground,
                    '\x1b' => self.state = Ansi::StrEsc,
                    _ => {}
                }
                None
            }
            Ansi::StrEsc => {
                self.state = if c == '\\' { Ansi::Ground } else { Ansi::Str };
                None
            }
        }
    }
}

/// Builds lines from a character stream with a minimal terminal model: `\n` ends a line, a
/// lone `\r` returns to the start of the line (later text overwrites), backspace moves left.
#[derive(Debug, Default)]
struct LineBuilder {
    chars: Vec<char>,
    /// When each character was written.
    times: Vec<f64>,
    cursor: usize,
    started: Option<f64>,
    cr: bool,
}

/// A finished line: its start time, text, and when each character came.
type Line = (f64, String, Vec<f64>);

/// Feeds terminal output written at time `t` through the escape stripper into the line builder,
/// pushing the lines it ends to `lines`. Runs of printable ASCII outside escape sequences, written at
/// the end of the line, are appended at once rather than one character at a time.
fn scan_output(ansi: &mut AnsiStripper, line: &mut LineBuilder, data: &str, t: f64, max: usize, lines: &mut Vec<Line>) {
    let mut rest = data;
    while !rest.is_empty() {
        if ansi.state == Ansi::Ground {
            let n = rest.bytes().take_while(|b| (0x20..0x7f).contains(b)).count();
            if n > 0 && line.append_ascii(&rest[..n], t, max) {
                rest = &rest[n..];
                continue;
            }
            // C0 controls that the stripper drops (NUL, BEL…) never reach the line: skip a run at once.
            let n = rest
                .bytes()
                .take_while(|&b| b < 0x20 && b != 0x1b && !kept_control(char::from(b)))
                .count();
            if n > 0 {
                rest = &rest[n..];
                continue;
            }
        }
        let Some(c) = rest.chars().next() else { break };
        rest = &rest[c.len_utf8()..];
        if let Some(done) = ansi.feed(c).and_then(|c| line.feed(c, t, max)) {
            lines.push(done);
        }
    }
}

impl LineBuilder {
    /// Feeds a text character at time `t`; returns a finished line (and its start time).
    fn feed(&mut self, c: char, t: f64, max_chars: usize) -> Option<Line> {
        if self.cr && c != '\n' {
            self.cursor = 0;
        }
        self.cr = false;
        match c {
            '\n' => {
                let line: String = self.chars.drain(..).collect();
                let start = self.started.take().unwrap_or(t);
                self.cursor = 0;
                return Some((start, line, self.take_times()));
            }
            '\r' => self.cr = true,
            '\x08' => self.cursor = self.cursor.saturating_sub(1),
            c if c.is_control() => {}
            c => {
                let c = if c == '\t' { ' ' } else { c };
                if self.started.is_none() {
                    self.started = Some(t);
                }
                if self.cursor < self.chars.len() {
                    self.chars[self.cursor] = c;
                    self.times[self.cursor] = t;
                    self.cursor += 1;
                } else if self.chars.len() < max_chars {
                    self.chars.push(c);
                    self.times.push(t);
                    self.cursor = self.chars.len();
                }
            }
        }
        None
    }

    /// Appends printable ASCII written at time `t`, as [`feed`](Self::feed) would one character at a time;
    /// `false` (nothing done) unless the cursor is at the end of the line with no carriage return pending.
    fn append_ascii(&mut self, text: &str, t: f64, max_chars: usize) -> bool {
        if self.cr || self.cursor != self.chars.len() {
            return false;
        }
        if self.started.is_none() {
            self.started = Some(t);
        }
        let n = text.len().min(max_chars.saturating_sub(self.chars.len()));
        self.chars.extend(text.bytes().take(n).map(char::from));
        self.times.extend(std::iter::repeat_n(t, n));
        self.cursor = self.chars.len();
        true
    }

    /// The times of the line just ended, leaving an empty buffer of the same size for the next one.
    fn take_times(&mut self) -> Vec<f64> {
        let capacity = self.times.capacity();
        std::mem::replace(&mut self.times, Vec::with_capacity(capacity))
    }

    fn take(&mut self) -> Option<Line> {
        let start = self.started.take()?;
        let line: String = self.chars.drain(..).collect();
        self.cursor = 0;
        Some((start, line, self.take_times()))
    }
}

/// The command of a line that starts with a shell prompt (`$ `, `# `, `% `, `> ` after a
/// prompt prefix without spaces such as `user@host:~`, or a bracketed one such as
/// `[user@host dir]`), or `None`.
pub fn command_after_prompt(line: &str) -> Option<&str> {
    let mut best: Option<usize> = None;
    for sigil in ["$ ", "# ", "% ", "> "] {
        if let Some(i) = line.find(sigil) {
            if best.is_none_or(|b| i < b) {
                best = Some(i);
            }
        }
    }
    let i = best?;
    let prefix = &line[..i];
    if prefix.chars().count() > 80 {
        return None;
    }
    let ok = !prefix.contains(char::is_whitespace) || (prefix.starts_with('[') && prefix.ends_with(']'));
    if !ok {
        return None;
    }
    let cmd = line[i + 2..].trim();
    (!cmd.is_empty()).then_some(cmd)
}

/// The code of an event line `[TIME, "C", …]`, read without parsing the line.
fn event_code(line: &[u8]) -> Option<u8> {
    let head = &line[..line.len().min(48)];
    let comma = head.iter().position(|&b| b == b',')?;
    let rest = &head[comma + 1..];
    let q = rest.iter().position(|&b| b != b' ')?;
    match rest.get(q..q + 3)? {
        [b'"', c, b'"'] => Some(*c),
        _ => None,
    }
}

/// A line that is only a shell prompt (`user@host:~$`, `#`, `[a@b c]$`).
fn is_bare_prompt(line: &str) -> bool {
    let line = line.trim();
    let Some(prefix) = line.strip_suffix(['$', '#', '%', '>']) else {
        return false;
    };
    prefix.chars().count() <= 80
        && (!prefix.contains(char::is_whitespace) || (prefix.starts_with('[') && prefix.ends_with(']')))
}

/// Streams asciicast v2 text into a [`TextIndex`]. Write the cast text to it (in any pieces),
/// then call [`finish`](Indexer::finish).
#[derive(Debug)]
pub struct Indexer {
    limits: IndexLimits,
    pending: Vec<u8>,
    overlong: bool,
    header_seen: bool,
    ansi: AnsiStripper,
    out_line: LineBuilder,
    in_line: LineBuilder,
    in_esc: AnsiStripper,
    seen: HashSet<u64>,
    last_t: f64,
    index: TextIndex,
    /// Incomplete UTF-8 at the end of the last binary output / input event.
    carry_out: Vec<u8>,
    carry_in: Vec<u8>,
    text: String,
    /// Keystrokes of an RDP recording's client stream.
    rdp_keys: crate::rdp::InputText,
    /// An RDP server stream was seen: output is graphics, never indexed.
    rdp: bool,
}

impl Default for Indexer {
    fn default() -> Self {
        Self::new(IndexLimits::default())
    }
}

impl Indexer {
    /// An indexer with the given limits.
    pub fn new(limits: IndexLimits) -> Self {
        Indexer {
            limits,
            pending: Vec::new(),
            overlong: false,
            header_seen: false,
            ansi: AnsiStripper::default(),
            out_line: LineBuilder::default(),
            in_line: LineBuilder::default(),
            in_esc: AnsiStripper::default(),
            seen: HashSet::new(),
            last_t: 0.0,
            index: TextIndex::default(),
            carry_out: Vec::new(),
            carry_in: Vec::new(),
            text: String::new(),
            rdp_keys: Default::default(),
            rdp: false,
        }
    }

    /// Ends the stream (a last line without a newline is kept) and returns the index.
    pub fn finish(mut self) -> TextIndex {
        if !self.pending.is_empty() && !self.overlong {
            let line = std::mem::take(&mut self.pending);
            self.cast_line(&line);
        }
        if let Some((t, l, times)) = self.out_line.take() {
            self.output_line(t, &l, &times);
        }
        if let Some((t, l, _)) = self.in_line.take() {
            self.add(t, EntryKind::Command, &l);
        }
        self.index
    }

    fn cast_line(&mut self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if !self.header_seen {
            self.header_seen = true;
            if line.first() == Some(&b'{') {
                return;
            }
        }
        match event_code(line) {
            // The text budget is spent: only markers are still read (cheaply, without parsing).
            Some(b'o' | b'i') if self.index.capped => return,
            // The output scan budget is spent: output lines are skipped unparsed.
            Some(b'o') if !self.wants_output() => return,
            _ => {}
        }
        let Ok((t, code, data)) = serde_json::from_slice::<(f64, String, String)>(line) else {
            self.index.skipped_events += 1;
            return;
        };
        let code = match code.as_str() {
            "o" => b'o',
            "i" => b'i',
            "m" => b'm',
            _ => return,
        };
        self.event(t, code, &data);
    }

    /// Feeds one binary event of a version 2 recording: terminal bytes are decoded as a
    /// terminal would (UTF-8 carried across events, invalid bytes as U+FFFD).
    pub(crate) fn bin_event(&mut self, ev: &crate::format::BinEvent<'_>) {
        let t = ev.t_us as f64 / 1e6;
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        match ev.code {
            // RDP: the server stream is graphics (nothing to index); the client stream's keystrokes are input.
            crate::format::RDP_SERVER => self.rdp = true,
            crate::format::RDP_CLIENT => {
                let typed = self.rdp_keys.feed(ev.data);
                if !typed.is_empty() {
                    self.event(t, b'i', &typed);
                }
            }
            b'o' if !self.wants_output() => {}
            b'o' | b'i' => {
                let carry = if ev.code == b'o' {
                    &mut self.carry_out
                } else {
                    &mut self.carry_in
                };
                crate::format::decode_utf8_stream(carry, ev.data, &mut text);
                if !text.is_empty() {
                    self.event(t, ev.code, &text);
                }
            }
            code => self.event(t, code, &String::from_utf8_lossy(ev.data)),
        }
        self.text = text;
    }

    /// Whether output events are still read: the text budget and the output scan budget are
    /// not spent, and the recording is not of RDP (whose output stream is graphics). A caller may
    /// skip decoding output when this is false.
    pub fn wants_output(&self) -> bool {
        !self.index.capped && !self.index.output_budget_spent && !self.rdp
    }

    /// Feeds one event: `code` is `b'o'` (output), `b'i'` (input) or `b'm'` (marker
    /// `kind: detail`); other codes are ignored. `t` is seconds since the start.
    pub fn event(&mut self, t: f64, code: u8, data: &str) {
        let t = if t.is_finite() && t >= 0.0 { t } else { self.last_t };
        self.last_t = t;
        match code {
            b'o' => {
                if !self.wants_output() {
                    return;
                }
                self.index.output_scanned += data.len() as u64;
                if self.index.output_scanned > self.limits.max_output_bytes {
                    self.index.output_budget_spent = true;
                }
                let mut lines = Vec::new();
                scan_output(
                    &mut self.ansi,
                    &mut self.out_line,
                    data,
                    t,
                    self.limits.max_line_chars,
                    &mut lines,
                );
                for (start, l, times) in lines {
                    self.output_line(start, &l, &times);
                }
            }
            b'i' => {
                for c in data.chars() {
                    let Some(c) = self.in_esc.feed(c) else { continue };
                    let c = match c {
                        '\x15' | '\x03' => {
                            // Ctrl-U / Ctrl-C: the line is abandoned.
                            self.in_line.take();
                            continue;
                        }
                        '\r' => '\n',
                        '\u{7f}' => '\x08',
                        c => c,
                    };
                    if let Some((start, l, _)) = self.in_line.feed(c, t, self.limits.max_line_chars) {
                        self.add(start, EntryKind::Command, &l);
                    }
                }
            }
            b'm' => {
                let (kind, detail) = data.split_once(": ").unwrap_or((data, ""));
                if kind == "exec" {
                    self.add(t, EntryKind::Command, detail);
                }
                // RDP clipboard formats and drive paths: searchable like output.
                if kind == "clipboard" || kind == "drive" {
                    self.add(t, EntryKind::Output, &format!("{kind}: {detail}"));
                }
                if self.index.markers.len() < self.limits.max_markers {
                    let cut: String = detail.chars().take(self.limits.max_line_chars).collect();
                    self.index.markers.push(IndexMarker {
                        offset: t,
                        kind: kind.chars().take(64).collect(),
                        detail: cut,
                    });
                }
            }
            _ => {}
        }
    }

    /// A finished output line; a command after a prompt gets the time its first character
    /// was echoed (when it was typed), not the prompt's.
    fn output_line(&mut self, t: f64, line: &str, times: &[f64]) {
        match command_after_prompt(line) {
            Some(cmd) => {
                let at = cmd.as_ptr() as usize - line.as_ptr() as usize;
                let idx = line[..at].chars().count();
                let typed = times.get(idx).copied().unwrap_or(t);
                self.add(typed, EntryKind::Command, cmd)
            }
            None if is_bare_prompt(line) => {}
            None => self.add(t, EntryKind::Output, line),
        }
    }

    fn add(&mut self, t: f64, kind: EntryKind, text: &str) {
        let text = text.trim();
        if text.is_empty() || self.index.capped {
            return;
        }
        let text: String = text.chars().take(self.limits.max_line_chars).collect();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (kind.as_str(), &text).hash(&mut h);
        if !self.seen.insert(h.finish()) {
            self.index.duplicates += 1;
            return;
        }
        if self.index.text_bytes + text.len() > self.limits.max_text_bytes {
            self.index.capped = true;
            return;
        }
        self.index.text_bytes += text.len();
        self.index.entries.push(IndexEntry { offset: t, kind, text });
    }
}

impl Write for Indexer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (piece, after) = rest.split_at(nl);
            if !self.overlong {
                if self.pending.is_empty() {
                    self.cast_line(piece);
                } else {
                    let mut line = std::mem::take(&mut self.pending);
                    line.extend_from_slice(piece);
                    self.cast_line(&line);
                }
            } else {
                self.index.skipped_events += 1;
            }
            self.pending.clear();
            self.overlong = false;
            rest = &after[1..];
        }
        if !self.overlong {
            if self.pending.len() + rest.len() > self.limits.max_cast_line {
                self.pending = Vec::new();
                self.overlong = true;
            } else {
                self.pending.extend_from_slice(rest);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Indexes a whole cast text held in memory (tests, small recordings).
pub fn index_cast(cast: &[u8], limits: IndexLimits) -> TextIndex {
    let mut ix = Indexer::new(limits);
    let _ = ix.write_all(cast);
    ix.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ascii_fast_path_builds_the_same_lines_as_one_character_at_a_time() {
        let atoms = [
            "ls -l",
            " ",
            "\r",
            "\n",
            "\r\n",
            "\x08",
            "\x00\x00\x07",
            "\x03",
            "\x15",
            "\x01\x1b[0m",
            "\t",
            "\x1b[1m",
            "\x1b]0;title\x07",
            "\x1b(B",
            "é",
            "€x",
            "\x7f",
            "\x00",
            "$ ",
            "abcdefghij",
            "\x1b[",
            "2K",
            "\x1b",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..300 {
            let mut text = String::new();
            for _ in 0..(round % 40 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push_str(atoms[(seed % atoms.len() as u64) as usize]);
            }
            let max = 1 + round % 12;
            // One character at a time, without the fast path.
            let (mut ansi, mut line, mut want) = (AnsiStripper::default(), LineBuilder::default(), Vec::new());
            for (i, c) in text.chars().enumerate() {
                if let Some(done) = ansi.feed(c).and_then(|c| line.feed(c, i as f64, max)) {
                    want.push(done);
                }
            }
            want.extend(line.take());
            // The same text in pieces (split at character boundaries), through scan_output.
            let (mut ansi, mut line, mut got) = (AnsiStripper::default(), LineBuilder::default(), Vec::new());
            let mut at = 0;
            let chars: Vec<(usize, char)> = text.char_indices().collect();
            let mut k = 0;
            while k < chars.len() {
                let n = 1 + (k * 7 + round) % 5;
                let end = chars.get(k + n).map_or(text.len(), |&(b, _)| b);
                // Each piece gets the time of its first character: compare text and starts only.
                scan_output(&mut ansi, &mut line, &text[at..end], k as f64, max, &mut got);
                at = end;
                k += n;
            }
            got.extend(line.take());
            let texts = |v: &[Line]| {
                v.iter()
                    .map(|(_, l, times)| (l.clone(), times.len()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(texts(&got), texts(&want), "{text:?} max {max}");
        }
    }

    const HEADER: &str = r#"{"version":2,"width":80,"height":24,"timestamp":1,"postern":{"session_id":"s","user":"u","target":"t","protocol":"ssh","input_recorded":true,"recorder":"x"}}"#;

    fn cast(events: &[(f64, &str, &str)]) -> Vec<u8> {
        let mut s = format!("{HEADER}\n");
        for (t, c, d) in events {
            s.push_str(&serde_json::to_string(&(format!("{t:.6}").parse::<f64>().unwrap(), c, d)).unwrap());
            s.push('\n');
        }
        s.into_bytes()
    }

    fn texts(ix: &TextIndex, kind: EntryKind) -> Vec<&str> {
        ix.entries
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.text.as_str())
            .collect()
    }

    #[test]
    fn strips_escapes_and_keeps_offsets() {
        let c = cast(&[
            (0.5, "o", "\x1b[1;32mgreen\x1b[0m text\r\n"),
            (1.0, "o", "\x1b]0;title\x07half "),
            (1.25, "o", "line\x1b[K\r\n\x1b(Bdone\n"),
            (2.0, "o", "progress 10%\rprogress 99%\r\n"),
        ]);
        let ix = index_cast(&c, IndexLimits::default());
        assert_eq!(
            texts(&ix, EntryKind::Output),
            ["green text", "half line", "done", "progress 99%"]
        );
        assert_eq!(ix.entries[0].offset, 0.5);
        assert_eq!(
            ix.entries[1].offset, 1.0,
            "a line starts where its first character came"
        );
        assert_eq!(ix.entries[2].offset, 1.25);
        assert_eq!(ix.skipped_events, 0);
    }

    #[test]
    fn escape_split_across_events_and_c1_controls() {
        let c = cast(&[(0.0, "o", "a\x1b["), (0.1, "o", "31mb\u{9b}0mc\x1bP$q\x1b\\d\n")]);
        let ix = index_cast(&c, IndexLimits::default());
        assert_eq!(texts(&ix, EntryKind::Output), ["abcd"]);
    }

    #[test]
    fn commands_from_prompts_input_and_exec() {
        let c = cast(&[
            (0.0, "o", "deploy@web:~$ "),
            (1.0, "o", "systemctl restart nginx\r\n"),
            (1.5, "o", "[root@db tmp]# cat /etc/shadow\r\n"),
            (2.0, "o", "total cost: 5 $ and # 3\r\n"),
            (3.0, "i", "lsx\x7f -la\r"),
            (4.0, "i", "rm -rf /\x15echo safe\r"),
            (5.0, "i", "\x1b[Aup\r"),
            (6.0, "m", "exec: tar czf /tmp/x.tgz /srv"),
            (7.0, "m", "exit-status: 0"),
        ]);
        let ix = index_cast(&c, IndexLimits::default());
        assert_eq!(
            texts(&ix, EntryKind::Command),
            [
                "systemctl restart nginx",
                "cat /etc/shadow",
                "ls -la",
                "echo safe",
                "up",
                "tar czf /tmp/x.tgz /srv"
            ]
        );
        assert_eq!(texts(&ix, EntryKind::Output), ["total cost: 5 $ and # 3"]);
        let cmd = ix.entries.iter().find(|e| e.text == "systemctl restart nginx").unwrap();
        assert_eq!(cmd.offset, 1.0, "when the command was typed, not when the prompt came");
        let cmd = ix.entries.iter().find(|e| e.text == "cat /etc/shadow").unwrap();
        assert_eq!(cmd.offset, 1.5);
        assert_eq!(ix.markers.len(), 2);
        assert_eq!(ix.markers[0].kind, "exec");
        assert_eq!(ix.markers[1].detail, "0");
        assert_eq!(ix.markers[1].offset, 7.0);
    }

    #[test]
    fn event_codes_without_parsing() {
        assert_eq!(event_code(b"[1.000000, \"o\", \"x\"]"), Some(b'o'));
        assert_eq!(event_code(b"[1.5,\"m\",\"exec: x\"]"), Some(b'm'));
        assert_eq!(event_code(b"[1.5, \"oo\", \"x\"]"), None);
        assert_eq!(event_code(b"[1.5"), None);
        assert_eq!(event_code(b""), None);
    }

    #[test]
    fn after_the_cap_markers_are_still_collected() {
        let mut events = vec![(0.0, "o", "first line\r\n".to_string())];
        for i in 0..100 {
            events.push((1.0 + i as f64, "o", format!("filler {i}\r\n")));
        }
        events.push((200.0, "m", "exec: late command".to_string()));
        let ev: Vec<(f64, &str, &str)> = events.iter().map(|(t, c, d)| (*t, *c, d.as_str())).collect();
        let ix = index_cast(
            &cast(&ev),
            IndexLimits {
                max_text_bytes: 30,
                ..IndexLimits::default()
            },
        );
        assert!(ix.capped);
        assert_eq!(ix.markers.len(), 1);
        assert_eq!(ix.markers[0].detail, "late command");
    }

    #[test]
    fn prompt_detection() {
        assert_eq!(command_after_prompt("$ ls"), Some("ls"));
        assert_eq!(command_after_prompt("user@h:/x# id"), Some("id"));
        assert_eq!(command_after_prompt("[a@b c]$ make"), Some("make"));
        assert_eq!(command_after_prompt("total 5 $ x"), None);
        assert_eq!(command_after_prompt("$ "), None);
        assert_eq!(command_after_prompt("plain"), None);
    }

    #[test]
    fn dedupes_caps_and_survives_garbage() {
        let mut events = Vec::new();
        for i in 0..1000 {
            events.push((i as f64, "o", "same line\r\n".to_string()));
        }
        for i in 0..1000 {
            events.push((1000.0 + i as f64, "o", format!("line number {i:04}\r\n")));
        }
        let ev: Vec<(f64, &str, &str)> = events.iter().map(|(t, c, d)| (*t, *c, d.as_str())).collect();
        let mut c = cast(&ev);
        c.extend_from_slice(b"not json\n[1, \"x\"]\n");
        let limits = IndexLimits {
            max_text_bytes: 100 * 16,
            ..IndexLimits::default()
        };
        let ix = index_cast(&c, limits);
        assert_eq!(ix.duplicates, 999);
        assert!(ix.capped);
        assert!(ix.text_bytes <= 100 * 16);
        assert_eq!(ix.entries[0].text, "same line");
        assert_eq!(ix.entries.len(), 1 + (1600 - 9) / 16);
        assert_eq!(ix.skipped_events, 2);
    }

    #[test]
    fn long_lines_are_cut_and_overlong_events_skipped_with_bounded_memory() {
        let big = "x".repeat(10_000);
        let c = cast(&[(0.0, "o", &big), (0.1, "o", "\nafter\n")]);
        let ix = index_cast(&c, IndexLimits::default());
        assert_eq!(ix.entries[0].text.len(), 512);
        assert_eq!(ix.entries[1].text, "after");
        let limits = IndexLimits {
            max_cast_line: 1000,
            ..IndexLimits::default()
        };
        let mut ix = Indexer::new(limits);
        ix.write_all(&cast(&[(0.0, "o", "ok\n")])).unwrap();
        // One huge line fed in small pieces never grows the buffer past the limit.
        ix.write_all(b"[0.5, \"o\", \"").unwrap();
        for _ in 0..100 {
            ix.write_all(&[b'y'; 100]).unwrap();
            assert!(ix.pending.len() <= 1000);
        }
        ix.write_all(b"\"]\n[1.0, \"o\", \"end\\n\"]\n").unwrap();
        let ix = ix.finish();
        assert_eq!(texts(&ix, EntryKind::Output), ["ok", "end"]);
        assert_eq!(ix.skipped_events, 1);
    }

    #[test]
    fn works_on_a_real_recording() {
        use crate::{export_cast, RecorderConfig, Recording, SessionMeta, SigningKey};
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut cfg = RecorderConfig::new(dir.path(), key);
        cfg.record_input = true;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sealed = rt.block_on(async {
            let rec = Recording::start(
                &cfg,
                SessionMeta {
                    session_id: "ix".into(),
                    user: "u".into(),
                    target: "t".into(),
                    protocol: "ssh".into(),
                    width: 80,
                    height: 24,
                    ..Default::default()
                },
            )
            .unwrap();
            rec.output(b"$ ");
            rec.input(b"uptime\r");
            rec.output(b"uptime\r\n 10:00 up 3 days\r\n$ ");
            rec.marker("exec", "whoami");
            rec.finish().await.unwrap()
        });
        let mut ix = Indexer::default();
        export_cast(&sealed.path, &mut ix).unwrap();
        let ix = ix.finish();
        assert_eq!(texts(&ix, EntryKind::Command), ["uptime", "whoami"]);
        assert_eq!(texts(&ix, EntryKind::Output), ["10:00 up 3 days"]);
        assert_eq!(ix.duplicates, 1, "the typed and the echoed command count once");
        // Straight from the binary events: the same index as through the cast text.
        let mut direct = Indexer::default();
        crate::index_recording(&sealed.path, &mut direct).unwrap();
        assert_eq!(direct.finish(), ix);
    }

    #[test]
    fn output_past_the_scan_budget_is_skipped_but_input_and_markers_are_kept() {
        let limits = IndexLimits {
            max_output_bytes: 1024,
            ..IndexLimits::default()
        };
        let mut ix = Indexer::new(limits);
        ix.event(0.5, b'o', "first line\r\n");
        ix.event(1.0, b'o', &"x".repeat(4096));
        ix.event(1.5, b'o', "\r\nlate output line\r\n");
        ix.event(2.0, b'i', "typed later\r");
        ix.event(2.5, b'm', "exit: 0");
        let ix = ix.finish();
        assert!(ix.output_budget_spent);
        assert_eq!(
            ix.output_scanned,
            12 + 4096,
            "output after the budget is not even scanned"
        );
        let out = texts(&ix, EntryKind::Output);
        assert_eq!(out[0], "first line");
        assert!(!out.contains(&"late output line"), "{out:?}");
        assert_eq!(texts(&ix, EntryKind::Command), ["typed later"]);
        assert_eq!(ix.markers.len(), 1);
    }

    #[test]
    fn binary_events_split_inside_a_character_are_decoded_whole() {
        use crate::format::BinEvent;
        let bytes = "split é\r\n".as_bytes();
        let mut ix = Indexer::default();
        for (t_us, data) in [(1, &bytes[..7]), (2, &bytes[7..])] {
            ix.bin_event(&BinEvent { t_us, code: b'o', data });
        }
        assert_eq!(texts(&ix.finish(), EntryKind::Output), ["split é"]);
    }
}
