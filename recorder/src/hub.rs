//! The live fan-out of a session's output to its viewers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::Error;

/// Sizes of a [`Hub`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubConfig {
    /// How much recent output a late joiner gets (default 64 KiB).
    pub ring_bytes: usize,
    /// How far a viewer may fall behind before it is dropped (default 1 MiB).
    pub subscriber_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            ring_bytes: 64 * 1024,
            subscriber_bytes: 1 << 20,
        }
    }
}

/// A session's live output, fanned out to any number of viewers. Cheap to clone (all clones
/// are the same hub). [`publish`](Hub::publish) never blocks and never waits for a viewer: a
/// viewer that falls behind by more than [`HubConfig::subscriber_bytes`] is dropped. When the
/// last clone is dropped, or on [`close`](Hub::close), viewers get [`Error::Closed`] after
/// what was queued for them.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Mutex<HubInner>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = self.lock();
        f.debug_struct("Hub")
            .field("ring", &h.ring_len)
            .field("subscribers", &h.subs.len())
            .field("closed", &h.closed)
            .finish()
    }
}

#[derive(Default)]
struct HubInner {
    cfg: HubConfig,
    /// The recent output, as published (pieces are shared, not copied); the first piece may be cut.
    ring: VecDeque<Bytes>,
    /// Bytes in `ring`.
    ring_len: usize,
    /// The ring lost its oldest bytes (so it may start inside a UTF-8 sequence).
    trimmed: bool,
    subs: Vec<Arc<SubShared>>,
    closed: bool,
    /// Bytes published so far.
    published: u64,
}

impl HubInner {
    /// Appends to the recent output, dropping (or cutting) the oldest pieces past [`HubConfig::ring_bytes`].
    fn keep_recent(&mut self, data: Bytes) {
        self.ring_len += data.len();
        self.ring.push_back(data);
        let cap = self.cfg.ring_bytes;
        while self.ring_len > cap {
            let over = self.ring_len - cap;
            let Some(front) = self.ring.front_mut() else { break };
            self.trimmed = true;
            if front.len() <= over {
                self.ring_len -= front.len();
                self.ring.pop_front();
            } else {
                *front = front.slice(over..);
                self.ring_len -= over;
            }
        }
    }

    /// A new subscriber's shared state, registered to receive what is published next (ended at once when the
    /// hub is closed); subscribers that went away are dropped on the way.
    fn attach(&mut self) -> Arc<SubShared> {
        let shared = Arc::new(SubShared::default());
        if self.closed {
            shared.lock().end = Some(End::Closed);
        } else {
            self.subs.retain(|s| Arc::strong_count(s) > 1);
            self.subs.push(shared.clone());
        }
        shared
    }
}

impl Drop for HubInner {
    fn drop(&mut self) {
        close_all(&mut self.subs);
    }
}

fn close_all(subs: &mut Vec<Arc<SubShared>>) {
    for s in subs.drain(..) {
        s.lock().end.get_or_insert(End::Closed);
        s.notify.notify_one();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Lagged,
    Closed,
}

#[derive(Default)]
struct SubShared {
    state: Mutex<SubState>,
    notify: Notify,
}

impl SubShared {
    fn lock(&self) -> MutexGuard<'_, SubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct SubState {
    queue: VecDeque<Bytes>,
    bytes: usize,
    end: Option<End>,
}

/// A viewer of a [`Hub`]: receives the output published after its snapshot, in order.
pub struct Subscriber {
    shared: Arc<SubShared>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("queued", &self.shared.lock().bytes)
            .finish()
    }
}

impl Hub {
    /// A hub with the default sizes.
    pub fn new() -> Self {
        Self::with_config(HubConfig::default())
    }

    /// A hub with the given sizes.
    pub fn with_config(cfg: HubConfig) -> Self {
        let mut inner = HubInner::default();
        inner.cfg = cfg;
        Hub {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes session output to every viewer, sharing `data` with the ring and the viewers' queues
    /// (no copy). Never blocks: a viewer whose queue would exceed its budget is dropped instead (its next
    /// receive says [`Error::Lagged`]).
    pub fn publish(&self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let mut h = self.lock();
        if h.closed {
            return;
        }
        h.published += data.len() as u64;
        h.keep_recent(data.clone());
        if h.subs.is_empty() {
            return;
        }
        let limit = h.cfg.subscriber_bytes;
        h.subs.retain(|s| {
            if Arc::strong_count(s) == 1 {
                return false; // the viewer went away
            }
            let mut st = s.lock();
            if st.end.is_some() {
                return false;
            }
            if st.bytes + data.len() > limit {
                st.queue = VecDeque::new();
                st.bytes = 0;
                st.end = Some(End::Lagged);
            } else {
                st.bytes += data.len();
                st.queue.push_back(data.clone());
            }
            let keep = st.end.is_none();
            drop(st);
            s.notify.notify_one();
            keep
        });
    }

    /// A new viewer: the recent output (the last [`HubConfig::ring_bytes`], starting at a
    /// character boundary) and a [`Subscriber`] that receives everything published after it,
    /// with no gap and no overlap.
    pub fn subscribe(&self) -> (Vec<u8>, Subscriber) {
        let mut h = self.lock();
        let mut snapshot: Vec<u8> = h.ring.iter().flat_map(|p| p.iter().copied()).collect();
        if h.trimmed {
            let skip = snapshot.iter().take(3).take_while(|&&b| b & 0xC0 == 0x80).count();
            snapshot.drain(..skip);
        }
        let shared = h.attach();
        (snapshot, Subscriber { shared })
    }

    /// Like [`subscribe`](Self::subscribe) without the recent output, with the number of bytes published
    /// before the subscriber's first byte (a viewer that rebuilds the state from the recording file reads that
    /// many bytes of it, then follows the subscriber, with no gap and no overlap).
    pub fn subscribe_counted(&self) -> (u64, Subscriber) {
        let mut h = self.lock();
        let shared = h.attach();
        (h.published, Subscriber { shared })
    }

    /// Ends the live session: viewers receive what is queued for them, then [`Error::Closed`].
    /// Later publishes are ignored.
    pub fn close(&self) {
        let mut h = self.lock();
        h.closed = true;
        close_all(&mut h.subs);
    }

    /// Viewers currently following.
    pub fn subscriber_count(&self) -> usize {
        let mut h = self.lock();
        h.subs.retain(|s| Arc::strong_count(s) > 1 && s.lock().end.is_none());
        h.subs.len()
    }
}

impl Subscriber {
    /// The next output: everything queued since the last call, concatenated. Waits when there
    /// is none. [`Error::Lagged`] once this viewer fell behind and was dropped, [`Error::Closed`]
    /// once the session ended and everything was received.
    pub async fn recv(&mut self) -> Result<Vec<u8>, Error> {
        loop {
            if let Some(r) = self.try_recv().transpose() {
                return r;
            }
            self.shared.notify.notified().await;
        }
    }

    /// Like [`recv`](Self::recv) without waiting: `Ok(None)` when nothing is queued.
    pub fn try_recv(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let mut st = self.shared.lock();
        if st.end == Some(End::Lagged) {
            return Err(Error::Lagged);
        }
        if !st.queue.is_empty() {
            let mut out = Vec::with_capacity(st.bytes);
            for piece in st.queue.drain(..) {
                out.extend_from_slice(&piece);
            }
            st.bytes = 0;
            return Ok(Some(out));
        }
        match st.end {
            Some(End::Closed) => Err(Error::Closed),
            _ => Ok(None),
        }
    }

    /// Bytes waiting for this viewer.
    pub fn queued_bytes(&self) -> usize {
        self.shared.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[tokio::test]
    async fn the_ring_keeps_the_last_bytes_of_shared_pieces() {
        let hub = Hub::with_config(HubConfig {
            ring_bytes: 10,
            subscriber_bytes: 1 << 20,
        });
        hub.publish(Bytes::from_static(b"abcdef"));
        assert_eq!(hub.subscribe().0, b"abcdef");
        hub.publish(Bytes::from_static(b"ghijklmn"));
        let (snap, mut sub) = hub.subscribe();
        assert_eq!(snap, b"efghijklmn");
        hub.publish(Bytes::from_static(b"0123456789ABC"));
        assert_eq!(hub.subscribe().0, b"3456789ABC");
        assert_eq!(hub.lock().ring_len, 10);
        hub.publish(Bytes::from_static(b"z"));
        assert_eq!(hub.subscribe().0, b"456789ABCz");
        assert_eq!(sub.try_recv().unwrap().unwrap(), b"0123456789ABCz");
    }

    #[tokio::test]
    async fn snapshot_then_everything_in_order() {
        let hub = Hub::new();
        hub.publish(Bytes::from_static(b"before "));
        let (snap, mut sub) = hub.subscribe();
        assert_eq!(snap, b"before ");
        let publisher = {
            let hub = hub.clone();
            tokio::spawn(async move {
                for i in 0..1000u32 {
                    hub.publish(Bytes::copy_from_slice(format!("<{i}>").as_bytes()));
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                hub.close();
            })
        };
        let mut got = Vec::new();
        loop {
            match sub.recv().await {
                Ok(b) => got.extend_from_slice(&b),
                Err(Error::Closed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        publisher.await.unwrap();
        let expect: String = (0..1000u32).map(|i| format!("<{i}>")).collect();
        assert_eq!(String::from_utf8(got).unwrap(), expect);
        // A viewer joining after the end gets the recent screen and Closed.
        let (snap, mut late) = hub.subscribe();
        assert_eq!(snap, format!("before {expect}").as_bytes());
        assert!(matches!(late.recv().await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn stalled_viewer_is_dropped_and_never_slows_the_publisher() {
        let hub = Hub::new();
        let (_, mut stalled) = hub.subscribe();
        let piece = vec![b'z'; 32 * 1024];
        let t = Instant::now();
        let mut max_queued = 0;
        for _ in 0..(100 << 20) / piece.len() {
            hub.publish(Bytes::copy_from_slice(&piece));
            max_queued = max_queued.max(stalled.queued_bytes());
        }
        let took = t.elapsed();
        assert!(took < Duration::from_secs(20), "publishing 100 MiB took {took:?}");
        assert!(max_queued <= HubConfig::default().subscriber_bytes, "{max_queued}");
        assert_eq!(stalled.queued_bytes(), 0, "the dropped viewer's queue is freed");
        assert_eq!(hub.subscriber_count(), 0);
        assert!(matches!(stalled.recv().await, Err(Error::Lagged)));
        assert!(matches!(stalled.try_recv(), Err(Error::Lagged)));
        assert_eq!(hub.lock().ring_len, HubConfig::default().ring_bytes);
    }

    #[tokio::test]
    async fn a_keeping_up_viewer_survives_a_stalled_one() {
        let hub = Hub::with_config(HubConfig {
            ring_bytes: 1024,
            subscriber_bytes: 256 * 1024,
        });
        let (_, mut stalled) = hub.subscribe();
        let (_, mut live) = hub.subscribe();
        let mut seen = 0usize;
        for i in 0..10_000u32 {
            hub.publish(Bytes::copy_from_slice(&i.to_be_bytes().repeat(64)));
            if i % 100 == 99 {
                while let Some(b) = live.try_recv().unwrap() {
                    seen += b.len();
                }
            }
        }
        while let Some(b) = live.try_recv().unwrap() {
            seen += b.len();
        }
        assert_eq!(seen, 10_000 * 256);
        assert!(matches!(stalled.try_recv(), Err(Error::Lagged)));
        assert_eq!(hub.subscriber_count(), 1);
    }

    #[test]
    fn ring_keeps_the_tail_at_a_character_boundary() {
        let hub = Hub::with_config(HubConfig {
            ring_bytes: 8,
            subscriber_bytes: 1024,
        });
        hub.publish(Bytes::copy_from_slice("ab€".as_bytes())); // 5 bytes
        hub.publish(Bytes::from_static(b"cdefgh")); // 11 in all: the ring keeps "\x82\xaccdefgh", half a "€"
        let (snap, _) = hub.subscribe();
        assert_eq!(snap, b"cdefgh");
        hub.publish(Bytes::from_static(&[b'x'; 100]));
        let (snap, _) = hub.subscribe();
        assert_eq!(snap, [b'x'; 8]);
    }

    #[tokio::test]
    async fn dropping_the_hub_or_the_viewer() {
        let hub = Hub::new();
        let (_, mut sub) = hub.subscribe();
        let (_, gone) = hub.subscribe();
        drop(gone);
        hub.publish(Bytes::from_static(b"last words"));
        assert_eq!(hub.subscriber_count(), 1);
        drop(hub);
        assert_eq!(sub.recv().await.unwrap(), b"last words");
        assert!(matches!(sub.recv().await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn recv_wakes_on_publish() {
        let hub = Hub::new();
        let (_, mut sub) = hub.subscribe();
        let h2 = hub.clone();
        let t = tokio::spawn(async move { sub.recv().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        h2.publish(Bytes::from_static(b"hi"));
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
            b"hi"
        );
    }

    #[test]
    fn a_counted_subscription_says_how_much_came_before_it() {
        let hub = Hub::with_config(HubConfig {
            ring_bytes: 0,
            subscriber_bytes: 1 << 20,
        });
        hub.publish(Bytes::from_static(b"abc"));
        hub.publish(Bytes::from_static(b"de"));
        let (before, mut sub) = hub.subscribe_counted();
        assert_eq!(before, 5);
        hub.publish(Bytes::from_static(b"fgh"));
        assert_eq!(sub.try_recv().unwrap().unwrap(), b"fgh");
        assert!(hub.subscribe().0.is_empty(), "no ring: no snapshot");
        hub.close();
        assert!(matches!(sub.try_recv(), Err(Error::Closed)));
        let (after, mut late) = hub.subscribe_counted();
        assert_eq!(after, 8);
        assert!(matches!(late.try_recv(), Err(Error::Closed)));
    }
}
