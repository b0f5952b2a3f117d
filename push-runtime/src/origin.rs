//! The one origin policy of a channel: which web pages may use its routes.

use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use std::fmt;

/// A configured origin that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid origin `{origin}`: {reason}; expected `scheme://host[:port]`, e.g. `https://app.example`, or `*`"
)]
pub struct InvalidOrigin {
    origin: String,
    reason: &'static str,
}

impl InvalidOrigin {
    /// The origin as configured.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

fn is_host(host: &str) -> bool {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ip6) => !ip6.is_empty() && ip6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
    }
}

/// Checks and normalizes (lowercases) an origin, `scheme://host[:port]`, or `*`.
pub(crate) fn parse_origin(origin: &str) -> Result<String, InvalidOrigin> {
    let fail = |reason| InvalidOrigin {
        origin: origin.chars().take(256).collect(),
        reason,
    };
    if origin == "*" {
        return Ok(origin.to_owned());
    }
    let (scheme, rest) = origin.split_once("://").ok_or_else(|| fail("no `://`"))?;
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return Err(fail("bad scheme"));
    }
    // A bracketed IPv6 host holds colons; the port is after the last `]`.
    let split = rest.rfind(']').map_or(0, |i| i + 1);
    let (host, port) = match rest.get(split..).and_then(|tail| tail.find(':')) {
        Some(at) => (
            rest.get(..split + at).unwrap_or_default(),
            Some(rest.get(split + at + 1..).unwrap_or_default()),
        ),
        None => (rest, None),
    };
    if !is_host(host) {
        return Err(fail(
            "bad host (no path, query, user or trailing slash allowed)",
        ));
    }
    if let Some(port) = port {
        let digits =
            !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        if !digits || port.parse::<u16>().is_err() {
            return Err(fail("bad port"));
        }
    }
    Ok(origin.to_ascii_lowercase())
}

/// Which web pages may use a channel's routes. Default: the server's own
/// origin only.
///
/// It is applied to every transport the same way, before any subscription is
/// made: the WebSocket `Origin` check before the upgrade, CORS for SSE, the
/// polls and publish, and the forever frame's `postMessage` target and
/// `frame-ancestors`. The default allows the server's own origin only.
///
/// How a request is judged:
///
/// 1. With an `Origin` header (every WebSocket handshake and cross-origin
///    `fetch`/`EventSource` from a browser): `null` is refused; an origin in
///    the allow-list (or any, when it holds `*`) is allowed and gets CORS
///    headers; the server's own origin is allowed; anything else is refused.
/// 2. Without `Origin`, by `Sec-Fetch-Site` (browsers send it on every
///    request): `same-origin` and `none` (typed in the address bar) are
///    allowed; `same-site` and `cross-site` are refused, except a frame
///    navigation to the forever frame when the allow-list is not empty (the
///    browser then enforces the frame's `frame-ancestors`).
/// 3. Neither header: not a browser (curl, a server, the Rust client), or a
///    browser too old to say; allowed. An origin policy protects users'
///    browsers, it does not authenticate programs: use
///    [`ChannelRouter::authorize`](crate::ChannelRouter::authorize) for that.
///
/// The server's own origin is, unless configured with
/// [`OriginPolicy::own_origin`], the request's `Host` header (over HTTP/2,
/// which has none, the request's `:authority`) with the `Origin`'s scheme
/// (`http` or `https`): a browser always sends the authority it connected
/// to, so a page served by this server has exactly that origin.
/// Behind a reverse proxy that rewrites `Host`, or to guard against DNS
/// rebinding (an attacker's name resolving to this server), configure the
/// public origin instead; then `Host` is not trusted at all.
///
/// ```
/// use push_runtime::OriginPolicy;
/// let policy = OriginPolicy::default()
///     .allow(["https://app.example", "http://localhost:8080"])
///     .expect("valid origins");
/// assert_eq!(policy.allowed(), ["https://app.example", "http://localhost:8080"]);
/// // The chat example reads its list from an environment variable:
/// let policy = OriginPolicy::from_list("https://a.example, https://b.example").unwrap();
/// assert_eq!(policy.allowed().len(), 2);
/// assert!(OriginPolicy::default().allow(["https://app.example/"]).is_err());
/// // Pages of this origin may also read with the user's cookies:
/// let policy = OriginPolicy::default()
///     .allow_credentials(["https://app.example"])
///     .expect("valid origins");
/// assert_eq!(policy.credentialed(), ["https://app.example"]);
/// assert!(OriginPolicy::default().allow_credentials(["*"]).is_err());
/// ```
///
/// # Ambient credentials
///
/// Pages of the origins in [`allowed`](OriginPolicy::allowed) may read; those
/// in [`credentialed`](OriginPolicy::credentialed) may also read *as the
/// user*, with the cookies the browser attaches by itself. A request from a
/// page of any other allowed origin reaches the authorization hook (and the
/// publish hook) without its `Cookie` header, and, on a WebSocket handshake
/// or a forever-frame request, without its `Authorization` header too (there
/// only the browser's HTTP-authentication cache could have put it); an
/// `Authorization` header on a poll or an event stream is left, since only
/// the page's own script can set it there. Answers to a credentialed origin
/// carry `Access-Control-Allow-Credentials: true`; no other answer does.
/// docs/security.md has the full matrix.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    allowed: Vec<String>,
    credentialed: Vec<String>,
    own: Option<String>,
}

impl fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginPolicy")
            .field("allowed", &self.allowed)
            .field("credentialed", &self.credentialed)
            .field("own", &self.own)
            .finish()
    }
}

/// How a request was judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A browser page of the server's own origin, or not a browser.
    Own,
    /// A page of an allowed other origin: answer with CORS headers for it,
    /// with `Access-Control-Allow-Credentials` when `credentials`.
    Cross {
        /// The origin to name in `Access-Control-Allow-Origin` (or `*`).
        origin: String,
        /// Whether the policy lets this origin read with ambient credentials.
        credentials: bool,
    },
    /// A frame navigation from another site to the forever frame (no
    /// `Origin`), allowed because the frame's `frame-ancestors` restricts
    /// which pages may embed it.
    Framed,
    /// Refused, and why (for the log line and the 403's body).
    Refused(String),
}

impl OriginPolicy {
    /// Only the server's own origin (the default).
    pub fn same_origin() -> Self {
        Self::default()
    }

    /// Also allows these origins, each `scheme://host[:port]`, or `*` for any
    /// page (only for public data: `*` is answered without credentials).
    pub fn allow<I, S>(mut self, origins: I) -> Result<Self, InvalidOrigin>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for origin in origins {
            let origin = parse_origin(origin.as_ref())?;
            if !self.allowed.contains(&origin) {
                self.allowed.push(origin);
            }
        }
        Ok(self)
    }

    /// Also allows these origins to read with the user's ambient credentials
    /// (cookies; on WebSocket handshakes and frame navigations also HTTP
    /// authentication), each `scheme://host[:port]`; they are added to
    /// [`allowed`](OriginPolicy::allowed) too. `*` is refused: any page
    /// reading as the user is exactly what an origin policy is there to stop.
    pub fn allow_credentials<I, S>(mut self, origins: I) -> Result<Self, InvalidOrigin>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for origin in origins {
            let origin = parse_origin(origin.as_ref())?;
            if origin == "*" {
                return Err(InvalidOrigin {
                    origin,
                    reason: "`*` can never carry credentials; list each origin whose pages may read as the user",
                });
            }
            if !self.credentialed.contains(&origin) {
                self.credentialed.push(origin.clone());
            }
            if !self.allowed.contains(&origin) {
                self.allowed.push(origin);
            }
        }
        Ok(self)
    }

    /// The same-origin policy plus a comma-separated list of origins
    /// (blanks around commas and empty items are ignored), e.g. the value of
    /// `PUSH_ALLOWED_ORIGINS`.
    pub fn from_list(list: &str) -> Result<Self, InvalidOrigin> {
        Self::default().allow(list.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }

    /// The server's public origin, e.g. `https://push.example`, used instead
    /// of the `Host` header to recognise same-origin pages (behind a proxy
    /// that rewrites `Host`, and against DNS rebinding).
    pub fn own_origin(mut self, origin: &str) -> Result<Self, InvalidOrigin> {
        let origin = parse_origin(origin)?;
        if origin == "*" {
            return Err(InvalidOrigin {
                origin,
                reason: "the server's own origin cannot be `*`",
            });
        }
        self.own = Some(origin);
        Ok(self)
    }

    /// This policy plus already normalized origins.
    pub(crate) fn extend(mut self, origins: &[String]) -> Self {
        for origin in origins {
            if !self.allowed.contains(origin) {
                self.allowed.push(origin.clone());
            }
        }
        self
    }

    /// The allowed origins besides the server's own, normalized.
    pub fn allowed(&self) -> &[String] {
        &self.allowed
    }

    /// The origins whose pages may read with ambient credentials,
    /// normalized (each is also in [`allowed`](OriginPolicy::allowed)).
    pub fn credentialed(&self) -> &[String] {
        &self.credentialed
    }

    /// Whether pages of `origin` (normalized or not) may read with ambient
    /// credentials.
    pub(crate) fn allows_credentials(&self, origin: &str) -> bool {
        self.credentialed_origin(origin).is_some()
    }

    /// `origin` as listed (normalized) when its pages may read with ambient
    /// credentials.
    pub(crate) fn credentialed_origin(&self, origin: &str) -> Option<&str> {
        self.credentialed
            .iter()
            .find(|listed| listed.eq_ignore_ascii_case(origin))
            .map(String::as_str)
    }

    /// The page a forever frame declares as its parent: its `origin`
    /// parameter, or the one allowed origin when there is exactly one (the
    /// `postMessage` target the frame transport picks the same way). `None`
    /// when the frame posts to the server's own origin.
    pub(crate) fn frame_parent<'a>(&'a self, requested: Option<&'a str>) -> Option<&'a str> {
        match (requested, self.allowed.as_slice()) {
            (Some(requested), _) => Some(requested),
            (None, [only]) => Some(only),
            (None, _) => None,
        }
    }

    /// Whether any page may use the routes.
    pub(crate) fn allows_any(&self) -> bool {
        self.allowed.iter().any(|o| o == "*")
    }

    /// Judges a request by its `Origin`, `Host` and `Sec-Fetch-*` headers.
    #[cfg(test)]
    pub(crate) fn judge(&self, headers: &HeaderMap, frame_route: bool) -> Verdict {
        self.judge_request(None, headers, frame_route)
    }

    /// [`judge`](Self::judge), where the server's own authority is the
    /// `Host` header or, without one (HTTP/2 sends `:authority` instead),
    /// the authority of the request's `uri`.
    pub(crate) fn judge_request(
        &self,
        uri: Option<&Uri>,
        headers: &HeaderMap,
        frame_route: bool,
    ) -> Verdict {
        let host = match headers.get(header::HOST) {
            Some(host) => host.to_str().ok(),
            None => uri.and_then(Uri::authority).map(Authority::as_str),
        };
        let Some(origin) = headers.get(header::ORIGIN) else {
            return self.judge_fetch_metadata(headers, frame_route);
        };
        let Ok(origin) = origin.to_str() else {
            return Verdict::Refused("an `Origin` that is not text".into());
        };
        let quoted = || origin.chars().take(128).collect::<String>();
        if origin == "null" {
            return Verdict::Refused("an opaque `Origin: null`".into());
        }
        if self.is_own(origin, host) {
            return Verdict::Own;
        }
        if let Some(allowed) = self
            .allowed
            .iter()
            .find(|allowed| allowed.eq_ignore_ascii_case(origin))
        {
            return Verdict::Cross {
                credentials: self.allows_credentials(allowed),
                origin: allowed.clone(),
            };
        }
        if self.allows_any() {
            return Verdict::Cross {
                origin: "*".into(),
                credentials: false,
            };
        }
        Verdict::Refused(format!("origin `{}` is not allowed", quoted()))
    }

    fn judge_fetch_metadata(&self, headers: &HeaderMap, frame_route: bool) -> Verdict {
        let site = headers
            .get("sec-fetch-site")
            .map(|v| v.to_str().unwrap_or("?"));
        match site {
            None | Some("same-origin" | "none") => Verdict::Own,
            Some(_) if frame_route && !self.allowed.is_empty() => {
                // The browser enforces which pages may embed it (frame-ancestors).
                Verdict::Framed
            }
            Some(site) => Verdict::Refused(format!(
                "a `{}` request without `Origin`",
                site.chars().take(32).collect::<String>()
            )),
        }
    }

    /// Whether `origin` is the server's own (configured, or `host` under
    /// the origin's `http`/`https` scheme).
    fn is_own(&self, origin: &str, host: Option<&str>) -> bool {
        if let Some(own) = &self.own {
            return own.eq_ignore_ascii_case(origin);
        }
        let Some(host) = host else {
            return false;
        };
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
    }

    /// The forever frame's `content-security-policy`: `'self'` plus the list.
    pub(crate) fn frame_ancestors(&self) -> String {
        let mut policy = String::from("frame-ancestors 'self'");
        for origin in &self.allowed {
            policy.push(' ');
            policy.push_str(origin);
        }
        policy
    }
}

/// The `content-security-policy` of a forever frame that carries ambient
/// credentials: only pages of `parent`, the credentialed origin it posts
/// to, may embed it.
pub(crate) fn pinned_frame_ancestors(parent: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("frame-ancestors {parent}")).ok()
}

/// The CORS headers for an allowed cross-origin request;
/// `Access-Control-Allow-Credentials` only for a `credentials` origin.
pub(crate) fn cors_headers(headers: &mut HeaderMap, origin: &str, credentials: bool) {
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if origin == "*" {
        // Never together with credentials.
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    } else if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("etag, retry-after"),
    );
}

/// The extra headers of a preflight (`OPTIONS`) answer.
pub(crate) fn preflight_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, last-event-id, if-none-match"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn validates_origins() {
        for good in [
            "https://app.example",
            "http://localhost:8080",
            "http://[::1]:3000",
            "HTTPS://App.Example",
            "*",
        ] {
            assert!(parse_origin(good).is_ok(), "{good}");
        }
        assert_eq!(
            parse_origin("HTTPS://App.Example").unwrap(),
            "https://app.example"
        );
        for bad in [
            "app.example",
            "https://app.example/",
            "https://app.example/path",
            "https://user@app.example",
            "https://app.example:99999",
            "https://app.example:",
            "https://",
            "https://a b",
            "https://a\"b",
            "1http://a",
            "https://a.example?x",
            "'self'",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn judges_by_origin_host_and_fetch_metadata() {
        let policy = OriginPolicy::default();
        let own = headers(&[
            ("origin", "http://s.example:3000"),
            ("host", "s.example:3000"),
        ]);
        assert_eq!(policy.judge(&own, false), Verdict::Own);
        let other = headers(&[("origin", "https://evil.example"), ("host", "s.example")]);
        assert!(matches!(policy.judge(&other, false), Verdict::Refused(_)));
        let null = headers(&[("origin", "null"), ("host", "s.example")]);
        assert!(matches!(policy.judge(&null, false), Verdict::Refused(_)));
        assert_eq!(policy.judge(&HeaderMap::new(), false), Verdict::Own);
        for site in ["same-origin", "none"] {
            let map = headers(&[("sec-fetch-site", site)]);
            assert_eq!(policy.judge(&map, false), Verdict::Own, "{site}");
        }
        for site in ["cross-site", "same-site", "bogus"] {
            let map = headers(&[("sec-fetch-site", site)]);
            assert!(matches!(policy.judge(&map, false), Verdict::Refused(_)));
            assert!(matches!(policy.judge(&map, true), Verdict::Refused(_)));
        }

        let listed = OriginPolicy::from_list(" https://App.example ,,").unwrap();
        assert_eq!(
            listed.judge(&headers(&[("origin", "https://app.example")]), false),
            Verdict::Cross {
                origin: "https://app.example".into(),
                credentials: false
            }
        );
        let framed = headers(&[("sec-fetch-site", "cross-site")]);
        assert_eq!(listed.judge(&framed, true), Verdict::Framed);
        assert!(matches!(listed.judge(&framed, false), Verdict::Refused(_)));

        let pinned = OriginPolicy::default()
            .own_origin("https://push.example")
            .unwrap();
        // A rebinding attacker's page has a matching Host but not the pinned origin.
        let rebound = headers(&[("origin", "http://evil.example"), ("host", "evil.example")]);
        assert!(matches!(pinned.judge(&rebound, false), Verdict::Refused(_)));
        let real = headers(&[("origin", "https://push.example"), ("host", "backend:8080")]);
        assert_eq!(pinned.judge(&real, false), Verdict::Own);
        assert!(OriginPolicy::default().own_origin("*").is_err());

        let any = OriginPolicy::default().allow(["*"]).unwrap();
        assert_eq!(
            any.judge(&other, false),
            Verdict::Cross {
                origin: "*".into(),
                credentials: false
            }
        );
    }

    #[test]
    fn without_host_the_uri_authority_is_the_servers_own() {
        // An HTTP/2 request: `:authority` in the URI, no `Host` header.
        let uri: Uri = "https://s.example:8443/chat/lobby/sse".parse().unwrap();
        let policy = OriginPolicy::default();
        let own = headers(&[("origin", "https://s.example:8443")]);
        assert_eq!(policy.judge_request(Some(&uri), &own, false), Verdict::Own);
        assert!(matches!(policy.judge(&own, false), Verdict::Refused(_)));
        let other = headers(&[("origin", "https://evil.example")]);
        assert!(matches!(
            policy.judge_request(Some(&uri), &other, false),
            Verdict::Refused(_)
        ));
        // `Host`, when present, wins over the URI's authority.
        let hosted = headers(&[("origin", "https://s.example:8443"), ("host", "t.example")]);
        assert!(matches!(
            policy.judge_request(Some(&uri), &hosted, false),
            Verdict::Refused(_)
        ));
        let path_only: Uri = "/chat/lobby/sse".parse().unwrap();
        assert!(matches!(
            policy.judge_request(Some(&path_only), &own, false),
            Verdict::Refused(_)
        ));
    }

    #[test]
    fn only_credentialed_origins_are_judged_to_carry_credentials() {
        let policy = OriginPolicy::default()
            .allow(["https://read.example", "*"])
            .unwrap()
            .allow_credentials(["HTTPS://Me.example"])
            .unwrap();
        assert_eq!(
            policy.allowed(),
            ["https://read.example", "*", "https://me.example"]
        );
        assert_eq!(policy.credentialed(), ["https://me.example"]);
        let judge = |origin: &'static str| policy.judge(&headers(&[("origin", origin)]), false);
        assert_eq!(
            judge("https://me.example"),
            Verdict::Cross {
                origin: "https://me.example".into(),
                credentials: true
            }
        );
        assert_eq!(
            judge("https://read.example"),
            Verdict::Cross {
                origin: "https://read.example".into(),
                credentials: false
            }
        );
        // Any other page reads through `*`, never with credentials.
        assert_eq!(
            judge("https://else.example"),
            Verdict::Cross {
                origin: "*".into(),
                credentials: false
            }
        );
        // Allowing an origin again to read keeps its credentials.
        let again = policy.clone().allow(["https://me.example"]).unwrap();
        assert!(again.allows_credentials("https://me.example"));
        assert!(!again.allows_credentials("https://read.example"));
    }

    #[test]
    fn a_wildcard_or_a_bad_origin_is_refused_for_credentials() {
        let error = OriginPolicy::default()
            .allow_credentials(["https://a.example", "*"])
            .unwrap_err();
        assert_eq!(error.origin(), "*");
        assert!(
            error
                .to_string()
                .contains("`*` can never carry credentials"),
            "{error}"
        );
        assert!(
            OriginPolicy::default()
                .allow_credentials(["https://a.example/"])
                .is_err()
        );
    }

    #[test]
    fn a_frame_declares_its_parent_by_parameter_or_by_a_list_of_one() {
        let none = OriginPolicy::default();
        assert_eq!(none.frame_parent(None), None);
        let one = OriginPolicy::default()
            .allow_credentials(["https://me.example"])
            .unwrap();
        assert_eq!(one.frame_parent(None), Some("https://me.example"));
        assert_eq!(
            one.frame_parent(Some("https://x.example")),
            Some("https://x.example")
        );
        let two = one.allow(["https://read.example"]).unwrap();
        assert_eq!(two.frame_parent(None), None);
        assert_eq!(
            pinned_frame_ancestors("https://me.example").unwrap(),
            "frame-ancestors https://me.example"
        );
    }

    #[test]
    fn cors_grants_credentials_only_to_a_credentialed_origin() {
        let mut map = HeaderMap::new();
        cors_headers(&mut map, "*", true);
        assert_eq!(map[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(map.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        let mut map = HeaderMap::new();
        cors_headers(&mut map, "https://a.example", false);
        assert_eq!(
            map[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://a.example"
        );
        assert!(map.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        assert_eq!(map[header::VARY], "origin");
        let mut map = HeaderMap::new();
        cors_headers(&mut map, "https://a.example", true);
        assert_eq!(
            map[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://a.example"
        );
        assert_eq!(map[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(map[header::VARY], "origin");
    }
}
