//! What the plain-HTTP transports (SSE, polling, forever frame) share: sending
//! a request under a deadline, turning an error status into a typed error,
//! checking the content type, reading a body with a bound.

use super::config::ClientConfig;
use super::error::{ClientError, body_message, connect_failure, describe, from_status, quote};
use axum::http::header::{self, HeaderMap};
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use url::Url;

/// The most of an error response's body read for its message.
const ERROR_BODY_LIMIT: usize = 4096;

/// A response whose body is read as it comes.
pub(crate) type Response = hyper::Response<Incoming>;

#[cfg(feature = "rustls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "rustls"))]
type Connector = HttpConnector;

/// The plain-HTTP transports' connection pool: HTTP/1.1, TLS for `https`
/// with the client's one rustls configuration, no proxy (hyper reads none
/// from the environment).
#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    /// Shared, and kept out of line: hyper's client is some 500 bytes.
    pool: std::sync::Arc<Pool<Connector, Empty<Bytes>>>,
}

impl HttpClient {
    /// A pool whose TCP connections are established within `connect_timeout`.
    pub(crate) fn new(
        connect_timeout: Duration,
        #[cfg(feature = "rustls")] tls: rustls::ClientConfig,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        #[cfg(feature = "rustls")]
        let connector = {
            http.enforce_http(false);
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http)
        };
        #[cfg(not(feature = "rustls"))]
        let connector = http;
        Self {
            pool: std::sync::Arc::new(Pool::builder(TokioExecutor::new()).build(connector)),
        }
    }

    /// `GET url` with `headers`: the response head within `timeout`; an
    /// error status becomes its typed error (with the server's message),
    /// and `304 Not Modified` passes, as a success.
    pub(crate) async fn get(
        &self,
        url: &Url,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let mut request = Request::get(url.as_str())
            .body(Empty::new())
            .map_err(|error| ClientError::InvalidBaseUrl {
                url: quote(url.as_str(), 256),
                reason: if error.is::<axum::http::uri::InvalidUri>() {
                    "not a valid request uri"
                } else {
                    "no request for it"
                },
            })?;
        *request.headers_mut() = headers;
        let mut response = match tokio::time::timeout(timeout, self.pool.request(request)).await {
            Err(_) => {
                return Err(ClientError::Connect {
                    reason: format!("no response within {timeout:?}"),
                });
            }
            Ok(Err(error)) => return Err(connect_failure(&error)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        let body = read_error_body(&mut response, timeout).await;
        let message = match body_message(&body) {
            message if message.is_empty() => status.to_string(),
            message => message,
        };
        Err(from_status(status.as_u16(), message))
    }
}

/// The next chunk of data of a body: `None` at its end (trailers are
/// skipped).
async fn next_data(body: &mut Incoming) -> Option<Result<Bytes, hyper::Error>> {
    loop {
        match body.frame().await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(error) => return Some(Err(error)),
        }
    }
}

/// Whether the response's content type is `expected` (a lowercase
/// `type/subtype`, parameters allowed after it); if not, the error saying so.
pub(crate) fn expect_content_type(response: &Response, expected: &str) -> Result<(), ClientError> {
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        return Ok(());
    }
    Err(ClientError::UnexpectedResponse {
        reason: format!(
            "status {} with content type `{}`, expected `{expected}`",
            response.status(),
            quote(content_type, 64)
        ),
    })
}

/// The whole body, refusing more than `limit` bytes. The caller bounds the time.
pub(crate) async fn read_body(
    response: &mut Response,
    limit: usize,
) -> Result<Vec<u8>, ClientError> {
    let mut body = Vec::new();
    loop {
        match next_data(response.body_mut()).await.transpose() {
            Ok(Some(chunk)) if body.len() + chunk.len() > limit => {
                return Err(ClientError::TooLarge {
                    limit,
                    cursor: None,
                });
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok(body),
            Err(error) => {
                return Err(ClientError::Disconnected {
                    reason: describe(&error),
                });
            }
        }
    }
}

/// At most [`ERROR_BODY_LIMIT`] bytes of an error response's body.
async fn read_error_body(response: &mut Response, timeout: Duration) -> Vec<u8> {
    let mut body = Vec::new();
    let read = async {
        while body.len() < ERROR_BODY_LIMIT {
            match next_data(response.body_mut()).await {
                Some(Ok(chunk)) => body.extend_from_slice(&chunk),
                None | Some(Err(_)) => break,
            }
        }
    };
    // The body is only for the message: a slow or broken one leaves it short.
    let _ = tokio::time::timeout(timeout, read).await;
    body.truncate(ERROR_BODY_LIMIT);
    body
}

/// The body of a streaming response (SSE, forever frame), read chunk by
/// chunk with the idle timeout every streaming transport applies.
pub(crate) struct BodyReader {
    body: Incoming,
    idle_timeout: Option<Duration>,
    /// Why the connection is over when the server ends the body.
    ended: &'static str,
}

impl BodyReader {
    /// Sends `GET url` with `headers` accepting `content_type`, checks the
    /// response head and returns its body.
    pub(crate) async fn open(
        client: &HttpClient,
        url: Url,
        headers: &HeaderMap,
        config: &ClientConfig,
        content_type: &'static str,
        ended: &'static str,
    ) -> Result<Self, ClientError> {
        let mut headers = headers.clone();
        headers.insert(
            header::ACCEPT,
            header::HeaderValue::from_static(content_type),
        );
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        let response = client.get(&url, headers, config.connect_timeout).await?;
        expect_content_type(&response, content_type)?;
        Ok(Self {
            body: response.into_body(),
            idle_timeout: config.idle_timeout,
            ended,
        })
    }

    /// The next chunk, or why the connection is over.
    pub(crate) async fn next_chunk(&mut self) -> Result<Bytes, ClientError> {
        let next = next_data(&mut self.body);
        let chunk =
            match self.idle_timeout {
                Some(limit) => tokio::time::timeout(limit, next).await.map_err(|_| {
                    ClientError::Disconnected {
                        reason: format!("nothing received for {limit:?}"),
                    }
                })?,
                None => next.await,
            };
        match chunk {
            Some(Ok(chunk)) => Ok(chunk),
            Some(Err(error)) => Err(ClientError::Disconnected {
                reason: describe(&error),
            }),
            None => Err(ClientError::Disconnected {
                reason: self.ended.to_owned(),
            }),
        }
    }
}
