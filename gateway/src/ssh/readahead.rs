//! Read-ahead for the SSH sockets.
//!
//! russh reads each packet with two exact reads: the (encrypted) length, then the body. On a
//! bare socket that is at least two `recvfrom` calls per packet, and a third that finds the
//! socket empty and goes back to the reactor. [`ReadAhead`] takes whatever the socket holds
//! in one call and serves the small reads from it; reads as large as its buffer go straight
//! to the socket, so bulk bodies are not copied twice.
//!
//! Idle sessions keep no buffer: it is handed back whenever the socket has nothing to read,
//! and taken again (without zeroing) at the next read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes asked of the socket per read.
const READ_AHEAD: usize = 64 * 1024;

/// A stream whose reads are served from one socket read where they can be.
pub(crate) struct ReadAhead<S> {
    inner: S,
    buf: BytesMut,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buf: BytesMut::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            if out.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            this.buf.reserve(READ_AHEAD);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buf) {
                Poll::Pending => {
                    // Nothing to read: an idle session holds no buffer.
                    this.buf = BytesMut::new();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // End of stream: nothing added to `out`.
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(_)) => {}
            }
        }
        let n = out.remaining().min(this.buf.len());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A reader that hands out its data in fixed pieces and counts its reads.
    struct Pieces {
        data: Vec<u8>,
        at: usize,
        piece: usize,
        reads: usize,
    }

    impl Pieces {
        /// `data`, handed out at most `piece` bytes per read.
        fn new(data: &[u8], piece: usize) -> ReadAhead<Pieces> {
            ReadAhead::new(Pieces {
                data: data.to_vec(),
                at: 0,
                piece,
                reads: 0,
            })
        }
    }

    impl AsyncRead for Pieces {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.reads += 1;
            let n = this.piece.min(out.remaining()).min(this.data.len() - this.at);
            out.put_slice(&this.data[this.at..this.at + n]);
            this.at += n;
            Poll::Ready(Ok(()))
        }
    }

    fn packets(n: usize, body: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                let mut p = (body as u32).to_be_bytes().to_vec();
                p.extend((0..body).map(|j| (i * 7 + j) as u8));
                p
            })
            .collect()
    }

    #[tokio::test]
    async fn length_then_body_reads_take_one_socket_read_per_buffer() {
        let data = packets(200, 1000);
        let mut r = Pieces::new(&data, usize::MAX);
        let mut got = Vec::new();
        for _ in 0..200 {
            let mut len = [0u8; 4];
            r.read_exact(&mut len).await.unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            r.read_exact(&mut body).await.unwrap();
            got.extend_from_slice(&len);
            got.extend_from_slice(&body);
        }
        assert_eq!(got, data);
        // 200 packets of 1004 bytes through 64 KiB reads: 4 socket reads, not 400.
        assert!(r.inner.reads <= 5, "{} socket reads", r.inner.reads);
        // End of stream reads as end of stream.
        assert_eq!(r.read(&mut [0u8; 4]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn large_reads_go_straight_to_the_socket_and_nothing_is_lost() {
        let data = packets(3, 200_000);
        let mut r = Pieces::new(&data, 50_000);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn an_idle_stream_holds_no_buffer_and_writes_pass_through() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut r = ReadAhead::new(a);
        b.write_all(b"hello").await.unwrap();
        let mut two = [0u8; 2];
        r.read_exact(&mut two).await.unwrap();
        assert_eq!(&two, b"he");
        assert!(r.buf.capacity() >= 3, "the rest is kept for the next read");
        let mut three = [0u8; 3];
        r.read_exact(&mut three).await.unwrap();
        assert_eq!(&three, b"llo");
        // Nothing more to read: the read is pending and the buffer is handed back.
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), r.read(&mut two)).await;
        assert!(pending.is_err());
        assert_eq!(r.buf.capacity(), 0);
        r.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        b.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }
}
