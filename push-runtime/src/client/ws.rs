//! The WebSocket transport: the connection and its messages.

use super::config::ClientConfig;
use super::error::{
    ClientError, EXPIRED_CLOSE, body_message, connect_failure, describe, from_status, quote,
};
use super::frame::{Read, parse_envelope};
use axum::http::header::HeaderMap;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

/// How a `wss://` handshake is secured: the client's rustls configuration.
#[cfg(feature = "rustls")]
pub(crate) use tokio_tungstenite::Connector;

/// Without TLS there is no connector to give.
#[cfg(not(feature = "rustls"))]
pub(crate) enum Connector {}

/// An open WebSocket being read.
#[derive(Debug)]
pub(crate) struct WsConnection {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    idle_timeout: Option<Duration>,
    max: usize,
}

impl WsConnection {
    /// Performs the handshake, sending `headers` with it; `connector` for
    /// `wss://`.
    pub(crate) async fn open(
        url: Url,
        headers: &HeaderMap,
        connector: Option<Connector>,
        config: &ClientConfig,
    ) -> Result<Self, ClientError> {
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(config.max_item_size))
            .max_frame_size(Some(config.max_item_size));
        let mut request =
            url.as_str()
                .into_client_request()
                .map_err(|error| ClientError::InvalidBaseUrl {
                    url: quote(url.as_str(), 256),
                    reason: if matches!(error, WsError::Url(_)) {
                        "not a websocket url"
                    } else {
                        "no websocket request for it"
                    },
                })?;
        for (name, value) in headers {
            request.headers_mut().append(name, value.clone());
        }
        #[cfg(feature = "rustls")]
        let handshake = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(ws_config),
            true,
            connector,
        );
        #[cfg(not(feature = "rustls"))]
        let handshake = {
            let _: Option<Connector> = connector;
            tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true)
        };
        let socket = match tokio::time::timeout(config.connect_timeout, handshake).await {
            Err(_) => {
                return Err(ClientError::Connect {
                    reason: format!("no handshake within {:?}", config.connect_timeout),
                });
            }
            Ok(Err(WsError::Http(response))) => {
                let status = response.status();
                let message = match response.body().as_deref().map(body_message) {
                    Some(message) if !message.is_empty() => message,
                    _ => status.to_string(),
                };
                return Err(from_status(status.as_u16(), message));
            }
            Ok(Err(error)) => return Err(connect_failure(&error)),
            Ok(Ok((socket, _response))) => socket,
        };
        Ok(Self {
            socket,
            idle_timeout: config.idle_timeout,
            max: config.max_item_size,
        })
    }

    /// The next frame, or why the connection is over.
    ///
    /// Reading is what answers the server's pings: tungstenite queues the
    /// pong and flushes it on the next read.
    pub(crate) async fn next(&mut self) -> Result<Read, ClientError> {
        loop {
            let next = self.socket.next();
            let message = match self.idle_timeout {
                Some(limit) => tokio::time::timeout(limit, next).await.map_err(|_| {
                    ClientError::Disconnected {
                        reason: format!("nothing received for {limit:?}"),
                    }
                })?,
                None => next.await,
            };
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Ok(match parse_envelope(text.as_str()) {
                        Ok(frame) => Read::Frame(frame),
                        Err(error) => Read::Skipped(error),
                    });
                }
                Some(Ok(Message::Binary(bytes))) => {
                    return Ok(Read::Skipped(ClientError::Malformed {
                        reason: format!("binary websocket message of {} bytes", bytes.len()),
                    }));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    return Err(match frame {
                        // The server's expiry, when its `push.expired` did not
                        // come first: the subscription resumes from its position.
                        Some(frame) if u16::from(frame.code) == EXPIRED_CLOSE => {
                            ClientError::Expired { cursor: None }
                        }
                        Some(frame) => ClientError::Closed {
                            code: frame.code.into(),
                            reason: quote(&frame.reason, 256),
                        },
                        None => ClientError::Closed {
                            code: 1005,
                            reason: "no close code".to_owned(),
                        },
                    });
                }
                Some(Err(WsError::Capacity(error))) => {
                    tracing::warn!(%error, limit = self.max, "websocket message over the limit");
                    return Err(ClientError::TooLarge {
                        limit: self.max,
                        cursor: None,
                    });
                }
                Some(Err(error)) => {
                    return Err(ClientError::Disconnected {
                        reason: describe(&error),
                    });
                }
                None => {
                    return Err(ClientError::Disconnected {
                        reason: "the websocket ended".to_owned(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::Frame;
    use super::*;

    #[test]
    fn parses_the_envelope_keeping_data_verbatim() {
        let frame = parse_envelope(
            r#"{"cursor":"5-1","event":"message","data":{"type":"message","n":1.50}}"#,
        );
        assert_eq!(
            frame.ok(),
            Some(Frame {
                cursor: Some("5-1".to_owned()),
                event: "message".to_owned(),
                data: r#"{"type":"message","n":1.50}"#.to_owned(),
            })
        );
    }

    #[test]
    fn escaped_strings_and_extra_keys_are_fine() {
        let frame = parse_envelope(r#"{"cursor":"5-1","event":"a\u002eb","data":"x","more":1}"#);
        assert_eq!(frame.map(|frame| frame.event).ok(), Some("a.b".to_owned()));
    }

    #[test]
    fn garbage_is_malformed_with_a_bounded_message() {
        let long = "x".repeat(100_000);
        for text in [
            "",
            "null",
            "[]",
            "{\"cursor\":1}",
            "{\"event\":\"a\"}",
            long.as_str(),
        ] {
            match parse_envelope(text) {
                Err(ClientError::Malformed { reason }) => assert!(reason.len() < 400, "{reason}"),
                other => panic!("{text:.20}: {other:?}"),
            }
        }
    }
}
