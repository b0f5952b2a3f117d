//! What the plain-HTTP transports (SSE, polling, forever frame) share: sending
//! a request under a deadline, turning an error status into a typed error,
//! checking the content type, reading a body with a bound.

use super::config::ClientConfig;
use super::error::{ClientError, body_message, connect_failure, describe, from_status, quote};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header;
use std::pin::Pin;
use std::time::Duration;
use url::Url;

/// The most of an error response's body read for its message.
const ERROR_BODY_LIMIT: usize = 4096;

/// Sends `request` and waits for the response head for at most `timeout`;
/// an error status becomes its typed error (with the server's message), and
/// `304 Not Modified` passes, as a success.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, ClientError> {
    let mut response = match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => {
            return Err(ClientError::Connect {
                reason: format!("no response within {timeout:?}"),
            });
        }
        Ok(Err(error)) => return Err(connect_failure(&error)),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status.is_success() || status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(response);
    }
    let body = read_error_body(&mut response, timeout).await;
    let message = match body_message(&body) {
        message if message.is_empty() => status.to_string(),
        message => message,
    };
    Err(from_status(status.as_u16(), message))
}

/// Whether the response's content type is `expected` (a lowercase
/// `type/subtype`, parameters allowed after it); if not, the error saying so.
pub(crate) fn expect_content_type(
    response: &reqwest::Response,
    expected: &str,
) -> Result<(), ClientError> {
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
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ClientError> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > limit => {
                return Err(ClientError::TooLarge { limit });
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
async fn read_error_body(response: &mut reqwest::Response, timeout: Duration) -> Vec<u8> {
    let mut body = Vec::new();
    let read = async {
        while body.len() < ERROR_BODY_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
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
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    idle_timeout: Option<Duration>,
    /// Why the connection is over when the server ends the body.
    ended: &'static str,
}

impl BodyReader {
    /// Sends `GET url` with `headers` accepting `content_type`, checks the
    /// response head and returns its body.
    pub(crate) async fn open(
        client: &reqwest::Client,
        url: Url,
        headers: &header::HeaderMap,
        config: &ClientConfig,
        content_type: &str,
        ended: &'static str,
    ) -> Result<Self, ClientError> {
        let request = client
            .get(url)
            .headers(headers.clone())
            .header(header::ACCEPT, content_type)
            .header(header::CACHE_CONTROL, "no-store");
        let response = send(request, config.connect_timeout).await?;
        expect_content_type(&response, content_type)?;
        Ok(Self {
            body: Box::pin(response.bytes_stream()),
            idle_timeout: config.idle_timeout,
            ended,
        })
    }

    /// The next chunk, or why the connection is over.
    pub(crate) async fn next_chunk(&mut self) -> Result<Bytes, ClientError> {
        let next = self.body.next();
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
