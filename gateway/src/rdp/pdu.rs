//! RDP framing and the few PDUs the gateway reads or writes itself (IronRDP's `ironrdp-pdu` does the encoding).

use std::borrow::Cow;

use ironrdp_core::{decode, encode_vec, Decode, Encode};
use ironrdp_pdu::gcc::{
    ConferenceCreateResponse, ServerCoreData, ServerCoreOptionalData, ServerGccBlocks, ServerNetworkData,
    ServerSecurityData,
};
use ironrdp_pdu::mcs::{
    ConnectInitial, ConnectResponse, DisconnectProviderUltimatum, DisconnectReason, SendDataIndication, SendDataRequest,
};
use ironrdp_pdu::nego::SecurityProtocol;
use ironrdp_pdu::rdp::client_info::{ClientInfoFlags, CompressionType, Credentials};
use ironrdp_pdu::rdp::headers::{
    CompressionFlags, ShareControlHeader, ShareControlPdu, ShareDataHeader, ShareDataPdu, StreamPriority,
};
use ironrdp_pdu::rdp::server_error_info::{ErrorInfo, ProtocolIndependentCode, ServerSetErrorInfoPdu};
use ironrdp_pdu::rdp::ClientInfoPdu;
use ironrdp_pdu::x224::{X224Data, X224};
use tokio::io::{AsyncRead, AsyncReadExt};
use zeroize::Zeroize;

/// The largest slow-path frame accepted during the connection sequence.
pub(crate) const MAX_FRAME: usize = 16 * 1024;

/// The MCS I/O (global) channel.
pub(crate) const IO_CHANNEL: u16 = 1003;
/// The server's own MCS id (source of the PDUs the gateway sends as the server).
pub(crate) const SERVER_CHANNEL: u16 = 1002;
/// The first static virtual channel id.
pub(crate) const FIRST_STATIC_CHANNEL: u16 = 1004;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The socket failed or closed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a TPKT frame, or too large.
    #[error("{0}")]
    Malformed(String),
}

/// Reads one TPKT (slow-path) frame, header included.
pub(crate) async fn read_tpkt<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, FrameError> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[0] != 3 {
        return Err(FrameError::Malformed(format!(
            "expected a TPKT frame (version 3), got first byte {:#04x}",
            head[0]
        )));
    }
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if !(7..=MAX_FRAME).contains(&len) {
        return Err(FrameError::Malformed(format!("TPKT length {len} out of range")));
    }
    let mut frame = vec![0u8; len];
    frame[..4].copy_from_slice(&head);
    s.read_exact(&mut frame[4..]).await?;
    Ok(frame)
}

/// Decodes `frame` as `T`, with the PDU's name in the error.
pub(crate) fn parse<'a, T: Decode<'a>>(frame: &'a [u8], what: &str) -> Result<T, String> {
    decode::<T>(frame).map_err(|e| format!("malformed {what}: {e}"))
}

/// Encodes `pdu`.
pub(crate) fn encode<T: Encode>(pdu: &T) -> Result<Vec<u8>, String> {
    encode_vec(pdu).map_err(|e| format!("encoding {}: {e}", pdu.name()))
}

/// The desktop size the client asked for in its Client Core Data (`connect_initial` is the framed MCS Connect
/// Initial).
pub(crate) fn desktop_size(connect_initial: &[u8]) -> Option<(u16, u16)> {
    let ci: ConnectInitial = parse_wrapped(connect_initial, "MCS Connect Initial").ok()?;
    let core = &ci.conference_create_request.gcc_blocks().core;
    Some((core.desktop_width, core.desktop_height))
}

/// The client's MCS Connect Initial (framed) as the target gets it: unchanged, unless its Client Core Data offers
/// the graphics pipeline (GFX, `SUPPORT_DYN_VC_GFX_PROTOCOL`), which is then withdrawn so that the target sends
/// the bitmap updates the recording's decoder renders (the client handles those too). `None`: unchanged.
pub(crate) fn without_gfx(connect_initial: &[u8]) -> Result<Option<Vec<u8>>, String> {
    use ironrdp_pdu::gcc::{ClientEarlyCapabilityFlags, ConferenceCreateRequest};
    let mut ci: ConnectInitial = parse_wrapped(connect_initial, "MCS Connect Initial")?;
    let gfx = ClientEarlyCapabilityFlags::SUPPORT_DYN_VC_GFX_PROTOCOL;
    let offered = ci
        .conference_create_request
        .gcc_blocks()
        .core
        .optional_data
        .early_capability_flags
        .is_some_and(|f| f.contains(gfx));
    if !offered {
        return Ok(None);
    }
    let mut blocks = ci.conference_create_request.into_gcc_blocks();
    if let Some(f) = blocks.core.optional_data.early_capability_flags.as_mut() {
        f.remove(gfx);
    }
    ci.conference_create_request =
        ConferenceCreateRequest::new(blocks).map_err(|e| format!("re-encoding the MCS Connect Initial: {e}"))?;
    wrap(encode(&ci)?).map(Some)
}

/// The colour depth of the picker's bitmaps: 32 bpp when the client's core data supports it, else 24.
pub(crate) fn client_bpp(connect_initial: &[u8]) -> u16 {
    use ironrdp_pdu::gcc::SupportedColorDepths;
    let Ok(ci) = parse_wrapped::<ConnectInitial>(connect_initial, "MCS Connect Initial") else {
        return 32;
    };
    match ci
        .conference_create_request
        .gcc_blocks()
        .core
        .optional_data
        .supported_color_depths
    {
        Some(d) if !d.contains(SupportedColorDepths::BPP32) => 24,
        _ => 32,
    }
}

/// The kind of a Share Control PDU (the user data of an MCS Send Data PDU on the I/O channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShareControlType {
    DemandActive,
    ConfirmActive,
    Other,
}

/// The kind of Share Control PDU `user_data` holds, by its pduType (version 1 in the high bits), or `None`
/// when it is not one (licensing PDUs start with a security header instead).
pub(crate) fn share_control_type(user_data: &[u8]) -> Option<ShareControlType> {
    let ty = u16::from_le_bytes([*user_data.get(2)?, *user_data.get(3)?]);
    if ty & 0xfff0 != 0x0010 {
        return None;
    }
    Some(match ty & 0x000f {
        0x1 => ShareControlType::DemandActive,
        0x3 => ShareControlType::ConfirmActive,
        0x6 | 0x7 | 0xa => ShareControlType::Other,
        _ => return None,
    })
}

/// Whether `user_data` is a licensing PDU (its basic security header has SEC_LICENSE_PKT).
pub(crate) fn is_license_pdu(user_data: &[u8]) -> bool {
    user_data.first().is_some_and(|f| f & 0x80 != 0)
}

/// Whether the licensing PDU `user_data` is the error alert STATUS_VALID_CLIENT (no license exchange): after the
/// basic security header (4 bytes), the preamble's message type ERROR_ALERT (0xff), then (after the flags and
/// size) the error code 7. Read from the bytes: xrdp's alert carries an error blob IronRDP does not decode.
pub(crate) fn is_license_valid_client(user_data: &[u8]) -> bool {
    user_data.get(4) == Some(&0xff) && user_data.get(8..12) == Some(&[7, 0, 0, 0][..])
}

/// The static virtual channels the client asked for (their count).
pub(crate) fn static_channel_count(ci: &ConnectInitial) -> usize {
    ci.conference_create_request
        .gcc_blocks()
        .network
        .as_ref()
        .map(|n| n.channels.len())
        .unwrap_or(0)
}

/// The static channel ids the gateway assigns, in the client's order.
pub(crate) fn static_channel_ids(count: usize) -> Vec<u16> {
    (0..count)
        .map(|i| FIRST_STATIC_CHANNEL.saturating_add(u16::try_from(i).unwrap_or(u16::MAX)))
        .collect()
}

/// The MCS user channel the gateway assigns to the client (and expects the target to assign): the id after the
/// static channels, as xrdp and Windows do.
pub(crate) fn user_channel(static_count: usize) -> u16 {
    FIRST_STATIC_CHANNEL.saturating_add(u16::try_from(static_count).unwrap_or(u16::MAX))
}

/// The gateway's MCS Connect Response to the client: TLS (no RDP encryption), the I/O channel and one id per
/// static channel, numbered like xrdp and Windows do (1003, then 1004 and up).
pub(crate) fn connect_response(ci: &ConnectInitial, requested: SecurityProtocol) -> Result<Vec<u8>, String> {
    let blocks = ServerGccBlocks {
        core: ServerCoreData {
            version: ironrdp_pdu::gcc::RdpVersion::V5_PLUS,
            optional_data: ServerCoreOptionalData {
                client_requested_protocols: Some(requested),
                early_capability_flags: None,
            },
        },
        network: ServerNetworkData {
            channel_ids: static_channel_ids(static_channel_count(ci)),
            io_channel: IO_CHANNEL,
        },
        security: ServerSecurityData::no_security(),
        message_channel: None,
        multi_transport_channel: None,
    };
    let response = ConnectResponse {
        conference_create_response: ConferenceCreateResponse::new(user_channel(static_channel_count(ci)), blocks)
            .map_err(|e| format!("building the connect response: {e}"))?,
        called_connect_id: 1,
        domain_parameters: ci.target_parameters.clone(),
    };
    wrap(encode(&response)?)
}

/// The client's framed MCS Connect Initial for the target: `serverSelectedProtocol` in its core data set to
/// `selected` (what the target selected, which may differ from what the gateway selected for the client), and
/// without a message channel request (the gateway's Connect Response gave the client none, so the client will
/// not join one; a target that allocated one would wait for that join).
pub(crate) fn with_selected_protocol(frame: &[u8], selected: SecurityProtocol) -> Result<Vec<u8>, String> {
    let mut ci: ConnectInitial = parse_wrapped(frame, "MCS Connect Initial")?;
    let mut blocks = ci.conference_create_request.gcc_blocks().clone();
    if blocks.core.optional_data.server_selected_protocol == Some(selected) && blocks.message_channel.is_none() {
        return Ok(frame.to_vec());
    }
    blocks.core.optional_data.server_selected_protocol = Some(selected);
    blocks.message_channel = None;
    ci.conference_create_request = ironrdp_pdu::gcc::ConferenceCreateRequest::new(blocks)
        .map_err(|e| format!("re-encoding the MCS Connect Initial: {e}"))?;
    wrap(encode(&ci)?)
}

/// `data` in an X.224 Data TPDU (MCS Connect Initial/Response are not MCS domain PDUs).
pub(crate) fn wrap(data: Vec<u8>) -> Result<Vec<u8>, String> {
    encode(&X224(X224Data { data: Cow::Owned(data) }))
}

/// The BER payload of an X.224 Data TPDU decoded as `T`.
pub(crate) fn parse_wrapped<T: for<'a> Decode<'a>>(frame: &[u8], what: &str) -> Result<T, String> {
    let d: X224<X224Data<'_>> = parse(frame, what)?;
    parse(&d.0.data, what)
}

/// An MCS Send Data Request on the I/O channel carrying `user_data`.
pub(crate) fn send_data_request(user_channel: u16, user_data: &[u8]) -> Result<Vec<u8>, String> {
    encode(&X224(SendDataRequest {
        initiator_id: user_channel,
        channel_id: IO_CHANNEL,
        user_data: Cow::Borrowed(user_data),
    }))
}

/// A Set Error Info PDU on the I/O channel: the reason code a client shows when the gateway then disconnects it
/// (FreeRDP accepts it during licensing, where a refused client is waiting). Sent without a security header, as
/// servers do under TLS.
pub(crate) fn set_error_info(code: ProtocolIndependentCode) -> Result<Vec<u8>, String> {
    let pdu = ShareControlHeader {
        share_control_pdu: ShareControlPdu::Data(ShareDataHeader {
            share_data_pdu: ShareDataPdu::ServerSetErrorInfo(ServerSetErrorInfoPdu(
                ErrorInfo::ProtocolIndependentCode(code),
            )),
            stream_priority: StreamPriority::Low,
            compression_flags: CompressionFlags::empty(),
            compression_type: CompressionType::K8,
        }),
        pdu_source: SERVER_CHANNEL,
        share_id: 0,
    };
    let data = encode(&pdu)?;
    encode(&X224(SendDataIndication {
        initiator_id: SERVER_CHANNEL,
        channel_id: IO_CHANNEL,
        user_data: Cow::Owned(data),
    }))
}

/// The gateway ends a session: the reason code the client shows (a Set Error Info PDU), then the MCS Disconnect
/// Provider Ultimatum with `reason`. Best effort: a part that cannot be encoded is left out.
pub(crate) fn goodbye(code: ProtocolIndependentCode, reason: DisconnectReason) -> Vec<u8> {
    let mut out = set_error_info(code).unwrap_or_default();
    out.extend(encode(&X224(DisconnectProviderUltimatum::from_reason(reason))).unwrap_or_default());
    out
}

/// The Client Info PDU the target gets, framed: the vaulted account and password with the autologon flag;
/// everything else (flags, shell, time zone, performance flags) as the client sent it. The intermediate buffers
/// holding the password are zeroized; the caller zeroizes the returned frame once sent.
pub(crate) fn injected_client_info(
    mut info: ClientInfoPdu,
    user_channel: u16,
    account: &str,
    password: &str,
) -> Result<Vec<u8>, String> {
    info.client_info.credentials = Credentials {
        username: account.to_owned(),
        password: password.to_owned(),
        domain: None,
    };
    info.client_info.flags |= ClientInfoFlags::AUTOLOGON;
    // No bulk compression from the target: the recording of its PDU stream stays decodable (each compressed PDU
    // would depend on the whole history of the compressor), and the client decodes uncompressed PDUs anyway.
    info.client_info.flags.remove(ClientInfoFlags::COMPRESSION);
    let encoded = encode(&info);
    info.client_info.credentials.password.zeroize();
    let mut inner = encoded?;
    let framed = send_data_request(user_channel, &inner);
    inner.zeroize();
    framed
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironrdp_pdu::mcs::{AttachUserConfirm, ChannelJoinConfirm, McsMessage};

    #[tokio::test]
    async fn tpkt_framing() {
        let frame = encode(&X224(AttachUserConfirm {
            result: 0,
            initiator_id: 1007,
        }))
        .unwrap();
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        let mut r = &two[..];
        assert_eq!(read_tpkt(&mut r).await.unwrap(), frame);
        assert_eq!(read_tpkt(&mut r).await.unwrap(), frame);
        assert!(matches!(read_tpkt(&mut r).await, Err(FrameError::Io(_))));
        let mut bad: &[u8] = &[0x16, 3, 1, 0, 0x20];
        assert!(matches!(read_tpkt(&mut bad).await, Err(FrameError::Malformed(_))));
        let mut huge: &[u8] = &[3, 0, 0xff, 0xff];
        assert!(matches!(read_tpkt(&mut huge).await, Err(FrameError::Malformed(_))));
    }

    #[test]
    fn mcs_round_trip() {
        let f = encode(&X224(ChannelJoinConfirm {
            result: 0,
            initiator_id: 1007,
            requested_channel_id: IO_CHANNEL,
            channel_id: IO_CHANNEL,
        }))
        .unwrap();
        match parse::<X224<McsMessage<'_>>>(&f, "test").unwrap().0 {
            McsMessage::ChannelJoinConfirm(c) => assert_eq!((c.initiator_id, c.channel_id), (1007, IO_CHANNEL)),
            other => panic!("{other:?}"),
        }
        assert_eq!(static_channel_ids(3), vec![1004, 1005, 1006]);
        assert_eq!(user_channel(3), 1007);
        assert_eq!(user_channel(0), 1004);
        assert!(parse::<X224<McsMessage<'_>>>(&[3, 0, 0, 7, 2, 0xf0, 0x80], "x").is_err());
    }

    #[test]
    fn set_error_info_round_trip() {
        let f = set_error_info(ProtocolIndependentCode::ServerInsufficientPrivileges).unwrap();
        let sd = match parse::<X224<McsMessage<'_>>>(&f, "test").unwrap().0 {
            McsMessage::SendDataIndication(sd) => sd,
            other => panic!("{other:?}"),
        };
        assert_eq!(sd.channel_id, IO_CHANNEL);
        // The first four bytes are what FreeRDP reads as a security header during licensing: neither
        // SEC_LICENSE_PKT (0x80) nor SEC_ENCRYPT (0x08) may be set in the total length.
        let total = u16::from_le_bytes([sd.user_data[0], sd.user_data[1]]);
        assert_eq!(usize::from(total), sd.user_data.len());
        assert_eq!(total & 0x88, 0);
        let h: ShareControlHeader = parse(&sd.user_data, "test").unwrap();
        match h.share_control_pdu {
            ShareControlPdu::Data(d) => assert_eq!(
                d.share_data_pdu,
                ShareDataPdu::ServerSetErrorInfo(ServerSetErrorInfoPdu(ErrorInfo::ProtocolIndependentCode(
                    ProtocolIndependentCode::ServerInsufficientPrivileges
                )))
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_target_is_told_what_it_selected_and_asked_for_no_message_channel() {
        use ironrdp_pdu::gcc::{ClientGccBlocks, ClientMessageChannelData, ConferenceCreateRequest};
        use ironrdp_pdu::mcs::DomainParameters;
        let core = ironrdp_pdu::gcc::ClientCoreData {
            version: ironrdp_pdu::gcc::RdpVersion::V5_PLUS,
            desktop_width: 800,
            desktop_height: 600,
            color_depth: ironrdp_pdu::gcc::ColorDepth::Bpp8,
            sec_access_sequence: ironrdp_pdu::gcc::SecureAccessSequence::Del,
            keyboard_layout: 0,
            client_build: 0,
            client_name: "c".into(),
            keyboard_type: ironrdp_pdu::gcc::KeyboardType::IbmEnhanced,
            keyboard_subtype: 0,
            keyboard_functional_keys_count: 12,
            ime_file_name: String::new(),
            optional_data: ironrdp_pdu::gcc::ClientCoreOptionalData {
                post_beta2_color_depth: Some(ironrdp_pdu::gcc::ColorDepth::Bpp8),
                client_product_id: Some(1),
                serial_number: Some(0),
                high_color_depth: Some(ironrdp_pdu::gcc::HighColorDepth::Bpp24),
                supported_color_depths: Some(ironrdp_pdu::gcc::SupportedColorDepths::BPP24),
                early_capability_flags: Some(ironrdp_pdu::gcc::ClientEarlyCapabilityFlags::SUPPORT_ERR_INFO_PDU),
                dig_product_id: Some(String::new()),
                connection_type: Some(ironrdp_pdu::gcc::ConnectionType::Lan),
                server_selected_protocol: Some(SecurityProtocol::SSL),
                ..Default::default()
            },
        };
        let blocks = ClientGccBlocks {
            core,
            security: ironrdp_pdu::gcc::ClientSecurityData::no_security(),
            network: None,
            cluster: None,
            monitor: None,
            message_channel: Some(ClientMessageChannelData {}),
            multi_transport_channel: None,
            monitor_extended: None,
        };
        let ci = ConnectInitial {
            conference_create_request: ConferenceCreateRequest::new(blocks).unwrap(),
            calling_domain_selector: vec![1],
            called_domain_selector: vec![1],
            upward_flag: true,
            target_parameters: DomainParameters::target(),
            min_parameters: DomainParameters::min(),
            max_parameters: DomainParameters::max(),
        };
        let frame = wrap(encode(&ci).unwrap()).unwrap();
        let out = with_selected_protocol(&frame, SecurityProtocol::HYBRID).unwrap();
        let back: ConnectInitial = parse_wrapped(&out, "test").unwrap();
        let b = back.conference_create_request.gcc_blocks();
        assert_eq!(
            b.core.optional_data.server_selected_protocol,
            Some(SecurityProtocol::HYBRID)
        );
        assert!(b.message_channel.is_none());
        assert_eq!(b.core.client_name, "c");
        // Nothing to change: the same bytes.
        assert_eq!(with_selected_protocol(&out, SecurityProtocol::HYBRID).unwrap(), out);
    }

    #[test]
    fn client_info_gets_the_vaulted_credentials_and_autologon() {
        use ironrdp_pdu::rdp::client_info::{
            AddressFamily, ClientInfo, CompressionType, ExtendedClientInfo, ExtendedClientOptionalInfo,
        };
        use ironrdp_pdu::rdp::headers::{BasicSecurityHeader, BasicSecurityHeaderFlags};
        let from_client = ClientInfoPdu {
            security_header: BasicSecurityHeader {
                flags: BasicSecurityHeaderFlags::INFO_PKT,
            },
            client_info: ClientInfo {
                credentials: Credentials {
                    username: "alice#root@win1".into(),
                    password: "alice's postern password".into(),
                    domain: Some(String::new()),
                },
                code_page: 0,
                flags: ClientInfoFlags::UNICODE | ClientInfoFlags::MOUSE,
                compression_type: CompressionType::K8,
                alternate_shell: String::new(),
                work_dir: String::new(),
                extra_info: ExtendedClientInfo {
                    address_family: AddressFamily::INET,
                    address: "127.0.0.1".into(),
                    dir: "C:\\client".into(),
                    optional_data: ExtendedClientOptionalInfo::default(),
                },
            },
        };
        let frame = injected_client_info(from_client, 1007, "root", "vaulted secret").unwrap();
        let sd = match parse::<X224<McsMessage<'_>>>(&frame, "test").unwrap().0 {
            McsMessage::SendDataRequest(sd) => sd,
            other => panic!("{other:?}"),
        };
        assert_eq!((sd.initiator_id, sd.channel_id), (1007, IO_CHANNEL));
        let info: ClientInfoPdu = parse(&sd.user_data, "test").unwrap();
        let c = &info.client_info.credentials;
        assert_eq!((c.username.as_str(), c.password.as_str()), ("root", "vaulted secret"));
        assert!(info
            .client_info
            .flags
            .contains(ClientInfoFlags::AUTOLOGON | ClientInfoFlags::UNICODE | ClientInfoFlags::MOUSE));
        assert_eq!(info.client_info.extra_info.dir, "C:\\client");
        assert!(
            !format!("{info:?}").contains("vaulted secret"),
            "Debug of the PDU hides the password"
        );
    }

    #[test]
    fn gfx_is_withdrawn_from_the_connect_initial_and_nothing_else_changes() {
        use ironrdp_pdu::gcc::{
            ClientCoreData, ClientCoreOptionalData, ClientEarlyCapabilityFlags, ClientGccBlocks, ClientSecurityData,
            ColorDepth, HighColorDepth, KeyboardType, RdpVersion, SecureAccessSequence, SupportedColorDepths,
        };
        let framed = |early: ClientEarlyCapabilityFlags| {
            let blocks = ClientGccBlocks {
                core: ClientCoreData {
                    version: RdpVersion::V5_PLUS,
                    desktop_width: 1280,
                    desktop_height: 720,
                    color_depth: ColorDepth::Bpp8,
                    sec_access_sequence: SecureAccessSequence::Del,
                    keyboard_layout: 0x409,
                    client_build: 2600,
                    client_name: "client".into(),
                    keyboard_type: KeyboardType::IbmEnhanced,
                    keyboard_subtype: 0,
                    keyboard_functional_keys_count: 12,
                    ime_file_name: String::new(),
                    optional_data: ClientCoreOptionalData {
                        post_beta2_color_depth: Some(ColorDepth::Bpp8),
                        client_product_id: Some(1),
                        serial_number: Some(0),
                        high_color_depth: Some(HighColorDepth::Bpp24),
                        supported_color_depths: Some(SupportedColorDepths::BPP24 | SupportedColorDepths::BPP32),
                        early_capability_flags: Some(early),
                        ..Default::default()
                    },
                },
                security: ClientSecurityData::no_security(),
                network: None,
                cluster: None,
                monitor: None,
                message_channel: None,
                multi_transport_channel: None,
                monitor_extended: None,
            };
            wrap(encode(&ConnectInitial::with_gcc_blocks(blocks).unwrap()).unwrap()).unwrap()
        };
        let errinfo = ClientEarlyCapabilityFlags::SUPPORT_ERR_INFO_PDU;
        let plain = framed(errinfo);
        assert_eq!(
            without_gfx(&plain).unwrap(),
            None,
            "no GFX offered: the bytes go as they are"
        );
        let with_gfx = framed(errinfo | ClientEarlyCapabilityFlags::SUPPORT_DYN_VC_GFX_PROTOCOL);
        let out = without_gfx(&with_gfx).unwrap().expect("rewritten");
        assert_eq!(out, plain);
        assert_eq!(desktop_size(&out), Some((1280, 720)));
        assert!(without_gfx(&[3, 0, 0, 7, 2, 0xf0, 0x80]).is_err());
    }
}
