//! The forever frame: `GET {base}/{topic}/iframe`.
//!
//! An HTML document that never finishes loading (until a size or age limit);
//! each item is a `<script>` element handing the WebSocket message object to
//! the embedding page with `postMessage`. The target origin comes from the
//! server's configuration only, never from the request's headers.

use crate::channel::Channel;
use crate::cursor::Cursor;
use crate::history::{Delivery, EncodedEvent, FrameSlot, Framing, Subscription};
use crate::meter::{Meter, Transport};
use crate::origin::{InvalidOrigin, OriginPolicy, parse_origin};
use crate::params::{Query, SubscribeRejection};
use crate::shutdown::{Shutdown, ShutdownWaiter};
use crate::state::{ChannelState, RouteState};
use crate::stream::batch::clear_batch;
use crate::stream::timer::after;
use crate::stream::{self, Body, Chunks, Expiry, Next, Timer};
use crate::subscribe::{self, Subscribed};
use crate::wire;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// Settings of the forever-frame transport.
#[derive(Clone, Debug)]
pub struct IframeConfig {
    allowed_origins: Vec<String>,
    pub(crate) padding: usize,
    pub(crate) heartbeat: Duration,
    pub(crate) max_bytes: usize,
    pub(crate) max_duration: Duration,
    pub(crate) max_batch: usize,
}

impl Default for IframeConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            padding: 1024,
            heartbeat: Duration::from_secs(15),
            max_bytes: 256 * 1024,
            max_duration: Duration::from_secs(60),
            max_batch: 256,
        }
    }
}

impl IframeConfig {
    /// The room a document keeps for items after its prelude, at least
    /// (256 bytes): see [`IframeConfig::max_bytes`]. The item that reaches
    /// the limit is written whole, so any room lets a document carry items.
    pub const MIN_ITEM_ROOM: usize = 256;

    /// The origins of the pages allowed to embed the frame and receive its
    /// messages, each `scheme://host[:port]` (or `*`, which allows any page
    /// to read the stream: only for public data). Default: none, i.e. only
    /// pages of the server's own origin.
    ///
    /// These are added to the channel's one [`OriginPolicy`]
    /// ([`ChannelRouter::origins`](crate::ChannelRouter::origins), which is
    /// the place to set them): the frame's `postMessage` targets and
    /// `frame-ancestors` are the policy's list, so the same pages may use
    /// every transport.
    ///
    /// A request picks one with `?origin=`; a list of one is picked by default.
    /// The list also makes the `content-security-policy: frame-ancestors`.
    ///
    /// ```
    /// use push_runtime::IframeConfig;
    /// let config = IframeConfig::default()
    ///     .allowed_origins(["https://app.example", "http://localhost:8080"])
    ///     .expect("valid origins");
    /// assert!(IframeConfig::default().allowed_origins(["https://app.example/"]).is_err());
    /// # let _ = config;
    /// ```
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Result<Self, InvalidOrigin>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Vec::new();
        for origin in origins {
            let origin = parse_origin(origin.as_ref())?;
            if !list.contains(&origin) {
                list.push(origin);
            }
        }
        self.allowed_origins = list;
        Ok(self)
    }

    /// Bytes of padding in the prelude (default 1024), to get past the
    /// first-chunk buffering of browsers and proxies.
    pub fn padding(mut self, bytes: usize) -> Self {
        self.padding = bytes;
        self
    }

    /// How long the frame may stay silent before a heartbeat comment
    /// `<!---->` is sent (default 15 s).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(1));
        self
    }

    /// After how many body bytes the response ends with `push.end`
    /// (default 256 KiB), so that the browser can free the document.
    ///
    /// A document always has room for items: a limit below its prelude (the
    /// padding and the `<script>` head, about 1.2 KiB by default) plus
    /// [`IframeConfig::MIN_ITEM_ROOM`] is raised to that, so that no
    /// document ends right after `push.ready` with nothing in it.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// After how long the response ends with `push.end` (default 60 s).
    pub fn max_duration(mut self, duration: Duration) -> Self {
        self.max_duration = duration;
        self
    }

    /// The most items written to a frame in one chunk (default 256).
    pub fn max_batch(mut self, items: usize) -> Self {
        self.max_batch = items.max(1);
        self
    }

    /// The origins set with [`IframeConfig::allowed_origins`].
    pub(crate) fn allowed_origins_list(&self) -> &[String] {
        &self.allowed_origins
    }
}

/// The `postMessage` target for a request's `origin` parameter.
fn target(policy: &OriginPolicy, requested: Option<&str>) -> Result<Target, IframeRejection> {
    match (requested, policy.allowed()) {
        (None, [only]) => Ok(Target::Origin(only.clone())),
        (None, _) => Ok(Target::Own),
        (Some(requested), list) => list
            .iter()
            .find(|allowed| allowed.eq_ignore_ascii_case(requested))
            .map(|allowed| Target::Origin(allowed.clone()))
            .ok_or_else(|| IframeRejection::Origin(requested.chars().take(256).collect())),
    }
}

/// Where the frame's messages may go.
enum Target {
    /// `location.origin`: the page embedding the frame has the server's origin.
    Own,
    /// A configured origin (or `*`).
    Origin(String),
}

/// Why a forever frame was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IframeRejection {
    /// The common subscription parameters are wrong.
    #[error(transparent)]
    Subscribe(#[from] SubscribeRejection),
    /// `origin` names an origin that is not allowed.
    #[error("origin `{0}` is not allowed to embed this stream")]
    Origin(String),
}

impl IntoResponse for IframeRejection {
    fn into_response(self) -> Response {
        match self {
            Self::Subscribe(rejection) => rejection.into_response(),
            origin @ Self::Origin(_) => (StatusCode::FORBIDDEN, origin.to_string()).into_response(),
        }
    }
}

/// Copies a JSON text, escaping what could end a script element or a line
/// of JavaScript. These characters only occur inside JSON strings, where the
/// `\uXXXX` escapes mean the same. A raw line break (CR or LF) only occurs
/// outside strings, as whitespace: it is written as a space, so that an item
/// stays on one line.
fn put_escaped(out: &mut BytesMut, json: &[u8]) {
    let mut rest = json;
    while let Some(at) = rest
        .iter()
        .position(|&b| matches!(b, b'<' | b'>' | b'&' | b'\n' | b'\r' | 0xE2))
    {
        let (head, tail) = rest.split_at(at);
        out.put_slice(head);
        let (replacement, used) = escape(tail);
        out.put_slice(replacement);
        rest = tail.get(used..).unwrap_or_default();
    }
    out.put_slice(rest);
}

/// What to write for the start of `tail`, and how many bytes that replaces.
fn escape(tail: &[u8]) -> (&[u8], usize) {
    match tail {
        [b'<', ..] => (b"\\u003c", 1),
        [b'>', ..] => (b"\\u003e", 1),
        [b'&', ..] => (b"\\u0026", 1),
        [b'\n' | b'\r', ..] => (b" ", 1),
        [0xE2, 0x80, 0xA8, ..] => (b"\\u2028", 3),
        [0xE2, 0x80, 0xA9, ..] => (b"\\u2029", 3),
        _ => (tail.get(..1).unwrap_or_default(), 1),
    }
}

/// `<script>m(<escaped item>)</script>\n`
fn script(item: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(item.len() + 32);
    out.put_slice(b"<script>m(");
    put_escaped(&mut out, item);
    out.put_slice(b")</script>\n");
    out.freeze()
}

/// An event's `<script>` item, framed once per event and shared.
pub(crate) struct Script;

impl Framing for Script {
    type Frame = Bytes;
    const SLOT: FrameSlot = FrameSlot::new(2);

    fn frame(event: &EncodedEvent) -> Bytes {
        script(&event.frame::<wire::Message>())
    }
}

pub(crate) fn delivery_script(delivery: &Delivery) -> Bytes {
    match delivery {
        Delivery::Event(event) => event.frame::<Script>(),
        Delivery::Gap(_) => script(&wire::delivery_message(delivery)),
    }
}

fn control_script(cursor: Cursor, name: &str) -> Bytes {
    script(&wire::control_message(cursor, name))
}

/// The document head, the padding, the `m()` helper and `push.ready`.
fn prelude(target: &Target, padding: usize, ready: Cursor) -> Bytes {
    let mut out = BytesMut::with_capacity(padding + 512);
    out.put_slice(
        b"<!doctype html><html><head><meta charset=\"utf-8\"><title>push</title></head><body>\n<!--",
    );
    out.put_bytes(b' ', padding);
    out.put_slice(b"-->\n<script>\"use strict\";var t=");
    match target {
        Target::Own => out.put_slice(b"location.origin"),
        // Validated origins hold no quote, backslash or angle bracket.
        Target::Origin(origin) => {
            out.put_u8(b'"');
            out.put_slice(origin.as_bytes());
            out.put_u8(b'"');
        }
    }
    out.put_slice(b";function m(x){parent.postMessage(x,t)}</script>\n");
    out.put_slice(&control_script(ready, wire::READY));
    out.freeze()
}

/// The last chunk: `push.end` (or `push.expired`: `name`) with the resume
/// cursor, and the document's end.
fn ending(resume: Cursor, name: &str) -> Bytes {
    let mut out = BytesMut::from(&control_script(resume, name)[..]);
    // The item's newline goes: the spec writes the end on the same line.
    out.truncate(out.len().saturating_sub(1));
    out.put_slice(b"</body></html>");
    out.freeze()
}

const HEARTBEAT: &[u8] = b"<!---->\n";

/// One forever-frame response body: the prelude, then script chunks and
/// heartbeats, then the ending (`push.end`, or `push.expired` when the
/// authorization ends). A stream of its own, polled in place.
struct Frame {
    /// The checks that end the frame (size, age, shutdown) passed, and it
    /// waits for its next chunk.
    waiting: bool,
    subscription: Subscription,
    batch: Vec<Delivery>,
    heartbeat: Duration,
    max_bytes: usize,
    max_batch: usize,
    deadline: Instant,
    written: usize,
    /// Where the client stands after what was written so far.
    resume: Cursor,
    ended: bool,
    shutdown: ShutdownWaiter,
    /// Fires at the earliest time a heartbeat or the end may be due.
    timer: Timer,
    last_write: Instant,
    /// The end of the authorization, if it has one.
    expiry: Option<Box<Expiry>>,
    /// Where an end at the expiry is counted.
    meter: Option<Arc<Meter>>,
}

impl Chunks for Frame {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            if !self.waiting {
                let closing = self.shutdown.is_triggered();
                if self.written >= self.max_bytes || Instant::now() >= self.deadline || closing {
                    self.ended = true;
                    tracing::trace!(written = self.written, "ending a forever frame");
                    return Poll::Ready(Some(ending(self.resume, wire::END)));
                }
                clear_batch(&mut self.batch);
                self.waiting = true;
            }
            let next = std::task::ready!(stream::poll_next(
                cx,
                &mut self.subscription,
                &mut self.batch,
                self.max_batch,
                &mut self.shutdown,
                &mut self.timer,
                self.expiry.as_deref_mut(),
            ));
            self.waiting = false;
            let chunk = match next {
                Next::Expired => {
                    // Nothing more without fresh credentials.
                    self.ended = true;
                    if let Some(meter) = &self.meter {
                        meter.count_expiry_cut();
                    }
                    tracing::trace!("ending a forever frame whose authorization expired");
                    return Poll::Ready(Some(ending(self.resume, wire::EXPIRED)));
                }
                // Shutting down: the next turn ends the frame.
                Next::Shutdown => continue,
                Next::Batch => {
                    self.last_write = Instant::now();
                    self.encode_batch()
                }
                Next::Timer => {
                    let now = Instant::now();
                    let due = after(self.last_write, self.heartbeat).min(self.deadline);
                    if now >= self.deadline {
                        // Time is up: the next turn ends the frame.
                        continue;
                    }
                    if due > now {
                        // Something was written since the timer was set.
                        self.timer.reset(due);
                        continue;
                    }
                    self.last_write = now;
                    let next = after(now, self.heartbeat).min(self.deadline);
                    self.timer.reset(next);
                    Bytes::from_static(HEARTBEAT)
                }
            };
            self.written = self.written.saturating_add(chunk.len());
            return Poll::Ready(Some(chunk));
        }
    }
}

impl Frame {
    /// The batch as one chunk, cut after the item that reaches the byte
    /// limit; the items cut are sent again by the next response, which
    /// resumes from the last one written.
    fn encode_batch(&mut self) -> Bytes {
        if let [Delivery::Event(event)] = self.batch.as_slice() {
            self.resume = self.subscription.position();
            return event.frame::<Script>();
        }
        let mut out = BytesMut::new();
        for delivery in &self.batch {
            out.put_slice(&delivery_script(delivery));
            self.resume = delivery.cursor();
            if self.written.saturating_add(out.len()) >= self.max_bytes {
                return out.freeze();
            }
        }
        // All written: also past what the filter skipped after the last item.
        self.resume = self.subscription.position();
        out.freeze()
    }
}

fn stream_body(
    subscription: Subscription,
    target: &Target,
    config: &IframeConfig,
    shutdown: Shutdown,
    expiry: Option<Instant>,
    meter: Option<Arc<Meter>>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let prelude = prelude(target, config.padding, subscription.resume_point());
    let now = Instant::now();
    // A duration too large for the clock means "no age limit".
    let deadline = after(now, config.max_duration);
    // Room for items whatever the limit: a document that could hold nothing
    // but `push.ready` would make its client reopen it again and again.
    let max_bytes = config
        .max_bytes
        .max(prelude.len().saturating_add(IframeConfig::MIN_ITEM_ROOM));
    let frame = Frame {
        written: prelude.len(),
        waiting: false,
        resume: subscription.resume_point(),
        subscription,
        batch: Vec::new(),
        heartbeat: config.heartbeat,
        max_bytes,
        max_batch: config.max_batch,
        deadline,
        ended: false,
        shutdown: shutdown.waiter(),
        timer: Timer::at(after(now, config.heartbeat).min(deadline)),
        last_write: now,
        expiry: expiry.map(Expiry::at),
        meter,
    };
    Body::new(prelude, frame)
}

/// `GET {base}/{topic}/iframe`.
pub(crate) async fn handler<C: Channel>(
    State(route): State<Arc<RouteState<C, IframeConfig>>>,
    Path(topic): Path<String>,
    request: Request,
) -> Response {
    let channel = &route.channel;
    let own = |_: &mut Parts, query: &Query<'_>| own_target(&channel.origins, query);
    let open = |subscribed| async { open(channel, &route.config, subscribed) };
    subscribe::subscribe(channel, Transport::Iframe, &topic, request, own, open).await
}

/// The frame's own parameter: `origin`, the page that will read it.
fn own_target(policy: &OriginPolicy, query: &Query<'_>) -> Result<Target, IframeRejection> {
    target(policy, query.get("origin")?)
}

fn open<C: Channel>(
    channel: &ChannelState<C>,
    config: &IframeConfig,
    subscribed: Subscribed<Target>,
) -> Response {
    let csp = HeaderValue::from_str(&channel.origins.frame_ancestors())
        .unwrap_or_else(|_| HeaderValue::from_static("frame-ancestors 'self'"));
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::CONTENT_SECURITY_POLICY, csp),
    ];
    let shutdown = channel.hub.shutdown_signal().clone();
    let Subscribed {
        subscription,
        admission,
        params: target,
        expiry,
        ..
    } = subscribed;
    let meter = Some(Arc::clone(admission.meter()));
    let stream = stream_body(subscription, &target, config, shutdown, expiry, meter);
    (headers, admission.body(stream, &channel.limits)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_close_a_script() {
        let json = "{\"a\":\"</script><!--&amp;\u{2028}\u{2029}\u{2027}é\"}";
        let mut out = BytesMut::new();
        put_escaped(&mut out, json.as_bytes());
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            text,
            "{\"a\":\"\\u003c/script\\u003e\\u003c!--\\u0026amp;\\u2028\\u2029\u{2027}é\"}"
        );
        let back: serde_json::Value = serde_json::from_str(text).unwrap();
        let original: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn raw_line_breaks_become_spaces() {
        let json = "{\n\"a\":\r\n[1,\r2]}";
        let mut out = BytesMut::new();
        put_escaped(&mut out, json.as_bytes());
        assert_eq!(out, "{ \"a\":  [1, 2]}");
        let back: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(json).unwrap()
        );
    }

    #[test]
    fn prelude_and_ending() {
        let ready = Cursor::new(4, 2);
        let text = prelude(&Target::Own, 8, ready);
        assert_eq!(
            text,
            concat!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>push</title></head><body>\n",
                "<!--        -->\n",
                "<script>\"use strict\";var t=location.origin;function m(x){parent.postMessage(x,t)}</script>\n",
                "<script>m({\"cursor\":\"4-2\",\"event\":\"push.ready\",\"data\":{\"cursor\":\"4-2\"}})</script>\n",
            )
        );
        let text = prelude(&Target::Origin("https://a.example".into()), 0, ready);
        assert!(
            std::str::from_utf8(&text)
                .unwrap()
                .contains("var t=\"https://a.example\";")
        );
        assert_eq!(
            ending(ready, wire::END),
            "<script>m({\"cursor\":\"4-2\",\"event\":\"push.end\",\"data\":{\"cursor\":\"4-2\"}})</script></body></html>"
        );
        assert_eq!(
            ending(ready, wire::EXPIRED),
            "<script>m({\"cursor\":\"4-2\",\"event\":\"push.expired\",\"data\":{\"cursor\":\"4-2\"}})</script></body></html>"
        );
    }
}
