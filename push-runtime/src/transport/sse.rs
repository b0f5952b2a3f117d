//! Server-Sent Events: `GET {base}/{topic}/sse`.
//!
//! Each event is framed once (`id:` cursor, `event:` wire name, a `data:`
//! line per line of its JSON) and those bytes are shared by every subscriber; everything pending for a
//! connection is written in one chunk.

use crate::channel::Channel;
use crate::cursor::Cursor;
use crate::history::{Delivery, EncodedEvent, FrameSlot, Framing, Gap, Subscription};
use crate::meter::{Meter, Transport};
use crate::shutdown::{Shutdown, ShutdownWaiter};
use crate::state::{ChannelState, RouteState};
use crate::stream::batch::clear_batch;
use crate::stream::timer::after;
use crate::stream::{self, Body, Chunks, Expiry, Next, Timer};
use crate::subscribe::{self, Subscribed, no_params};
use crate::wire;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// Settings of the SSE transport.
#[derive(Clone, Debug)]
pub struct SseConfig {
    pub(crate) heartbeat: Duration,
    pub(crate) retry: Duration,
    pub(crate) max_batch: usize,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(2),
            max_batch: 256,
        }
    }
}

impl SseConfig {
    /// How long a connection may stay silent before a heartbeat comment is
    /// sent (default 15 s), so proxies keep it open and dead peers are found.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(1));
        self
    }

    /// The reconnection delay announced to clients in `retry:` (default 2 s).
    pub fn retry(mut self, delay: Duration) -> Self {
        self.retry = delay;
        self
    }

    /// The most events written to a connection in one chunk (default 256).
    pub fn max_batch(mut self, events: usize) -> Self {
        self.max_batch = events.max(1);
        self
    }
}

/// Appends one SSE block.
///
/// The payload goes on one `data:` line per line of it: a payload may hold
/// raw line breaks (JSON whitespace, e.g. from a `serde_json::value::RawValue`),
/// and an SSE parser ends a line at CRLF, LF or a lone CR, then joins the
/// `data:` lines of a block with LF. So each of the three ends a line here.
fn put_block(out: &mut BytesMut, cursor: Cursor, name: &str, data: &[u8]) {
    out.put_slice(b"id: ");
    cursor.put(out);
    out.put_slice(b"\nevent: ");
    out.put_slice(name.as_bytes());
    let mut rest = data;
    while let Some(at) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
        out.put_slice(b"\ndata: ");
        out.put_slice(&rest[..at]);
        let crlf = rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n');
        rest = &rest[at + 1 + usize::from(crlf)..];
    }
    out.put_slice(b"\ndata: ");
    out.put_slice(rest);
    out.put_slice(b"\n\n");
}

/// An event's SSE block, framed once per event and shared.
pub(crate) struct Block;

impl Framing for Block {
    type Frame = Bytes;
    const SLOT: FrameSlot = FrameSlot::new(1);

    fn frame(event: &EncodedEvent) -> Bytes {
        let mut out = BytesMut::with_capacity(event.data().len() + event.name().len() + 48);
        put_block(&mut out, event.cursor(), event.name(), event.data());
        out.freeze()
    }
}

fn put_gap(out: &mut BytesMut, gap: &Gap) {
    put_block(out, gap.to, wire::GAP, &wire::gap_payload(gap));
}

/// The first chunk: the reconnection delay and `push.ready`.
fn prelude(retry: Duration, ready: Cursor) -> Bytes {
    let mut out = BytesMut::with_capacity(128);
    out.put_slice(b"retry: ");
    out.put_slice(itoa::Buffer::new().format(retry.as_millis()).as_bytes());
    out.put_slice(b"\n\n");
    put_block(&mut out, ready, wire::READY, &wire::ready_payload(ready));
    out.freeze()
}

/// Everything in `batch` as one chunk; a lone event is its shared frame as is.
pub(crate) fn encode_batch(batch: &[Delivery]) -> Bytes {
    if let [Delivery::Event(event)] = batch {
        return event.frame::<Block>();
    }
    let mut out = BytesMut::new();
    for delivery in batch {
        match delivery {
            Delivery::Event(event) => out.put_slice(&event.frame::<Block>()),
            Delivery::Gap(gap) => put_gap(&mut out, gap),
        }
    }
    out.freeze()
}

const HEARTBEAT: &[u8] = b":\n\n";

/// One SSE response body: the prelude, then chunks of events and
/// heartbeats, then `push.end` on shutdown or `push.expired` when the
/// authorization ends. A stream of its own (not
/// combinators around an async fn), so each connection's state is one
/// struct, polled in place.
struct Connection {
    subscription: Subscription,
    batch: Vec<Delivery>,
    config: SseConfig,
    shutdown: ShutdownWaiter,
    ended: bool,
    /// Fires at the earliest time a heartbeat may be due.
    heartbeat: Timer,
    last_write: Instant,
    /// The end of the authorization, if it has one.
    expiry: Option<Box<Expiry>>,
    /// Where an end at the expiry is counted.
    meter: Option<Arc<Meter>>,
}

/// The last chunk: the control event `name` with the resume cursor.
fn last_block(resume: Cursor, name: &str) -> Bytes {
    let mut out = BytesMut::new();
    put_block(&mut out, resume, name, &wire::ready_payload(resume));
    out.freeze()
}

impl Chunks for Connection {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.ended {
            return Poll::Ready(None);
        }
        loop {
            clear_batch(&mut self.batch);
            let next = std::task::ready!(stream::poll_next(
                cx,
                &mut self.subscription,
                &mut self.batch,
                self.config.max_batch,
                &mut self.shutdown,
                &mut self.heartbeat,
                self.expiry.as_deref_mut(),
            ));
            return Poll::Ready(Some(match next {
                Next::Batch => {
                    // One clock read per chunk instead of a timer reset.
                    self.last_write = Instant::now();
                    encode_batch(&self.batch)
                }
                Next::Shutdown => {
                    // Shutting down: tell the client where to resume, then end.
                    self.ended = true;
                    last_block(self.subscription.resume_point(), wire::END)
                }
                Next::Expired => {
                    // Nothing more without fresh credentials: say where to
                    // resume with them, then end.
                    self.ended = true;
                    if let Some(meter) = &self.meter {
                        meter.count_expiry_cut();
                    }
                    last_block(self.subscription.resume_point(), wire::EXPIRED)
                }
                Next::Timer => {
                    let due = after(self.last_write, self.config.heartbeat);
                    if due > Instant::now() {
                        // Something was written since the timer was set.
                        self.heartbeat.reset(due);
                        continue;
                    }
                    self.last_write = Instant::now();
                    self.heartbeat
                        .reset(after(self.last_write, self.config.heartbeat));
                    Bytes::from_static(HEARTBEAT)
                }
            }));
        }
    }
}

fn stream_body(
    subscription: Subscription,
    config: SseConfig,
    shutdown: Shutdown,
    expiry: Option<Instant>,
) -> Body<Connection> {
    let prelude = prelude(config.retry, subscription.resume_point());
    let last_write = Instant::now();
    let connection = Connection {
        subscription,
        batch: Vec::new(),
        heartbeat: Timer::at(after(last_write, config.heartbeat)),
        config,
        shutdown: shutdown.waiter(),
        ended: false,
        last_write,
        expiry: expiry.map(Expiry::at),
        meter: None,
    };
    Body::new(prelude, connection)
}

/// `GET {base}/{topic}/sse`.
pub(crate) async fn handler<C: Channel>(
    State(route): State<Arc<RouteState<C, SseConfig>>>,
    Path(topic): Path<String>,
    request: Request,
) -> Response {
    let channel = &route.channel;
    let open = |subscribed| async { open(channel, &route.config, subscribed) };
    subscribe::subscribe(channel, Transport::Sse, &topic, request, no_params, open).await
}

fn open<C: Channel>(
    channel: &ChannelState<C>,
    config: &SseConfig,
    subscribed: Subscribed<()>,
) -> Response {
    let shutdown = channel.hub.shutdown_signal().clone();
    let mut stream = stream_body(
        subscribed.subscription,
        config.clone(),
        shutdown,
        subscribed.expiry,
    );
    stream.chunks.meter = Some(Arc::clone(subscribed.admission.meter()));
    let body = subscribed.admission.body(stream, &channel.limits);
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Outgoing, Start, TopicLog};

    #[test]
    fn frames_events_gaps_and_the_prelude() {
        let log = Arc::new(TopicLog::new(9, 2));
        let mut sub = log.subscribe(Start::After(Cursor::new(9, 0))).unwrap();
        for n in 1..=3 {
            let data = Bytes::from(format!("{{\"n\":{n}}}"));
            log.append(Outgoing {
                name: "tick",
                kind_index: 0,
                data,
            });
        }
        assert_eq!(
            prelude(Duration::from_millis(1500), sub.resume_point()),
            "retry: 1500\n\nid: 9-0\nevent: push.ready\ndata: {\"cursor\":\"9-0\"}\n\n"
        );
        let mut batch = Vec::new();
        sub.fill(&mut batch, 10);
        assert_eq!(
            encode_batch(&batch),
            concat!(
                "id: 9-1\nevent: push.gap\ndata: {\"from\":\"9-0\",\"to\":\"9-1\",\"missed\":1}\n\n",
                "id: 9-2\nevent: tick\ndata: {\"n\":2}\n\n",
                "id: 9-3\nevent: tick\ndata: {\"n\":3}\n\n",
            )
        );
    }

    #[test]
    fn a_payload_with_line_breaks_goes_on_one_data_line_per_line() {
        let mut out = BytesMut::new();
        put_block(
            &mut out,
            Cursor::new(2, 5),
            "e",
            b"{\n \"a\":1,\r\n\"b\":\r2\n\n}",
        );
        assert_eq!(
            out,
            concat!(
                "id: 2-5\nevent: e\n",
                "data: {\ndata:  \"a\":1,\ndata: \"b\":\ndata: 2\ndata: \ndata: }\n\n"
            )
        );
        // A trailing line break is a last, empty line.
        let mut out = BytesMut::new();
        put_block(&mut out, Cursor::new(2, 6), "e", b"1\r");
        assert_eq!(out, "id: 2-6\nevent: e\ndata: 1\ndata: \n\n");
    }

    #[test]
    fn a_lone_event_shares_its_frame() {
        let log = Arc::new(TopicLog::new(1, 4));
        let mut a = log.subscribe(Start::Now).unwrap();
        let mut b = log.subscribe(Start::Now).unwrap();
        log.append(Outgoing {
            name: "e",
            kind_index: 0,
            data: Bytes::from_static(b"1"),
        });
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.fill(&mut x, 8);
        b.fill(&mut y, 8);
        let (x, y) = (encode_batch(&x), encode_batch(&y));
        assert_eq!(
            x.as_ptr(),
            y.as_ptr(),
            "both subscribers must share one buffer"
        );
    }

    fn append(log: &TopicLog, n: u8) -> Cursor {
        log.append(Outgoing {
            name: "e",
            kind_index: 0,
            data: Bytes::from(vec![b'0' + n]),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_expiring_stream_delivers_until_its_expiry_then_push_expired_and_ends() {
        use futures_util::StreamExt;
        let log = Arc::new(TopicLog::new(5, 16));
        let sub = log.subscribe(Start::Now).unwrap();
        let expiry = Instant::now() + Duration::from_secs(10);
        let mut body = stream_body(sub, SseConfig::default(), Shutdown::default(), Some(expiry));
        let prelude = body.next().await.unwrap().unwrap();
        assert!(prelude.ends_with(b"event: push.ready\ndata: {\"cursor\":\"5-0\"}\n\n"));
        append(&log, 1);
        let chunk = body.next().await.unwrap().unwrap();
        assert_eq!(chunk, "id: 5-1\nevent: e\ndata: 1\n\n");
        // Idle until the expiry (heartbeats every 15 s come later): the
        // expiry's timer wakes the connection.
        let last = body.next().await.unwrap().unwrap();
        assert!(Instant::now() >= expiry);
        assert_eq!(
            last,
            "id: 5-1\nevent: push.expired\ndata: {\"cursor\":\"5-1\"}\n\n"
        );
        assert!(body.next().await.is_none(), "the response ends");
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_not_written_by_the_expiry_is_left_for_the_resume() {
        use futures_util::StreamExt;
        let log = Arc::new(TopicLog::new(5, 16));
        let sub = log.subscribe(Start::Now).unwrap();
        let expiry = Instant::now() + Duration::from_secs(1);
        let mut body = stream_body(sub, SseConfig::default(), Shutdown::default(), Some(expiry));
        body.next().await.unwrap().unwrap();
        append(&log, 1);
        append(&log, 2);
        // Published before the expiry, not written when it passes.
        tokio::time::advance(Duration::from_secs(1)).await;
        let last = body.next().await.unwrap().unwrap();
        assert_eq!(
            last, "id: 5-0\nevent: push.expired\ndata: {\"cursor\":\"5-0\"}\n\n",
            "nothing at or after the expiry; resume from the ready cursor"
        );
        assert!(body.next().await.is_none());
        // The next subscription, from that cursor, gets both.
        let mut again = log.subscribe(Start::After(Cursor::new(5, 0))).unwrap();
        let mut batch = Vec::new();
        again.fill(&mut batch, 8);
        assert_eq!(
            encode_batch(&batch),
            "id: 5-1\nevent: e\ndata: 1\n\nid: 5-2\nevent: e\ndata: 2\n\n"
        );
    }

    #[tokio::test]
    async fn an_idle_stream_gives_back_the_room_of_a_burst() {
        use futures_util::StreamExt;
        let log = Arc::new(TopicLog::new(1, 1024));
        let sub = log.subscribe(Start::After(Cursor::new(1, 0))).unwrap();
        for _ in 0..300 {
            log.append(Outgoing {
                name: "e",
                kind_index: 0,
                data: Bytes::from_static(b"1"),
            });
        }
        let mut body = stream_body(sub, SseConfig::default(), Shutdown::default(), None);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut chunks = 0;
        while let Poll::Ready(Some(Ok(_))) = body.poll_next_unpin(&mut cx) {
            chunks += 1;
        }
        assert_eq!(chunks, 3, "the prelude, then 256 events, then 44");
        assert!(
            body.chunks.batch.capacity() <= crate::stream::batch::BATCH_KEEP,
            "{}",
            body.chunks.batch.capacity()
        );
    }
}
