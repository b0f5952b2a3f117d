//! Short and long polling: `GET {base}/{topic}/poll` and `GET {base}/{topic}/long-poll`.
//!
//! Each request is a fresh subscription from the client's cursor that reads
//! one batch and ends, so a poller costs nothing between requests. The items
//! are the JSON messages that WebSocket sends too, each event's framed once
//! and shared with every other transport that sends it.

use crate::auth;
use crate::channel::Channel;
use crate::cursor::Cursor;
use crate::history::{Delivery, Start};
use crate::meter::Transport;
use crate::params::{PollTag, Query, SubscribeRejection};
use crate::state::{ChannelState, RouteState};
use crate::stream::timer::after;
use crate::subscribe::{self, Subscribed};
use crate::wire;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The default batch limit of a poll answer, in items.
pub const DEFAULT_POLL_BATCH_LIMIT: usize = 100;
/// The default (and default maximum) time a long poll is held.
pub const DEFAULT_LONG_POLL_TIMEOUT: Duration = Duration::from_secs(25);

/// Settings of the short and long polling transports.
#[derive(Clone, Debug)]
pub struct PollConfig {
    pub(crate) batch_limit: usize,
    pub(crate) max_timeout: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            batch_limit: DEFAULT_POLL_BATCH_LIMIT,
            max_timeout: DEFAULT_LONG_POLL_TIMEOUT,
        }
    }
}

impl PollConfig {
    /// The most items in one answer (default 100, at least 1); a larger
    /// `?limit=` is clamped to it.
    pub fn batch_limit(mut self, items: usize) -> Self {
        self.batch_limit = items.max(1);
        self
    }

    /// How long a long poll is held at most, and by default, when nothing
    /// arrives (default 25 s); a larger `?timeout=` is clamped to it. Keep it
    /// below the idle timeout of any proxy in front of the server.
    pub fn long_poll_timeout(mut self, max: Duration) -> Self {
        self.max_timeout = max;
        self
    }
}

/// Why a poll was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollRejection {
    /// The common subscription parameters are wrong.
    #[error(transparent)]
    Subscribe(#[from] SubscribeRejection),
    /// `limit` or `timeout` is not a whole number in range.
    #[error("invalid `{name}` `{value}`: expected {expected}")]
    Number {
        /// The parameter.
        name: &'static str,
        /// The value as given (possibly cut short).
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
}

impl IntoResponse for PollRejection {
    fn into_response(self) -> Response {
        match self {
            Self::Subscribe(rejection) => rejection.into_response(),
            number @ Self::Number { .. } => {
                (StatusCode::BAD_REQUEST, number.to_string()).into_response()
            }
        }
    }
}

const QUOTE_LIMIT: usize = 32;

pub(crate) fn number(
    query: &Query<'_>,
    name: &'static str,
    expected: &'static str,
    min: u64,
) -> Result<Option<u64>, PollRejection> {
    let Some(text) = query.get(name)? else {
        return Ok(None);
    };
    match text.parse::<u64>() {
        Ok(n) if n >= min && text.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
        // Only overflow is left once the digits are checked: treat it as huge.
        Err(_) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(u64::MAX))
        }
        _ => Err(PollRejection::Number {
            name,
            value: text.chars().take(QUOTE_LIMIT).collect(),
            expected,
        }),
    }
}

/// Which of the two routes is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Short,
    Long,
}

/// `GET {base}/{topic}/poll`.
pub(crate) async fn short_handler<C: Channel>(
    State(route): State<Arc<RouteState<C, PollConfig>>>,
    Path(topic): Path<String>,
    request: Request,
) -> Response {
    handle(&route, &topic, request, Mode::Short).await
}

/// `GET {base}/{topic}/long-poll`.
pub(crate) async fn long_handler<C: Channel>(
    State(route): State<Arc<RouteState<C, PollConfig>>>,
    Path(topic): Path<String>,
    request: Request,
) -> Response {
    handle(&route, &topic, request, Mode::Long).await
}

/// Not an async fn: another layer would keep its own slot for the request
/// for as long as a long poll is held.
fn handle<'a, C: Channel>(
    route: &'a RouteState<C, PollConfig>,
    topic: &'a str,
    request: Request,
    mode: Mode,
) -> impl Future<Output = Response> + 'a {
    let config = &route.config;
    let channel = &route.channel;
    let own = move |_: &mut Parts, query: &Query<'_>| ask(config, query, mode);
    let answer = |subscribed| answer(channel, subscribed);
    let transport = match mode {
        Mode::Short => Transport::Poll,
        Mode::Long => Transport::LongPoll,
    };
    subscribe::subscribe(channel, transport, topic, request, own, answer)
}

/// A poll's own parameters, validated before it is held.
struct Ask {
    limit: usize,
    wait: Duration,
}

fn ask(config: &PollConfig, query: &Query<'_>, mode: Mode) -> Result<Ask, PollRejection> {
    let limit = number(query, "limit", "a whole number of items, at least 1", 1)?
        .map_or(config.batch_limit, |n| {
            usize::try_from(n).map_or(config.batch_limit, |n| n.min(config.batch_limit))
        });
    let wait = match mode {
        Mode::Short => Duration::ZERO,
        Mode::Long => number(query, "timeout", "a whole number of seconds", 0)?
            .map_or(config.max_timeout, |s| {
                Duration::from_secs(s).min(config.max_timeout)
            }),
    };
    Ok(Ask { limit, wait })
}

/// Not an async fn: its future would keep the whole `Subscribed` beside
/// the parts taken from it, for as long as a long poll is held.
fn answer<C: Channel>(
    channel: &ChannelState<C>,
    subscribed: Subscribed<Ask>,
) -> impl Future<Output = Response> + '_ {
    let Subscribed {
        subscription,
        admission,
        start,
        tag,
        expiry,
        params: Ask { limit, wait },
    } = subscribed;
    async move {
        // The poll counts as a connection until it is answered.
        let _admission = admission;
        let mut subscription = subscription;
        // One item more than the limit tells whether the answer is cut short.
        let probe = limit.saturating_add(1);
        let mut items = Vec::new();
        if start != Start::Now {
            subscription.fill(&mut items, probe);
        }
        let mut waited = false;
        if items.is_empty() && !wait.is_zero() {
            tracing::trace!(?wait, "holding a long poll");
            waited = true;
            // Cancel-safe: a timeout loses nothing, the position stays exact.
            let shutdown = channel.hub.shutdown_signal();
            let next = async {
                tokio::select! {
                    _ = subscription.next_batch(&mut items, probe) => {}
                    // Shutting down: answer now with what there is.
                    () = shutdown.wait() => {}
                }
            };
            // Held until the timeout, or the authorization's end if sooner
            // (then refused below): one timer either way.
            let until = after(Instant::now(), wait);
            let until = expiry.map_or(until, |at| until.min(at));
            let _ = tokio::time::timeout_at(until, next).await;
            if expiry.is_some_and(|at| Instant::now() >= at) {
                // Nothing taken at or after the expiry is answered: the client
                // asks again from its `after` with fresh credentials.
                tracing::debug!("a held long poll's authorization expired");
                channel.hub.meter().count_expiry_cut();
                return auth::expired();
            }
        }
        let more = items.len() > limit;
        if let Some(look_ahead) = items.get(limit) {
            subscription.untake(look_ahead);
        }
        items.truncate(limit);
        let cursor = match (more, items.last()) {
            (true, Some(last)) => last.cursor(),
            _ => subscription.position(),
        };
        // The tag identifies this answer to this URL: a request that holds it
        // already (If-None-Match) gets 304, as HTTP caches expect. A held long
        // poll answered after its wait is new to the client either way.
        let this = PollTag {
            cursor,
            gap: match items.first() {
                Some(Delivery::Gap(gap)) => Some(gap.to),
                _ => None,
            },
            more,
        };
        let etag = this.header();
        if !waited && tag == Some(this) {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            if let Some(etag) = etag {
                headers.insert(header::ETAG, etag);
            }
            return response;
        }
        let body = answer_body(cursor, more, &items);
        // Counted when handed over: a poll's answer is one small write.
        channel.hub.meter().count_written(body.len());
        let mut response = (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            body,
        )
            .into_response();
        if let Some(etag) = etag {
            response.headers_mut().insert(header::ETAG, etag);
        }
        response
    }
}

/// `{"cursor":"<c>","more":<bool>,"events":[<item>,…]}`
pub(crate) fn answer_body(cursor: Cursor, more: bool, items: &[Delivery]) -> Bytes {
    let frames: Vec<Bytes> = items.iter().map(wire::delivery_message).collect();
    let size = frames.iter().map(|f| f.len() + 1).sum::<usize>() + 80;
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(b"{\"cursor\":\"");
    cursor.put(&mut out);
    out.put_slice(if more {
        b"\",\"more\":true,\"events\":["
    } else {
        b"\",\"more\":false,\"events\":["
    });
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(frame);
    }
    out.put_slice(b"]}");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Outgoing, TopicLog};

    #[test]
    fn answers_are_the_websocket_items_in_an_envelope() {
        let log = Arc::new(TopicLog::new(3, 2));
        let mut sub = log.subscribe(Start::After(Cursor::new(3, 0))).unwrap();
        for n in 1..=3 {
            log.append(Outgoing {
                name: "tick",
                kind_index: 0,
                data: Bytes::from(format!("{{\"n\":{n}}}")),
            });
        }
        let mut items = Vec::new();
        sub.fill(&mut items, 10);
        assert_eq!(
            answer_body(sub.position(), false, &items),
            concat!(
                r#"{"cursor":"3-3","more":false,"events":["#,
                r#"{"cursor":"3-1","event":"push.gap","data":{"from":"3-0","to":"3-1","missed":1}},"#,
                r#"{"cursor":"3-2","event":"tick","data":{"n":2}},"#,
                r#"{"cursor":"3-3","event":"tick","data":{"n":3}}]}"#,
            )
        );
        assert_eq!(
            answer_body(Cursor::new(3, 3), true, &[]),
            r#"{"cursor":"3-3","more":true,"events":[]}"#
        );
    }

    /// A held long poll keeps its handler's whole future: each async layer
    /// between the handler and the hold adds a slot for the request. The
    /// budget is this toolchain's figure at the refactor that wrote the
    /// subscribe step once (2,248 bytes; 2,296 before it), plus the
    /// authorization's expiry carried from the hook to the answer (2,296
    /// bytes before it, 2,344 with it), plus the subscription's handle on
    /// its hub's delivery counts (8 bytes, in two slots: 2,360), plus
    /// whether the subscription is in a round of paced publishing
    /// (`HubConfig::backpressure`; a `bool`, 8 bytes with its alignment: 2,368).
    #[test]
    fn a_held_long_poll_keeps_a_small_future() {
        use crate::fuzz::Probe;
        let channel = Arc::new(ChannelState {
            hub: crate::hub::Hub::<Probe>::new(),
            origins: Default::default(),
            limits: Default::default(),
            authorize: None,
        });
        let route = RouteState::new(&channel, PollConfig::default());
        let request = Request::new(axum::body::Body::empty());
        let held = long_handler::<Probe>(State(route), Path("t".into()), request);
        let size = std::mem::size_of_val(&held);
        assert!(size <= 2368, "a held long poll's future is {size} bytes");
    }

    #[test]
    fn parses_numbers() {
        let q = |s: &'static str| number(&Query::new(Some(s)), "limit", "n", 1);
        assert_eq!(q("limit=7").unwrap(), Some(7));
        assert_eq!(q("other=7").unwrap(), None);
        assert_eq!(q("limit=99999999999999999999999").unwrap(), Some(u64::MAX));
        for bad in [
            "limit=0",
            "limit=-1",
            "limit=+1",
            "limit=",
            "limit=1.5",
            "limit=1&limit=2",
        ] {
            assert!(q(bad).is_err(), "{bad}");
        }
    }
}
