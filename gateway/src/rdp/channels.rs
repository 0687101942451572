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

/// Which static channels are blocked, and which first uses were already reported.
#[derive(Debug, Default)]
pub(crate) struct ChannelPolicy {
    governed: Vec<Governed>,
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
        ChannelPolicy { governed }
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
}

/// The length of the PDU at the start of `b`, from its header.
fn pdu_len(b: &[u8]) -> Result<Option<usize>, String> {
    let Some(&first) = b.first() else { return Ok(None) };
    let len = if first == 3 {
        // TPKT: version 3, reserved, 16-bit length.
        let Some(h) = b.get(..4) else { return Ok(None) };
        usize::from(u16::from_be_bytes([h[2], h[3]]))
    } else if first & 0x03 == 0 {
        // Fast-path: action 0, then a 1- or 2-byte length.
        let Some(&l1) = b.get(1) else { return Ok(None) };
        if l1 & 0x80 != 0 {
            let Some(&l2) = b.get(2) else { return Ok(None) };
            (usize::from(l1 & 0x7f) << 8) | usize::from(l2)
        } else {
            usize::from(l1)
        }
    } else {
        return Err(format!("not an RDP PDU (first byte {first:#04x})"));
    };
    if !(2..=MAX_PDU).contains(&len) || (first == 3 && len < 4) {
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
