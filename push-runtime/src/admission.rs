//! What every route of a channel goes through: request size limits and the
//! origin policy (with CORS), which also withholds the ambient credentials
//! of pages the policy does not let read as the user ([`check`]); then, for
//! subscriptions, the topic, the shutdown state, the authorization hook (and
//! the expiry of the principal it answers) and the connection limits
//! ([`admit`]); and last, CORS and `Retry-After` on the answer ([`finish`]).
//! Nothing is subscribed before all of them pass.

use crate::auth::{self, AuthRequest, Principal};
use crate::channel::Channel;
use crate::limits::{self, Limits};
use crate::meter::{ConnectionPermit, Meter, Metered, Outbound, Transport};
use crate::origin::{self, Verdict};
use crate::params::{Query, SubscribeRejection};
use crate::state::ChannelState;
use crate::stream::timer::after;
use crate::topic::Topic;
use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;
use tokio::time::Instant;

/// Which kind of route a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteKind {
    /// A streaming subscription: SSE or WebSocket.
    Stream,
    /// A short or long poll (which may also start from `If-None-Match`).
    Poll,
    /// The forever frame, loaded by a frame navigation.
    Frame,
    /// `POST {base}/{topic}` (its own hook authorizes it).
    Publish,
}

impl RouteKind {
    /// The kind of a subscription route of `transport`.
    pub(crate) fn of(transport: Transport) -> Self {
        match transport {
            Transport::Sse | Transport::Ws => RouteKind::Stream,
            Transport::Poll | Transport::LongPoll => RouteKind::Poll,
            Transport::Iframe => RouteKind::Frame,
        }
    }
}

/// A subscription that passed every check: its place in the connection
/// count (freed when the last clone is dropped).
#[derive(Clone, Debug)]
pub(crate) struct Admission {
    _permit: Arc<ConnectionPermit>,
    meter: Arc<Meter>,
}

impl Admission {
    /// The hub's meter.
    pub(crate) fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    /// Accounting for one connection's unwritten bytes.
    pub(crate) fn outbound(&self, limits: &Limits) -> Arc<Outbound> {
        Outbound::new(Arc::clone(&self.meter), limits)
    }

    /// A streaming response body, metered and bounded per [`Limits`], that
    /// keeps this admission (and so the connection count) until it ends.
    pub(crate) fn body<S>(self, stream: S, limits: &Limits) -> Body
    where
        S: Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
    {
        let outbound = self.outbound(limits);
        Body::from_stream(Metered::new(stream, outbound, self))
    }
}

fn forbidden(reason: &str, path: &str) -> Response {
    tracing::warn!(%reason, path, "refused a request from another origin");
    (StatusCode::FORBIDDEN, format!("forbidden: {reason}")).into_response()
}

/// What a subscription route's handler gets once every check passed: the
/// request (its body is not read), the validated topic, the admission and
/// the end of the authorization, if the hook set one.
pub(crate) struct Admitted {
    pub(crate) parts: Parts,
    pub(crate) topic: Topic,
    pub(crate) admission: Admission,
    /// When the principal's authorization ends, on the runtime's clock.
    pub(crate) expiry: Option<Instant>,
}

/// The principal's expiry on the runtime's clock, converted once, here:
/// `Err` if it is already past (or now).
fn expiry(principal: Option<&Principal>) -> Result<Option<Instant>, ()> {
    let Some(at) = principal.and_then(Principal::expires) else {
        return Ok(None);
    };
    let now = Instant::now();
    match at.duration_since(SystemTime::now()) {
        Ok(left) if !left.is_zero() => Ok(Some(after(now, left))),
        _ => Err(()),
    }
}

/// How [`check`] let a request in, for [`finish`] to answer accordingly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grant {
    /// The server's own pages, or not a browser: nothing to add.
    Own,
    /// A page of an allowed other origin: CORS headers for it, granting
    /// credentials when the policy lets it read with them.
    Cors { origin: String, credentials: bool },
    /// A forever frame embedded by a page of another site that the policy
    /// lets read with credentials: its `frame-ancestors` is pinned to that
    /// page's origin, so no other page can embed the frame that carries them.
    PinnedFrame(String),
}

/// The checks every route of a channel shares, before anything else: the
/// request-size limits and the origin policy. A request from a page that
/// the policy lets read but not with credentials loses its ambient
/// credentials here ([`withhold_ambient`]), so neither hook ever sees them.
/// `Ok` says how to answer ([`finish`]); `Err` is the final answer: a
/// refusal, or a preflight's (`OPTIONS`) answer.
///
/// Plain functions the handlers call rather than a middleware layer: a
/// layer cost every request a boxed future, a second trip through a boxed
/// route and a second extraction of the path.
#[expect(
    clippy::result_large_err,
    reason = "the error is the answer itself, returned once per refused request"
)]
pub(crate) fn check<C: Channel>(
    state: &ChannelState<C>,
    route: RouteKind,
    request: &mut Request,
) -> Result<Grant, Response> {
    if let Err(refusal) = limits::check_target(request.uri(), &state.limits) {
        return Err(refusal.into_response());
    }
    let (grant, ambient) = match state.origins.judge_request(
        Some(request.uri()),
        request.headers(),
        route == RouteKind::Frame,
    ) {
        Verdict::Own => (Grant::Own, true),
        Verdict::Cross {
            origin,
            credentials,
        } => (
            Grant::Cors {
                origin,
                credentials,
            },
            credentials,
        ),
        Verdict::Framed => {
            // No `Origin` on a frame navigation: the page that will read the
            // frame is the one it posts to, which `frame-ancestors` enforces.
            let query = Query::new(request.uri().query());
            let parent = query
                .get("origin")
                .map(|requested| state.origins.frame_parent(requested))
                .unwrap_or_default()
                .and_then(|parent| state.origins.credentialed_origin(parent));
            match parent {
                Some(parent) => (Grant::PinnedFrame(parent.to_owned()), true),
                None => (Grant::Own, false),
            }
        }
        Verdict::Refused(reason) => return Err(forbidden(&reason, request.uri().path())),
    };
    if !ambient {
        let handshake = is_websocket_handshake(request);
        withhold_ambient(request.headers_mut(), route, handshake);
    }
    if request.method() == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        origin::preflight_headers(response.headers_mut());
        return Err(finish(state, grant, response));
    }
    Ok(grant)
}

/// A WebSocket opening: an HTTP/1.1 `Upgrade: websocket`, or an HTTP/2
/// extended `CONNECT` (neither can be made by a page's `fetch`).
fn is_websocket_handshake(request: &Request) -> bool {
    request.method() == Method::CONNECT
        || request
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Removes the credentials a browser attaches by itself from a request of
/// a page that may not read as the user: `Cookie` always, and on a
/// WebSocket handshake or a forever-frame request also `Authorization`,
/// which no script can set there (only the HTTP-authentication cache can).
/// An `Authorization` header on a poll or an event stream is the page's
/// own (a `fetch` with a bearer token) and stays.
fn withhold_ambient(headers: &mut HeaderMap, route: RouteKind, websocket: bool) {
    let cookie = headers.remove(header::COOKIE).is_some();
    let authorization =
        (route == RouteKind::Frame || websocket) && headers.remove(header::AUTHORIZATION).is_some();
    if cookie || authorization {
        tracing::debug!(
            cookie,
            authorization,
            "ambient credentials withheld: the origin policy does not let this page read with them"
        );
    }
}

/// What every answer of a channel's routes gets once [`check`] passed: CORS
/// headers for an allowed other origin (`Access-Control-Allow-Credentials`
/// only for one allowed to read with credentials), the pinned
/// `frame-ancestors` of a forever frame that carries credentials, and
/// `Retry-After` on every `503`.
pub(crate) fn finish<C>(state: &ChannelState<C>, grant: Grant, mut response: Response) -> Response {
    match grant {
        Grant::Own => {}
        Grant::Cors {
            origin,
            credentials,
        } => origin::cors_headers(response.headers_mut(), &origin, credentials),
        Grant::PinnedFrame(parent) => {
            // The frame transport lists every allowed origin; a frame that
            // carries credentials may be embedded by its one reader only.
            if response
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY)
                && let Some(pinned) = origin::pinned_frame_ancestors(&parent)
            {
                response
                    .headers_mut()
                    .insert(header::CONTENT_SECURITY_POLICY, pinned);
            }
        }
    }
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        // Every 503 (`limits::unavailable`) says when to come back, as configured.
        response.headers_mut().insert(
            header::RETRY_AFTER,
            limits::retry_after_header(&state.limits),
        );
    }
    response
}

/// The checks of a subscription after [`check`]: the topic, the shutdown
/// state, the authorization hook (a principal already expired is refused
/// `401 authorization expired`), then the connection limits. `Err` is the
/// refusal to answer.
pub(crate) async fn admit<C: Channel>(
    state: &ChannelState<C>,
    topic: &str,
    request: Request,
    transport: Transport,
) -> Result<Admitted, Response> {
    let topic: Topic = match state.hub.topic(topic) {
        Ok(topic) => topic,
        Err(error) => return Err(SubscribeRejection::from(error).into_response()),
    };
    if state.hub.shutdown_signal().is_triggered() {
        return Err(limits::unavailable("the server is shutting down"));
    }
    let (parts, _body) = request.into_parts();
    let (parts, principal) = match &state.authorize {
        None => (parts, None),
        Some(hook) => {
            let request = AuthRequest {
                parts,
                topic: topic.clone(),
            };
            let parts = request.parts.clone();
            match hook.authorize(request).await {
                Ok(principal) => (parts, Some(principal)),
                Err(refusal) => {
                    let counters = &state.hub.meter().counters;
                    counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(?refusal, %topic, "subscription refused by the authorization hook");
                    return Err(refusal.into_response());
                }
            }
        }
    };
    let Ok(expiry) = expiry(principal.as_ref()) else {
        let counters = &state.hub.meter().counters;
        counters.expired_refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(?principal, %topic, "subscription refused: its authorization expired");
        return Err(auth::expired());
    };
    let meter = state.hub.meter();
    let permit = match meter.admit(&topic, &state.limits, transport) {
        Ok(permit) => permit,
        Err(refusal) => {
            meter.count_refusal();
            return Err(refusal.into_response());
        }
    };
    let principal = principal.as_ref().and_then(|p| p.id());
    tracing::debug!(principal, %topic, ?expiry, "subscription admitted");
    Ok(Admitted {
        parts,
        topic,
        admission: Admission {
            _permit: Arc::new(permit),
            meter: Arc::clone(meter),
        },
        expiry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::Probe;
    use crate::origin::OriginPolicy;

    fn state() -> ChannelState<Probe> {
        ChannelState {
            hub: crate::hub::Hub::<Probe>::new(),
            origins: OriginPolicy::default()
                .allow(["https://read.example"])
                .unwrap()
                .allow_credentials(["https://me.example"])
                .unwrap(),
            limits: Default::default(),
            authorize: None,
        }
    }

    fn request(method: Method, target: &str, headers: &[(&'static str, &'static str)]) -> Request {
        let mut request = Request::new(Body::empty());
        *request.method_mut() = method;
        *request.uri_mut() = target.parse().unwrap();
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, axum::http::HeaderValue::from_static(value));
        }
        request
            .headers_mut()
            .insert(header::HOST, "push.example".parse().unwrap());
        request
    }

    const AMBIENT: [(&str, &str); 2] = [
        ("cookie", "session=ann"),
        ("authorization", "Basic YW5uOng="),
    ];

    /// What the hook would see of `(cookie, authorization)` after `check`.
    fn seen(
        route: RouteKind,
        target: &str,
        headers: &[(&'static str, &'static str)],
    ) -> (bool, bool, Grant) {
        let mut all = AMBIENT.to_vec();
        all.extend_from_slice(headers);
        let mut request = request(Method::GET, target, &all);
        let grant = check(&state(), route, &mut request).expect("allowed");
        let has = |name| request.headers().contains_key(name);
        (has(header::COOKIE), has(header::AUTHORIZATION), grant)
    }

    #[test]
    fn ambient_credentials_reach_the_hook_only_from_pages_allowed_to_carry_them() {
        let upgrade = [("upgrade", "websocket"), ("connection", "upgrade")];
        let ws = |origin| {
            let mut headers = upgrade.to_vec();
            headers.push(("origin", origin));
            seen(RouteKind::Stream, "/c/t/ws", &headers)
        };
        // A read-only origin: no cookie anywhere, no Authorization on a
        // WebSocket handshake; a fetch's own Authorization stays.
        let (cookie, auth, grant) = ws("https://read.example");
        assert_eq!((cookie, auth), (false, false));
        assert_eq!(
            grant,
            Grant::Cors {
                origin: "https://read.example".into(),
                credentials: false
            }
        );
        for (route, target) in [
            (RouteKind::Stream, "/c/t/sse"),
            (RouteKind::Poll, "/c/t/poll"),
            (RouteKind::Publish, "/c/t"),
        ] {
            let (cookie, auth, _) = seen(route, target, &[("origin", "https://read.example")]);
            assert_eq!((cookie, auth), (false, true), "{target}");
        }
        // A credentialed origin, the server's own pages and programs keep both.
        let (cookie, auth, grant) = ws("https://me.example");
        assert_eq!((cookie, auth), (true, true));
        assert_eq!(
            grant,
            Grant::Cors {
                origin: "https://me.example".into(),
                credentials: true
            }
        );
        assert!(ws("https://push.example").0);
        let (cookie, auth, grant) = seen(RouteKind::Stream, "/c/t/ws", &upgrade);
        assert_eq!((cookie, auth, grant), (true, true, Grant::Own));
        // An HTTP/2 WebSocket (extended CONNECT) is a handshake too.
        let mut connect = request(
            Method::CONNECT,
            "/c/t/ws",
            &[AMBIENT[0], AMBIENT[1], ("origin", "https://read.example")],
        );
        check(&state(), RouteKind::Stream, &mut connect).unwrap();
        assert!(!connect.headers().contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn a_frame_keeps_credentials_only_for_a_credentialed_parent_and_is_pinned_to_it() {
        let cross = [
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-dest", "iframe"),
        ];
        let frame = |target| seen(RouteKind::Frame, target, &cross);
        assert_eq!(
            frame("/c/t/iframe?origin=https://ME.example"),
            (true, true, Grant::PinnedFrame("https://me.example".into()))
        );
        for target in [
            "/c/t/iframe?origin=https://read.example",
            "/c/t/iframe", // two allowed: no declared parent
            "/c/t/iframe?origin=https://me.example&origin=https://me.example", // refused later anyway
        ] {
            assert_eq!(frame(target), (false, false, Grant::Own), "{target}");
        }
        let same_site = [("sec-fetch-site", "same-site")];
        let (cookie, ..) = seen(
            RouteKind::Frame,
            "/c/t/iframe?origin=https://read.example",
            &same_site,
        );
        assert!(!cookie, "same-site pages are other origins too");
        // The server's own page embedding the frame keeps its cookies.
        let own = [("sec-fetch-site", "same-origin")];
        assert_eq!(
            seen(RouteKind::Frame, "/c/t/iframe", &own),
            (true, true, Grant::Own)
        );

        // The frame's answer is pinned; an error answer (no CSP) gets none.
        let pinned = |response: Response| {
            finish(
                &state(),
                Grant::PinnedFrame("https://me.example".into()),
                response,
            )
        };
        let mut document = StatusCode::OK.into_response();
        document.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            "frame-ancestors 'self' https://read.example https://me.example"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            pinned(document).headers()[header::CONTENT_SECURITY_POLICY],
            "frame-ancestors https://me.example"
        );
        let refused = pinned(StatusCode::UNAUTHORIZED.into_response());
        assert!(
            !refused
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY)
        );
    }

    #[test]
    fn preflights_grant_credentials_to_credentialed_origins_only() {
        let preflight = |origin| {
            let mut request = request(
                Method::OPTIONS,
                "/c/t/poll",
                &[("origin", origin), ("access-control-request-method", "GET")],
            );
            check(&state(), RouteKind::Poll, &mut request).expect_err("a preflight is answered")
        };
        let me = preflight("https://me.example");
        assert_eq!(me.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            me.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://me.example"
        );
        assert_eq!(
            me.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
            "true"
        );
        assert_eq!(me.headers()[header::VARY], "origin");
        let read = preflight("https://read.example");
        assert_eq!(
            read.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://read.example"
        );
        assert!(
            !read
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
        );
        assert_eq!(
            preflight("https://evil.example").status(),
            StatusCode::FORBIDDEN
        );
    }
}
