//! Watching a live RDP session in the browser: the session's server stream, decoded server-side into PNG
//! frames of the whole desktop, at most [`FRAMES_PER_SECOND`] per second, through the same watch WebSocket as
//! SSH sessions (each binary message is one PNG).
//!
//! A viewer that joins late rebuilds the desktop from the recording file: it subscribes to the session's hub
//! (learning how many bytes were published before its first one), waits until the recording file holds that
//! many bytes of server stream (the writer flushes at least every second), decodes exactly that prefix, then
//! follows the hub. Nothing is decoded for sessions nobody watches.

use std::path::PathBuf;
use std::time::Duration;

use postern_recorder::rdp::{self, Decoder};
use postern_recorder::Hub;
use postern_web::{Watch, WatchEnd, WatchFeed, WatchNext};
use tokio::sync::mpsc;

/// At most this many frames per second go to a viewer.
pub const FRAMES_PER_SECOND: u32 = 4;
/// How long a late joiner waits for the recording file to catch up with the hub.
const CATCH_UP: Duration = Duration::from_secs(5);

struct Feed(mpsc::Receiver<Result<Vec<u8>, WatchEnd>>);

impl WatchFeed for Feed {
    fn next(&mut self) -> WatchNext<'_> {
        Box::pin(async move { self.0.recv().await.unwrap_or(Err(WatchEnd::SessionEnded)) })
    }
}

async fn png(dec: &Decoder) -> Option<Vec<u8>> {
    let frame = dec.frame(0);
    tokio::task::spawn_blocking(move || frame.png()).await.ok()
}

/// Starts watching the RDP session whose hub is `hub` and whose recording is `path`.
pub fn watch(hub: &Hub, path: PathBuf) -> Watch {
    let (published, mut sub) = hub.subscribe_counted();
    // One frame ahead at most: a slow viewer gets fewer frames; its hub queue (bounded) drops it when it
    // falls too far behind.
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, WatchEnd>>(1);
    tokio::spawn(async move {
        let catch_up = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + CATCH_UP;
            loop {
                let have = rdp::server_stream_len(&path).unwrap_or(0);
                if have >= published || std::time::Instant::now() > deadline {
                    return rdp::decode_prefix(&path, published).ok();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let mut dec = match catch_up.await {
            Ok(Some((dec, fed))) => {
                if fed < published {
                    tracing::warn!(
                        fed,
                        published,
                        "live RDP view: the recording lags; the first frames may be incomplete"
                    );
                }
                dec
            }
            _ => {
                let _ = tx.send(Err(WatchEnd::SessionEnded)).await;
                return;
            }
        };
        let mut dirty = true;
        let period = Duration::from_millis(1000 / u64::from(FRAMES_PER_SECOND));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                r = sub.recv() => match r {
                    Ok(bytes) => {
                        dec.feed(&bytes);
                        dirty = true;
                    }
                    Err(e) => {
                        let end = match e {
                            postern_recorder::Error::Lagged => WatchEnd::TooSlow,
                            _ => WatchEnd::SessionEnded,
                        };
                        if dirty && end == WatchEnd::SessionEnded {
                            if let Some(p) = png(&dec).await {
                                let _ = tx.send(Ok(p)).await;
                            }
                        }
                        let _ = tx.send(Err(end)).await;
                        return;
                    }
                },
                _ = tick.tick(), if dirty => {
                    dirty = false;
                    let Some(p) = png(&dec).await else { return };
                    if tx.send(Ok(p)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Watch {
        snapshot: Vec::new(),
        feed: Box::new(Feed(rx)),
    }
}
