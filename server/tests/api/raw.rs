//! A gRPC client at the HTTP/2 level: it writes length-prefixed frames exactly as given (several
//! in one DATA frame, malformed ones, never a half-close unless asked) and reads answers only when
//! told, so a test can act as a client that misbehaves.

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use tonic::Status;

use crate::support::DEV_KEY;

/// One HTTP/2 connection.
pub struct Raw {
    send: SendRequest<Bytes>,
}

impl Raw {
    /// Connects with a stream window of `window` bytes: the server can send that much of each
    /// answer stream before this client reads.
    pub async fn connect(addr: SocketAddr, window: u32) -> Raw {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(window)
            .handshake(tcp)
            .await
            .expect("HTTP/2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Raw { send }
    }

    /// Opens a call of `path` (e.g. `/boxoffice.v1.Reservations/ReserveStream`), headers only.
    pub async fn call(&mut self, path: &str) -> Call {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://boxoffice{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("authorization", format!("Bearer {DEV_KEY}"))
            .body(())
            .expect("request");
        let mut send = self.send.clone().ready().await.expect("connection open");
        let (response, stream) = send.send_request(request, false).expect("send headers");
        Call {
            response: Some(response),
            send: stream,
            body: None,
            status: None,
            buffer: BytesMut::new(),
        }
    }
}

/// One call: what is written, and what came back so far.
pub struct Call {
    response: Option<ResponseFuture>,
    send: SendStream<Bytes>,
    body: Option<RecvStream>,
    /// The status, once the call has ended.
    status: Option<Status>,
    buffer: BytesMut,
}

impl Call {
    /// Writes `bytes` as one DATA frame; `end` half-closes. An error means the server has already
    /// reset or ended the call.
    pub fn write(&mut self, bytes: Vec<u8>, end: bool) -> Result<(), h2::Error> {
        self.send.send_data(Bytes::from(bytes), end)
    }

    /// Waits for the response headers; a trailers-only response is the call's status.
    async fn headers(&mut self) {
        if let Some(response) = self.response.take() {
            let response = response.await.expect("response headers");
            assert_eq!(response.status(), 200, "{response:?}");
            if let Some(status) = Status::from_header_map(response.headers()) {
                self.status = Some(status);
            }
            self.body = Some(response.into_body());
        }
    }

    /// The next whole message of the answer, or `None` once the call has ended.
    pub async fn read(&mut self) -> Option<Bytes> {
        self.headers().await;
        loop {
            if self.buffer.len() >= 5 {
                assert_eq!(self.buffer[0], 0, "compressed answers are not asked for");
                let len = u32::from_be_bytes(self.buffer[1..5].try_into().unwrap()) as usize;
                if self.buffer.len() >= 5 + len {
                    self.buffer.advance(5);
                    return Some(self.buffer.split_to(len).freeze());
                }
            }
            if self.status.is_some() {
                assert!(self.buffer.is_empty(), "a partial message before the end");
                return None;
            }
            let body = self.body.as_mut().expect("body");
            match body.data().await {
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    self.buffer.extend_from_slice(&chunk);
                }
                Some(Err(e)) => panic!("the answer stream broke: {e}"),
                None => {
                    let trailers = body.trailers().await.expect("trailers");
                    let trailers = trailers.expect("the server sent no trailers");
                    self.status =
                        Some(Status::from_header_map(&trailers).expect("grpc-status in trailers"));
                }
            }
        }
    }

    /// Reads to the end: every answer message, decoded, and the call's status.
    pub async fn finish<M: prost::Message + Default>(mut self) -> (Vec<M>, Status) {
        let mut answers = Vec::new();
        while let Some(message) = self.read().await {
            answers.push(M::decode(message).expect("an answer that decodes"));
        }
        (answers, self.status.take().expect("status"))
    }
}

/// `message` as one length-prefixed gRPC frame.
pub fn frame(message: &impl prost::Message) -> Vec<u8> {
    framed(&message.encode_to_vec())
}

/// `bytes` as one length-prefixed gRPC frame, whatever they are.
pub fn framed(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + bytes.len());
    out.push(0);
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

pub const RESERVE_STREAM: &str = "/boxoffice.v1.Reservations/ReserveStream";
pub const GET_AVAILABILITY: &str = "/boxoffice.v1.Availability/GetAvailability";
