//! An RDP target that requires NLA (TLS + CredSSP with NTLM, like Windows), built on IronRDP's server-side
//! connection sequence (`ironrdp-acceptor` 0.12) and run in the test process on `127.0.0.1:0`. Its one account is
//! the one the vault holds. When a client completes the connection sequence (so its CredSSP credentials were
//! accepted and it reached the active stage), the target paints two recognisable squares (fast-path bitmap
//! updates: [`LEFT`] around (200, 300), [`RIGHT`] around (600, 300)) and records what the client sends.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ironrdp_acceptor::{Acceptor, BeginResult, DesktopSize};
use ironrdp_pdu_next::bitmap::{BitmapData, BitmapUpdateData, Compression};
use ironrdp_pdu_next::fast_path::{EncryptionFlags, FastPathHeader, FastPathUpdatePdu, Fragmentation, UpdateCode};
use ironrdp_pdu_next::geometry::InclusiveRectangle;
use ironrdp_pdu_next::nego::SecurityProtocol;
use ironrdp_pdu_next::rdp::capability_sets::{self as caps, CapabilitySet};
use ironrdp_pdu_next::rdp::client_info::Credentials;
use ironrdp_pdu_next::{encode_vec, Encode};
use ironrdp_tokio::{FramedWrite, TokioFramed};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The desktop's size.
pub const WIDTH: u16 = 800;
pub const HEIGHT: u16 = 600;
/// The colour of the square around (200, 300) (`#RRGGBB`).
pub const LEFT: &str = "#3366CC";
/// The colour of the square around (600, 300).
pub const RIGHT: &str = "#CC9933";

/// A running NLA target; stops when dropped.
pub struct NlaTarget {
    pub port: u16,
    /// Connections accepted (whatever their outcome).
    pub connections: Arc<AtomicUsize>,
    /// Connections that completed the connection sequence (CredSSP accepted, active stage reached).
    pub active: Arc<AtomicUsize>,
    /// Connections that ended with an error (a refused CredSSP among them), with the error.
    pub failures: Arc<Mutex<Vec<String>>>,
    /// What active clients sent (PDU kind and length).
    pub input: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
}

impl Drop for NlaTarget {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A no-op network client: NTLM needs none (Kerberos would).
struct NoNetwork;

impl ironrdp_tokio::NetworkClient for NoNetwork {
    async fn send(
        &mut self,
        _request: &ironrdp_connector::sspi::NetworkRequest,
    ) -> ironrdp_acceptor::ConnectorResult<Vec<u8>> {
        Err(ironrdp_connector::general_err!("no network lookups in the test target"))
    }
}

fn capabilities() -> Vec<CapabilitySet> {
    vec![
        CapabilitySet::General(caps::General {
            extra_flags: caps::GeneralExtraFlags::FASTPATH_OUTPUT_SUPPORTED,
            ..Default::default()
        }),
        CapabilitySet::Bitmap(caps::Bitmap {
            pref_bits_per_pix: 32,
            desktop_width: WIDTH,
            desktop_height: HEIGHT,
            desktop_resize_flag: false,
            drawing_flags: caps::BitmapDrawingFlags::empty(),
        }),
        CapabilitySet::Order(caps::Order::new(
            caps::OrderFlags::empty(),
            caps::OrderSupportExFlags::empty(),
            2048,
            224,
        )),
        CapabilitySet::Pointer(caps::Pointer {
            color_pointer_cache_size: 2048,
            pointer_cache_size: 2048,
        }),
        CapabilitySet::Input(caps::Input {
            input_flags: caps::InputFlags::SCANCODES
                | caps::InputFlags::MOUSEX
                | caps::InputFlags::FASTPATH_INPUT
                | caps::InputFlags::UNICODE
                | caps::InputFlags::FASTPATH_INPUT_2,
            keyboard_layout: 0,
            keyboard_type: None,
            keyboard_subtype: 0,
            keyboard_function_key: 128,
            keyboard_ime_filename: String::new(),
        }),
        CapabilitySet::VirtualChannel(caps::VirtualChannel {
            flags: caps::VirtualChannelFlags::NO_COMPRESSION,
            chunk_size: None,
        }),
    ]
}

/// A fast-path bitmap update painting a 64×64 square of `bgr` (blue, green, red) at (`x`, `y`), uncompressed
/// 32 bits per pixel.
fn square(x: u16, y: u16, bgr: [u8; 3]) -> Vec<u8> {
    let pixels: Vec<u8> = (0..64 * 64).flat_map(|_| [bgr[0], bgr[1], bgr[2], 0xFF]).collect();
    let update = BitmapUpdateData {
        rectangles: vec![BitmapData {
            rectangle: InclusiveRectangle {
                left: x,
                top: y,
                right: x + 63,
                bottom: y + 63,
            },
            width: 64,
            height: 64,
            bits_per_pixel: 32,
            compression_flags: Compression::empty(),
            compressed_data_header: None,
            bitmap_data: &pixels,
        }],
    };
    let data = encode_vec(&update).unwrap();
    let pdu = FastPathUpdatePdu {
        fragmentation: Fragmentation::Single,
        update_code: UpdateCode::Bitmap,
        compression_flags: None,
        compression_type: None,
        data: &data,
    };
    let header = FastPathHeader::new(EncryptionFlags::empty(), pdu.size());
    let mut out = encode_vec(&header).unwrap();
    out.extend(encode_vec(&pdu).unwrap());
    out
}

impl NlaTarget {
    /// Starts the target with hybrid security (TLS + CredSSP) and one account `user`/`password`.
    pub async fn start(user: &str, password: &str) -> NlaTarget {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["nla-target".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], der)
            .unwrap();
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let public_key = key.public_key_raw().to_vec();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = NlaTarget {
            port,
            connections: Arc::default(),
            active: Arc::default(),
            failures: Arc::default(),
            input: Arc::default(),
            stop: CancellationToken::new(),
        };
        let creds = Credentials {
            username: user.to_owned(),
            password: password.to_owned(),
            domain: None,
        };
        let (connections, active, failures, input, stop) = (
            t.connections.clone(),
            t.active.clone(),
            t.failures.clone(),
            t.input.clone(),
            t.stop.clone(),
        );
        // The acceptor's futures are not `Send`: the target runs on its own thread and runtime.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                loop {
                    let stream = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (tls, creds, public_key) = (tls.clone(), creds.clone(), public_key.clone());
                    let (active, failures, input, stop) =
                        (active.clone(), failures.clone(), input.clone(), stop.clone());
                    tokio::task::spawn_local(async move {
                        let served = tokio::select! {
                            _ = stop.cancelled() => return,
                            r = serve(stream, tls, creds, public_key, &active, &input) => r,
                        };
                        if let Err(e) = served {
                            failures.lock().unwrap().push(e);
                        }
                    });
                }
            });
        });
        t
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    tls: tokio_rustls::TlsAcceptor,
    creds: Credentials,
    public_key: Vec<u8>,
    active: &AtomicUsize,
    input: &Mutex<Vec<String>>,
) -> Result<(), String> {
    let size = DesktopSize {
        width: WIDTH,
        height: HEIGHT,
    };
    let mut acceptor = Acceptor::new(
        SecurityProtocol::HYBRID | SecurityProtocol::HYBRID_EX,
        size,
        capabilities(),
        Some(creds),
    );
    let begun = ironrdp_acceptor::accept_begin(TokioFramed::new(stream), &mut acceptor)
        .await
        .map_err(|e| format!("accept_begin: {e}"))?;
    let BeginResult::ShouldUpgrade(tcp) = begun else {
        return Err("the client did not negotiate TLS/NLA".into());
    };
    let stream = tls.accept(tcp).await.map_err(|e| format!("TLS: {e}"))?;
    acceptor.mark_security_upgrade_as_done();
    let mut framed = TokioFramed::new(stream);
    ironrdp_acceptor::accept_credssp(
        &mut framed,
        &mut acceptor,
        &mut NoNetwork,
        "rdp-client".to_owned().into(),
        public_key,
        None,
    )
    .await
    .map_err(|e| format!("CredSSP: {e}"))?;
    let (mut framed, _result) = ironrdp_acceptor::accept_finalize(framed, &mut acceptor)
        .await
        .map_err(|e| format!("finalize: {e}"))?;
    active.fetch_add(1, Ordering::SeqCst);
    let mut out = square(168, 268, [0xCC, 0x66, 0x33]);
    out.extend(square(568, 268, [0x33, 0x99, 0xCC]));
    framed.write_all(&out).await.map_err(|e| format!("painting: {e}"))?;
    loop {
        match framed.read_pdu().await {
            Ok((action, pdu)) => input.lock().unwrap().push(format!("{action:?} {}", pdu.len())),
            Err(_) => return Ok(()),
        }
    }
}
