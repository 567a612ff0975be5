//! A bound on open client connections: `api.max_connections`. A connection accepted past it is
//! closed at once (the client sees the connection end and may retry elsewhere or later), so a
//! flood of idle or slow connections cannot take the process's memory or file descriptors. A
//! connection that sends nothing within `api.handshake_timeout_ms` of being accepted is closed,
//! and the HTTP/2 keepalive (`api.keepalive_interval_ms`) frees the slots of dead peers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::{counter, gauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted connection holding one of the `api.max_connections` slots until it is dropped.
pub struct Counted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Until the first bytes arrive: when the client's time to start runs out.
    handshake: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        gauge!("boxoffice_connections_open").decrement(1.0);
    }
}

/// The accepted connections of `incoming` that find a free slot among `max`; the others are
/// closed as they come, and counted.
pub fn bounded(
    incoming: impl Stream<Item = std::io::Result<TcpStream>>,
    max: u32,
    handshake_timeout: Duration,
) -> impl Stream<Item = std::io::Result<Counted>> {
    gauge!("boxoffice_connections_open").set(0.0);
    gauge!("boxoffice_connections_limit").set(f64::from(max));
    counter!("boxoffice_connections_refused_total").absolute(0);
    counter!("boxoffice_connections_timed_out_total").absolute(0);
    let slots = Arc::new(Semaphore::new(max as usize));
    incoming.filter_map(move |accepted| match accepted {
        Ok(stream) => match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                gauge!("boxoffice_connections_open").increment(1.0);
                Some(Ok(Counted {
                    stream,
                    _slot: slot,
                    handshake: Some(Box::pin(tokio::time::sleep(handshake_timeout))),
                }))
            }
            Err(_) => {
                counter!("boxoffice_connections_refused_total").increment(1);
                drop(stream);
                None
            }
        },
        Err(e) => Some(Err(e)),
    })
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let filled = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        let Some(deadline) = self.handshake.as_mut() else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) if buf.filled().len() == filled => read, // closed
            Poll::Ready(_) => {
                self.handshake = None;
                read
            }
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    counter!("boxoffice_connections_timed_out_total").increment(1);
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client sent nothing within api.handshake_timeout_ms",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
