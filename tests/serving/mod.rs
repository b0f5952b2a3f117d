//! Shared by tests/http2.rs and tests/slow.rs: a `push_runtime::serve::Server`
//! on 127.0.0.1:0 (plain or TLS with a certificate made here), clients that
//! trust it, and an HTTP/2 stream as a byte stream (for WebSocket over
//! HTTP/2).
#![allow(dead_code)]

use bytes::Bytes;
use push_runtime::serve::{ConnectionStats, ServeConfig, Server, TlsConfig};
use push_runtime::{ChannelRouter, Hub, PublishRequest, Refusal};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::channel::TestEvent;

/// The name in the test certificate; clients resolve it to 127.0.0.1.
pub const NAME: &str = "localhost";

/// A certificate authority made for one test, and a server certificate it signed.
pub struct TestPki {
    pub ca_pem: String,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    pub fn new() -> Self {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "push test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let params = rcgen::CertificateParams::new(vec![NAME.to_owned()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        Self {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn server_config(&self) -> TlsConfig {
        TlsConfig::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes()).unwrap()
    }

    /// A rustls client configuration trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A TLS connection to `addr` as [`NAME`], offering `alpn`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.client_config(alpn)));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(NAME).unwrap();
        connector.connect(name, tcp).await.expect("TLS handshake")
    }
}

/// A running server and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub hub: Hub<TestEvent>,
    pub stats: ConnectionStats,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// The test channel's routes (publish open to all) served with
    /// `config`, over TLS when `tls` is given. The shutdown signal also
    /// shuts the hub down, as a real server's should.
    pub async fn start(config: ServeConfig, tls: Option<TlsConfig>) -> Self {
        let hub = Hub::<TestEvent>::new();
        let app: axum::Router = ChannelRouter::new(hub.clone())
            .publish(
                |request: PublishRequest<TestEvent>| async move { Ok::<_, Refusal>(request.event) },
            )
            .into_router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut server = Server::new(listener, app).config(config);
        if let Some(tls) = tls {
            server = server.tls(tls);
        }
        let addr = server.local_addr().unwrap();
        let stats = server.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let on_stop = hub.clone();
        let task = tokio::spawn(server.run_until(async move {
            let _ = stopped.await;
            on_stop.shutdown();
        }));
        Self {
            addr,
            hub,
            stats,
            stop: Some(stop),
            task,
        }
    }

    /// Signals the shutdown and waits until the server returned.
    pub async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("the server task");
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn https(&self, path: &str) -> String {
        format!("https://{NAME}:{}{path}", self.addr.port())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/2 stream as a byte stream, for a WebSocket over HTTP/2: what
/// is written goes out as DATA frames, DATA frames received are read.
pub struct H2Stream {
    pub send: h2::SendStream<Bytes>,
    pub recv: h2::RecvStream,
    pending: Bytes,
}

impl H2Stream {
    pub fn new(send: h2::SendStream<Bytes>, recv: h2::RecvStream) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
        }
    }
}

fn h2_error(error: h2::Error) -> io::Error {
    io::Error::other(error)
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.pending = data;
                }
                Some(Err(error)) => return Poll::Ready(Err(h2_error(error))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        let chunk = self.pending.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // h2 buffers what exceeds the window: fine for a test's few frames.
        self.send
            .send_data(Bytes::copy_from_slice(buf), false)
            .map_err(h2_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = self.send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}

type Body = axum::body::Body;

/// One client connection, HTTP/1.1 or HTTP/2, plain or TLS.
pub enum HttpClient {
    Http1 {
        sender: hyper::client::conn::http1::SendRequest<Body>,
        authority: String,
    },
    Http2 {
        sender: hyper::client::conn::http2::SendRequest<Body>,
        scheme: &'static str,
        authority: String,
    },
}

impl HttpClient {
    /// Over TLS, offering `alpn`, speaking what the server picked (HTTP/2
    /// for `h2`, else HTTP/1.1).
    pub async fn tls(pki: &TestPki, addr: SocketAddr, alpn: &[&[u8]]) -> Self {
        let tls = pki.connect(addr, alpn).await;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let authority = format!("{NAME}:{}", addr.port());
        Self::over(tls, h2, "https", authority).await
    }

    /// HTTP/2 with prior knowledge over plain TCP (h2c).
    pub async fn h2c(addr: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        Self::over(tcp, true, "http", addr.to_string()).await
    }

    /// HTTP/1.1 over plain TCP.
    pub async fn http1(addr: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        Self::over(tcp, false, "http", addr.to_string()).await
    }

    async fn over<I>(io: I, h2: bool, scheme: &'static str, authority: String) -> Self
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = hyper_util::rt::TokioIo::new(io);
        if h2 {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .expect("HTTP/2 handshake");
            tokio::spawn(conn);
            Self::Http2 {
                sender,
                scheme,
                authority,
            }
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("HTTP/1.1 handshake");
            tokio::spawn(conn.with_upgrades());
            Self::Http1 { sender, authority }
        }
    }

    /// Another handle on the same HTTP/2 connection (a new stream per request).
    pub fn another_stream(&self) -> Self {
        match self {
            Self::Http2 {
                sender,
                scheme,
                authority,
            } => Self::Http2 {
                sender: sender.clone(),
                scheme,
                authority: authority.clone(),
            },
            Self::Http1 { .. } => panic!("an HTTP/1.1 connection carries one request at a time"),
        }
    }

    /// Sends a request: `GET` without a body, `POST` of JSON with one. Over
    /// HTTP/2 the authority goes in the URI (`:authority`), and no `Host`.
    pub async fn send(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        json: Option<&str>,
    ) -> http::Response<hyper::body::Incoming> {
        let mut request = http::Request::builder();
        request = match json {
            Some(_) => request
                .method("POST")
                .header("content-type", "application/json"),
            None => request.method("GET"),
        };
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = json.map_or_else(Body::empty, |json| Body::from(json.to_owned()));
        let sent = match self {
            Self::Http1 { sender, authority } => {
                let request = request
                    .uri(path)
                    .header("host", authority.as_str())
                    .body(body)
                    .unwrap();
                sender.ready().await.expect("connection ready");
                sender.send_request(request).await
            }
            Self::Http2 {
                sender,
                scheme,
                authority,
            } => {
                let request = request
                    .uri(format!("{scheme}://{authority}{path}"))
                    .body(body)
                    .unwrap();
                sender.ready().await.expect("connection ready");
                sender.send_request(request).await
            }
        };
        tokio::time::timeout(crate::support::PATIENCE, async { sent })
            .await
            .expect("answered in time")
            .expect("response")
    }

    /// Opens the SSE stream at `path` and reads until its `push.ready`.
    pub async fn sse_ready(&mut self, path: &str) -> BodyReader {
        let mut sse = BodyReader::new(self.send(path, &[], None).await);
        sse.until("push.ready").await;
        sse
    }

    /// As [`send`](Self::send), then the body, which must end.
    pub async fn text(&mut self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let response = self.send(path, headers, None).await;
        let status = response.status().as_u16();
        (status, BodyReader::new(response).read_to_end().await)
    }
}

/// Reads a response body as text, piece by piece.
pub struct BodyReader {
    body: axum::body::BodyDataStream,
    pub text: String,
}

impl BodyReader {
    pub fn new(response: http::Response<hyper::body::Incoming>) -> Self {
        Self {
            body: Body::new(response.into_body()).into_data_stream(),
            text: String::new(),
        }
    }

    /// Reads until the text holds `needle`; panics if the body ends first
    /// or nothing comes within the test's patience.
    pub async fn until(&mut self, needle: &str) {
        use futures_util::StreamExt;
        while !self.text.contains(needle) {
            let chunk = tokio::time::timeout(crate::support::PATIENCE, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in time; got {:?}", self.text));
            match chunk {
                Some(Ok(bytes)) => self.text.push_str(&String::from_utf8_lossy(&bytes)),
                other => panic!("body ended ({other:?}) without {needle:?}: {:?}", self.text),
            }
        }
    }

    /// Reads to the end of the body.
    pub async fn read_to_end(mut self) -> String {
        use futures_util::StreamExt;
        loop {
            let chunk = tokio::time::timeout(crate::support::PATIENCE, self.body.next())
                .await
                .expect("the body ends in time");
            match chunk {
                Some(Ok(bytes)) => self.text.push_str(&String::from_utf8_lossy(&bytes)),
                Some(Err(error)) => panic!("body failed: {error}; got {:?}", self.text),
                None => return self.text,
            }
        }
    }
}

/// Opens a WebSocket over HTTP/2 (RFC 8441): an extended `CONNECT` with
/// `:protocol = websocket` on `io`, then WebSocket frames on that stream.
/// Returns the response status and, if `200`, the socket.
pub async fn websocket_over_h2<I>(
    io: I,
    uri: &str,
    headers: &[(&str, &str)],
) -> (
    u16,
    Option<tokio_tungstenite::WebSocketStream<H2Stream>>,
    h2::client::SendRequest<Bytes>,
)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // The server's SETTINGS say whether it takes extended CONNECT: they
    // have arrived once a first request is answered.
    let mut sender = sender.ready().await.expect("h2 ready");
    let base = uri.split_once("/t/").map_or(uri, |(base, _)| base);
    let probe = http::Request::get(format!("{base}/")).body(()).unwrap();
    let (probe, _) = sender.send_request(probe, true).expect("probe sent");
    tokio::time::timeout(crate::support::PATIENCE, probe)
        .await
        .expect("probe answered in time")
        .expect("probe response");
    let mut sender = sender.ready().await.expect("h2 ready");
    assert!(
        sender.is_extended_connect_protocol_enabled(),
        "the server does not announce SETTINGS_ENABLE_CONNECT_PROTOCOL"
    );
    let mut request = http::Request::builder()
        .method("CONNECT")
        .uri(uri)
        .header("sec-websocket-version", "13");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(()).unwrap();
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (response, send) = sender.send_request(request, false).expect("CONNECT sent");
    let response = tokio::time::timeout(crate::support::PATIENCE, response)
        .await
        .expect("CONNECT answered in time")
        .expect("CONNECT response");
    let status = response.status().as_u16();
    if status != 200 {
        return (status, None, sender);
    }
    let stream = H2Stream::new(send, response.into_body());
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        stream,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    (status, Some(ws), sender)
}
