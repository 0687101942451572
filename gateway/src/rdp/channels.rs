//! Virtual-channel policy in the RDP relay: the clipboard (`cliprdr`) and drive
//! redirection (`rdpdr`) are off unless the resource allows them, and their
//! first use in a session is audited either way.
//!
//! After the connection sequence the relay splits each direction into PDUs
//! (slow-path TPKT frames and fast-path PDUs, by their length headers only).
//! Graphics and input travel fast-path and pass untouched; a slow-path MCS Send
//! Data PDU on a blocked channel is dropped, so the channel never initializes on
//! either side (the target's capabilities never reach the client and the
//! client's never reach the target).

use ironrdp_pdu::mcs::McsMessage;
use ironrdp_pdu::x224::X224;

use super::pdu;

/// The channels the policy governs: (MCS name, what the audit calls it).
const GOVERNED: [(&str, &str); 2] = [("cliprdr", "clipboard"), ("rdpdr", "drive redirection")];

/// The largest PDU the framer accepts (TPKT lengths are 16-bit; fast-path 15-bit).
const MAX_PDU: usize = 64 * 1024;

#[derive(Debug)]
struct Governed {
    id: u16,
    what: &'static str,
    allowed: bool,
    reported: bool,
}

/// At most this many metadata lines (clipboard formats, drive paths) per session go to the recording.
const MAX_METADATA: usize = 1000;

/// Which static channels are blocked, and which first uses were already reported.
#[derive(Debug, Default)]
pub(crate) struct ChannelPolicy {
    governed: Vec<Governed>,
    /// Metadata lines already recorded (each once per session).
    seen: std::collections::HashSet<String>,
    /// Whether each side (target, client) announced long clipboard format names in its capabilities.
    clip_long: [bool; 2],
}

/// What to do with one PDU.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Relay it.
    Pass,
    /// Relay it; first use of an allowed governed channel (audit this line).
    PassFirst(String),
    /// Drop it.
    Drop,
    /// Drop it; first use of a blocked channel (audit this line).
    DropFirst(String),
}

impl ChannelPolicy {
    /// `names[i]` is the client's name of static channel `ids[i]`.
    pub(crate) fn new(names: &[String], ids: &[u16], allow_clipboard: bool, allow_drive: bool) -> Self {
        let governed = names
            .iter()
            .zip(ids)
            .filter_map(|(name, &id)| {
                let (_, what) = GOVERNED.iter().find(|(n, _)| name.eq_ignore_ascii_case(n))?;
                let allowed = if *what == "clipboard" {
                    allow_clipboard
                } else {
                    allow_drive
                };
                Some(Governed {
                    id,
                    what,
                    allowed,
                    reported: false,
                })
            })
            .collect();
        ChannelPolicy {
            governed,
            seen: Default::default(),
            clip_long: [false; 2],
        }
    }

    /// What an allowed clipboard or drive PDU says that is worth a recording marker: (`clipboard`, the formats
    /// offered) or (`drive`, a shared drive, a file opened). Each line at most once per session; `None` for
    /// everything else (content is never put in a marker).
    pub(crate) fn metadata(&mut self, pdu: &[u8], from_client: bool) -> Option<(&'static str, String)> {
        if self.seen.len() >= MAX_METADATA {
            return None;
        }
        let (channel, data) = slow_path_payload(pdu)?;
        let g = self.governed.iter().find(|g| g.id == channel && g.allowed)?;
        // Channel PDU header: length, flags; only whole (first and last) chunks are read.
        let flags = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?);
        if flags & 0x3 != 0x3 {
            return None;
        }
        let body = data.get(8..)?;
        let side = if from_client { "the client" } else { "the target" };
        let line = if g.what == "clipboard" {
            if let Some(long) = clipboard_long_names(body) {
                self.clip_long[usize::from(from_client)] = long;
                return None;
            }
            // Long format names are used when both sides announced them (MS-RDPECLIP 1.7).
            let long = self.clip_long == [true, true];
            (
                "clipboard",
                clipboard_formats(body, long).map(|f| format!("{side} offers {f}"))?,
            )
        } else {
            ("drive", drive_event(body)?)
        };
        self.seen.insert(format!("{}\0{}", line.0, line.1)).then_some(line)
    }

    /// True when the client asked for no governed channel: the relay can copy bytes blindly.
    pub(crate) fn is_empty(&self) -> bool {
        self.governed.is_empty()
    }

    /// The verdict on one whole PDU; `from_client` names the direction.
    pub(crate) fn judge(&mut self, pdu: &[u8], from_client: bool) -> Verdict {
        let Some(channel) = slow_path_channel(pdu) else {
            return Verdict::Pass;
        };
        let Some(g) = self.governed.iter_mut().find(|g| g.id == channel) else {
            return Verdict::Pass;
        };
        let first = !std::mem::replace(&mut g.reported, true);
        let side = if from_client { "the client" } else { "the target" };
        match (g.allowed, first) {
            (true, false) => Verdict::Pass,
            (true, true) => Verdict::PassFirst(format!(
                "{} used (first data from {side}); allowed on this resource",
                g.what
            )),
            (false, false) => Verdict::Drop,
            (false, true) => Verdict::DropFirst(format!(
                "{} blocked (first data from {side} dropped); not allowed on this resource",
                g.what
            )),
        }
    }
}

/// The MCS channel of a slow-path Send Data PDU; `None` for anything else.
fn slow_path_channel(pdu: &[u8]) -> Option<u16> {
    if pdu.first() != Some(&3) {
        return None;
    }
    match pdu::parse::<X224<McsMessage<'_>>>(pdu, "MCS PDU").ok()?.0 {
        McsMessage::SendDataRequest(sd) => Some(sd.channel_id),
        McsMessage::SendDataIndication(sd) => Some(sd.channel_id),
        _ => None,
    }
}

/// Whether a PDU from the client is what the recording keeps as its input: fast-path PDUs (input events) and
/// slow-path PDUs on the I/O channel (input events, Confirm Active, synchronization); not virtual-channel data
/// (clipboard contents, files on redirected drives, sound), which the recording does not hold.
pub(crate) fn is_input_pdu(pdu: &[u8]) -> bool {
    match pdu.first() {
        Some(&3) => slow_path_channel(pdu) == Some(pdu::IO_CHANNEL),
        Some(&b) => b & 0x03 == 0,
        None => false,
    }
}

/// The MCS channel and user data of a slow-path Send Data PDU.
fn slow_path_payload(pdu: &[u8]) -> Option<(u16, Vec<u8>)> {
    if pdu.first() != Some(&3) {
        return None;
    }
    match pdu::parse::<X224<McsMessage<'_>>>(pdu, "MCS PDU").ok()?.0 {
        McsMessage::SendDataRequest(sd) => Some((sd.channel_id, sd.user_data.into_owned())),
        McsMessage::SendDataIndication(sd) => Some((sd.channel_id, sd.user_data.into_owned())),
        _ => None,
    }
}

/// A UTF-16LE string up to its NUL (or the end).
fn utf16z(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// For a Clipboard Capabilities PDU (MS-RDPECLIP 2.2.2.1): whether its general capability set has
/// CB_USE_LONG_FORMAT_NAMES. `None` for other PDUs.
fn clipboard_long_names(body: &[u8]) -> Option<bool> {
    if body.get(0..2)? != [7, 0] {
        return None; // CB_CLIP_CAPS
    }
    // Header (8), cCapabilitiesSets, pad, then the general set: type 1, length, version, generalFlags.
    let flags = body.get(20..24).map(|f| u32::from_le_bytes([f[0], f[1], f[2], f[3]]));
    Some(body.get(12..14) == Some(&[1, 0]) && flags.is_some_and(|f| f & 0x2 != 0))
}

/// The formats of a clipboard Format List PDU (MS-RDPECLIP 2.2.3.1), with long or short (32-byte) names;
/// standard formats by their usual names: `text, unicode text, FileGroupDescriptorW`.
fn clipboard_formats(body: &[u8], long_names: bool) -> Option<String> {
    let msg_type = u16::from_le_bytes(body.get(0..2)?.try_into().ok()?);
    if msg_type != 2 {
        return None; // CB_FORMAT_LIST
    }
    let len = u32::from_le_bytes(body.get(4..8)?.try_into().ok()?) as usize;
    let list = body.get(8..8usize.checked_add(len)?)?;
    let standard = |id: u32| -> Option<&'static str> {
        Some(match id {
            0 => "raw",
            1 => "text",
            2 => "bitmap",
            7 => "OEM text",
            8 => "DIB",
            13 => "unicode text",
            15 => "file list",
            16 => "locale",
            17 => "DIBv5",
            _ => return None,
        })
    };
    let mut names = Vec::new();
    let mut name_of = |id: u32, name: String| {
        let n = if name.is_empty() {
            standard(id)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("format {id}"))
        } else {
            name
        };
        if !names.contains(&n) {
            names.push(n);
        }
    };
    if long_names {
        // Each: id, then a NUL-terminated UTF-16 name.
        let mut pos = 0;
        while pos < list.len() {
            let id = u32::from_le_bytes(list.get(pos..pos + 4)?.try_into().ok()?);
            let mut end = pos + 4;
            while list.get(end..end + 2)? != [0, 0] {
                end += 2;
            }
            name_of(id, utf16z(&list[pos + 4..end + 2]));
            pos = end + 2;
        }
    } else {
        if list.len() % 36 != 0 {
            return None;
        }
        for e in list.chunks_exact(36) {
            let id = u32::from_le_bytes(e[..4].try_into().ok()?);
            name_of(id, utf16z(&e[4..]));
        }
    }
    (!names.is_empty()).then(|| names.join(", "))
}

/// What a drive redirection PDU (MS-RDPEFS) says: the drives the client shares (Device List Announce) and the
/// files the target opens on them (Device I/O Request, IRP_MJ_CREATE).
fn drive_event(body: &[u8]) -> Option<String> {
    let u32_at = |o: usize| -> Option<u32> { Some(u32::from_le_bytes(body.get(o..o + 4)?.try_into().ok()?)) };
    let component = u16::from_le_bytes(body.get(0..2)?.try_into().ok()?);
    let packet = u16::from_le_bytes(body.get(2..4)?.try_into().ok()?);
    if component != 0x4472 {
        return None; // RDPDR_CTYP_CORE
    }
    match packet {
        // PAKID_CORE_DEVICELIST_ANNOUNCE: the drives (type 8) the client shares.
        0x4441 => {
            let count = u32_at(4)?;
            let mut pos = 8;
            let mut drives = Vec::new();
            for _ in 0..count.min(64) {
                let kind = u32_at(pos)?;
                let name: String = body
                    .get(pos + 8..pos + 16)?
                    .iter()
                    .take_while(|&&b| b != 0)
                    .map(|&b| char::from(b))
                    .collect();
                let data_len = u32_at(pos + 16)? as usize;
                if kind == 8 {
                    drives.push(name);
                }
                pos = pos.checked_add(20 + data_len)?;
            }
            (!drives.is_empty()).then(|| format!("the client shares {}", drives.join(", ")))
        }
        // PAKID_CORE_DEVICE_IOREQUEST with IRP_MJ_CREATE: a path opened on a shared drive.
        0x4952 => {
            if u32_at(16)? != 0 {
                return None;
            }
            let desired = u32_at(24)?;
            let path_len = u32_at(52)? as usize;
            let path = utf16z(body.get(56..56usize.checked_add(path_len)?)?);
            // GENERIC_WRITE, FILE_WRITE_DATA, FILE_APPEND_DATA, DELETE
            let write = desired & (0x4000_0000 | 0x2 | 0x4 | 0x1_0000) != 0;
            let path = if path.is_empty() { "\\".to_owned() } else { path };
            Some(format!("open {path}{}", if write { " (write)" } else { "" }))
        }
        _ => None,
    }
}

/// Splits a byte stream into whole RDP PDUs, holding at most one partial PDU.
#[derive(Debug, Default)]
pub(crate) struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// Appends bytes read from the socket.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole PDU, `Ok(None)` when more bytes are needed, or an error for a stream that is
    /// not RDP.
    pub(crate) fn next_pdu(&mut self) -> Result<Option<Vec<u8>>, String> {
        let Some(len) = pdu_len(&self.buf)? else {
            return Ok(None);
        };
        if self.buf.len() < len {
            return Ok(None);
        }
        let rest = self.buf.split_off(len);
        Ok(Some(std::mem::replace(&mut self.buf, rest)))
    }

    /// The bytes held (a partial PDU), leaving the framer empty.
    pub(crate) fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// Follows the PDU boundaries of a byte stream relayed as is (by the length headers, without buffering it), so
/// that the gateway knows when it may insert a PDU of its own.
#[derive(Debug, Default)]
pub(crate) struct Boundary {
    /// Bytes left of the current PDU.
    left: usize,
    /// The start of a PDU header, until its length is known.
    head: [u8; 4],
    have: usize,
    /// The stream was not RDP: no boundary is known any more.
    lost: bool,
}

impl Boundary {
    /// The stream went on with `data`.
    pub(crate) fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.lost {
            if self.left > 0 {
                let take = self.left.min(data.len());
                self.left -= take;
                data = &data[take..];
                continue;
            }
            self.head[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            match pdu_len(&self.head[..self.have]) {
                Ok(Some(len)) => {
                    self.left = len - self.have;
                    self.have = 0;
                }
                Ok(None) if self.have < self.head.len() => {}
                _ => self.lost = true,
            }
        }
    }

    /// Whether the stream is between two PDUs.
    pub(crate) fn at_boundary(&self) -> bool {
        self.left == 0 && self.have == 0 && !self.lost
    }
}

/// The length of the PDU at the start of `b`, from its header (TPKT or fast-path, read by IronRDP).
fn pdu_len(b: &[u8]) -> Result<Option<usize>, String> {
    let Some(&first) = b.first() else { return Ok(None) };
    // TPKT starts with its version (3), fast-path with action 0: anything else is refused at its first byte.
    let info = match ironrdp_pdu::find_size(b) {
        _ if first != 3 && first & 0x03 != 0 => Err(format!("action {:#04x}", first & 0x03)),
        Ok(Some(info)) => Ok(info),
        Ok(None) => return Ok(None),
        Err(e) => Err(e.to_string()),
    }
    .map_err(|e| format!("not an RDP PDU (first byte {first:#04x}): {e}"))?;
    let tpkt = info.action == ironrdp_pdu::Action::X224;
    let len = info.length;
    if !(2..=MAX_PDU).contains(&len) || (tpkt && len < 4) {
        return Err(format!("RDP PDU length {len} out of range"));
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_data(channel: u16, to_client: bool) -> Vec<u8> {
        use ironrdp_pdu::mcs::{SendDataIndication, SendDataRequest};
        use std::borrow::Cow;
        let data = Cow::Borrowed(&b"\x01\x02\x03\x04"[..]);
        if to_client {
            pdu::encode(&X224(SendDataIndication {
                initiator_id: 1002,
                channel_id: channel,
                user_data: data,
            }))
            .unwrap()
        } else {
            pdu::encode(&X224(SendDataRequest {
                initiator_id: 1007,
                channel_id: channel,
                user_data: data,
            }))
            .unwrap()
        }
    }

    #[test]
    fn clipboard_and_drive_are_blocked_unless_allowed_and_first_use_is_reported() {
        let names = ["rdpsnd", "CLIPRDR", "rdpdr", "drdynvc"].map(String::from);
        let ids = [1004, 1005, 1006, 1007];
        let mut p = ChannelPolicy::new(&names, &ids, false, true);
        assert!(!p.is_empty());
        assert_eq!(
            p.judge(&send_data(1004, true), false),
            Verdict::Pass,
            "sound is not governed"
        );
        assert_eq!(
            p.judge(&send_data(1003, false), true),
            Verdict::Pass,
            "the I/O channel passes"
        );
        assert!(
            matches!(p.judge(&send_data(1005, true), false), Verdict::DropFirst(s) if s.contains("clipboard blocked"))
        );
        assert_eq!(p.judge(&send_data(1005, false), true), Verdict::Drop);
        assert!(
            matches!(p.judge(&send_data(1006, false), true), Verdict::PassFirst(s) if s.contains("drive redirection used"))
        );
        assert_eq!(p.judge(&send_data(1006, true), false), Verdict::Pass);
        // Fast-path PDUs (graphics, input) are never inspected further.
        assert_eq!(p.judge(&[0x00, 0x05, 1, 2, 3], true), Verdict::Pass);
        assert!(ChannelPolicy::new(&names[..1], &ids[..1], false, false).is_empty());
    }

    /// A whole (first and last) virtual channel chunk on `channel` holding `body`.
    fn channel_pdu(channel: u16, to_client: bool, body: &[u8]) -> Vec<u8> {
        use ironrdp_pdu::mcs::{SendDataIndication, SendDataRequest};
        use std::borrow::Cow;
        let mut data = (body.len() as u32).to_le_bytes().to_vec();
        data.extend_from_slice(&3u32.to_le_bytes());
        data.extend_from_slice(body);
        if to_client {
            pdu::encode(&X224(SendDataIndication {
                initiator_id: 1002,
                channel_id: channel,
                user_data: Cow::Owned(data),
            }))
            .unwrap()
        } else {
            pdu::encode(&X224(SendDataRequest {
                initiator_id: 1007,
                channel_id: channel,
                user_data: Cow::Owned(data),
            }))
            .unwrap()
        }
    }

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().chain([0]).flat_map(|u| u.to_le_bytes()).collect()
    }

    #[test]
    fn clipboard_formats_and_drive_paths_become_metadata_when_allowed() {
        let names = ["cliprdr", "rdpdr"].map(String::from);
        let ids = [1004, 1005];
        // A long-names Format List: unicode text and FileGroupDescriptorW.
        let mut list = 13u32.to_le_bytes().to_vec();
        list.extend(utf16(""));
        list.extend(49_000u32.to_le_bytes());
        list.extend(utf16("FileGroupDescriptorW"));
        let mut fl = vec![2, 0, 0, 0];
        fl.extend((list.len() as u32).to_le_bytes());
        fl.extend(&list);
        // A short-names Format List (32-byte names).
        let mut short = 1u32.to_le_bytes().to_vec();
        short.extend([0u8; 32]);
        let mut sfl = vec![2, 0, 0, 0];
        sfl.extend((short.len() as u32).to_le_bytes());
        sfl.extend(&short);
        // A drive announce and an IRP_MJ_CREATE for writing.
        let mut announce = vec![0x72, 0x44, 0x41, 0x44];
        announce.extend(1u32.to_le_bytes());
        announce.extend(8u32.to_le_bytes());
        announce.extend(1u32.to_le_bytes());
        announce.extend(b"pshare\0\0");
        announce.extend(0u32.to_le_bytes());
        let path = utf16("\\docs\\secret.txt");
        let mut create = vec![0x72, 0x44, 0x52, 0x49];
        create.extend([1u32, 0, 7, 0, 0].iter().flat_map(|v| v.to_le_bytes()));
        create.extend(0x4000_0000u32.to_le_bytes()); // GENERIC_WRITE
        create.extend(0u64.to_le_bytes());
        create.extend([0u32, 0, 2, 0].iter().flat_map(|v| v.to_le_bytes()));
        create.extend((path.len() as u32).to_le_bytes());
        create.extend(&path);

        let mut p = ChannelPolicy::new(&names, &ids, true, true);
        // Both sides announce long format names.
        let caps = [
            7u8, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 1, 0, 12, 0, 2, 0, 0, 0, 2, 0, 0, 0,
        ];
        assert_eq!(p.metadata(&channel_pdu(1004, true, &caps), false), None);
        // Before the client's capabilities: short names, which this list is not.
        assert_eq!(p.metadata(&channel_pdu(1004, false, &fl), true), None);
        assert_eq!(p.metadata(&channel_pdu(1004, false, &caps), true), None);
        assert_eq!(
            p.metadata(&channel_pdu(1004, false, &fl), true),
            Some((
                "clipboard",
                "the client offers unicode text, FileGroupDescriptorW".into()
            ))
        );
        assert_eq!(
            p.metadata(&channel_pdu(1004, false, &fl), true),
            None,
            "once per session"
        );
        let mut short_names = ChannelPolicy::new(&names, &ids, true, true);
        assert_eq!(
            short_names.metadata(&channel_pdu(1004, true, &sfl), false),
            Some(("clipboard", "the target offers text".into()))
        );
        assert_eq!(
            p.metadata(&channel_pdu(1005, false, &announce), true),
            Some(("drive", "the client shares pshare".into()))
        );
        assert_eq!(
            p.metadata(&channel_pdu(1005, true, &create), false),
            Some(("drive", "open \\docs\\secret.txt (write)".into()))
        );
        // Not allowed: nothing (the PDUs are dropped anyway); garbage never panics.
        let mut blocked = ChannelPolicy::new(&names, &ids, false, false);
        assert_eq!(blocked.metadata(&channel_pdu(1004, false, &fl), true), None);
        for cut in 0..create.len() {
            let _ = p.metadata(&channel_pdu(1005, true, &create[..cut]), false);
            let _ = p.metadata(&channel_pdu(1004, true, &fl[..cut.min(fl.len())]), false);
        }
    }

    #[test]
    fn input_pdus_are_told_from_channel_data() {
        assert!(is_input_pdu(&[0x44, 0x05, 0x01, 0x1e, 0x00]), "fast-path input");
        assert!(
            is_input_pdu(&send_data(pdu::IO_CHANNEL, false)),
            "slow-path on the I/O channel"
        );
        assert!(!is_input_pdu(&send_data(1005, false)), "a virtual channel");
        assert!(!is_input_pdu(&[]));
    }

    #[test]
    fn boundaries_are_followed_across_reads() {
        let slow = send_data(1005, true);
        let fast = vec![0x00, 0x04, 0xaa, 0xbb];
        let mut long = vec![0x00, 0x81, 0x2c];
        long.resize(300, 0x55);
        let stream: Vec<u8> = [slow.clone(), fast.clone(), long.clone()].concat();
        let ends = [slow.len(), slow.len() + fast.len(), stream.len()];
        for cut in 0..=stream.len() {
            let mut b = Boundary::default();
            b.advance(&stream[..cut]);
            assert_eq!(b.at_boundary(), cut == 0 || ends.contains(&cut), "cut at {cut}");
            b.advance(&stream[cut..]);
            assert!(b.at_boundary());
        }
        let mut b = Boundary::default();
        b.advance(&[0x07, 1, 2]);
        assert!(!b.at_boundary(), "not RDP: no boundary known");
        b.advance(&fast);
        assert!(!b.at_boundary());
    }

    #[test]
    fn the_framer_splits_tpkt_and_fast_path_pdus_across_reads() {
        let slow = send_data(1005, false);
        let fast_short = vec![0x00, 0x04, 0xaa, 0xbb];
        let mut fast_long = vec![0x00, 0x81, 0x2c];
        fast_long.resize(300, 0x55);
        let stream: Vec<u8> = [slow.clone(), fast_short.clone(), fast_long.clone()].concat();
        for cut in 1..stream.len() {
            let mut f = Framer::default();
            let mut out = Vec::new();
            for piece in [&stream[..cut], &stream[cut..]] {
                f.push(piece);
                while let Some(p) = f.next_pdu().unwrap() {
                    out.push(p);
                }
            }
            assert_eq!(
                out,
                vec![slow.clone(), fast_short.clone(), fast_long.clone()],
                "cut at {cut}"
            );
        }
        let mut f = Framer::default();
        f.push(&[0x07, 0x00]);
        assert!(f.next_pdu().is_err(), "not RDP");
        let mut f = Framer::default();
        f.push(&[0x03, 0x00, 0x00, 0x02]);
        assert!(f.next_pdu().is_err(), "TPKT shorter than its header");
    }
}
