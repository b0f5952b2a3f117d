//! Property tests as fuzzers of every server-side parser that request input
//! reaches: cursors, topics, the subscription query, `Last-Event-ID`,
//! `If-None-Match`, poll numbers, origins and request targets.
//!
//! cargo-fuzz needs a nightly toolchain; these run on stable, in the normal
//! test pass, with proptest's case count (256 by default; `PROPTEST_CASES`
//! raises it for a longer run, e.g. `PROPTEST_CASES=20000 cargo test -p
//! push-runtime fuzz`). A finding is kept as a named regression test below.

use crate::channel::{Channel, EventKind};
use crate::cursor::Cursor;
use crate::hub::Hub;
use crate::limits::{self, Limits};
use crate::origin::{OriginPolicy, parse_origin};
use crate::params;
use crate::topic::Topic;
use crate::transport::poll;
use axum::http::{HeaderMap, HeaderValue, Uri};
use proptest::prelude::*;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Probe {
    A,
    B,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ProbeKind {
    A,
    B,
}

impl EventKind for ProbeKind {
    const ALL: &'static [Self] = &[ProbeKind::A, ProbeKind::B];
    const NAMES: &'static [&'static str] = &["a", "b"];

    fn name(self) -> &'static str {
        match self {
            ProbeKind::A => "a",
            ProbeKind::B => "b",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl Channel for Probe {
    type Kind = ProbeKind;
    const PATH: &'static str = "/p";

    fn kind(&self) -> ProbeKind {
        match self {
            Probe::A => ProbeKind::A,
            Probe::B => ProbeKind::B,
        }
    }
}

/// Text that looks like what the parsers expect, often almost right.
fn near_cursor() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,22}-[0-9]{0,22}",
        "[-0-9+ ]{0,30}",
        "\\PC{0,40}",
        Just("18446744073709551615-18446744073709551615".to_owned()),
        Just("18446744073709551616-1".to_owned()),
    ]
}

fn query_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        near_cursor().prop_map(|c| format!("after={c}")),
        "(a|b|c|,|%2C|%FF|%|\\PC){0,12}".prop_map(|e| format!("events={e}")),
        "[0-9a-z%+=&.-]{0,20}".prop_map(|v| format!("limit={v}")),
        "[0-9a-z%+=&.-]{0,20}".prop_map(|v| format!("timeout={v}")),
        "\\PC{0,30}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    prop::collection::vec(query_piece(), 0..6).prop_map(|pieces| pieces.join("&"))
}

fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        near_cursor().prop_map(String::into_bytes),
        near_cursor().prop_map(|c| format!("W/\"{c}\"").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn header(name: &'static str, value: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(value) {
        headers.insert(name, value);
    }
    headers
}

proptest! {
    #[test]
    fn cursors_parse_or_fail_and_round_trip(text in near_cursor()) {
        if let Ok(cursor) = text.parse::<Cursor>() {
            prop_assert_eq!(cursor.to_string().parse::<Cursor>().ok(), Some(cursor));
        }
    }

    #[test]
    fn topics_are_validated_without_panics(name in prop_oneof!["\\PC{0,200}", "[a-z0-9_.:-]{0,200}"]) {
        if let Ok(topic) = Topic::with_max_len(&name, 128) {
            prop_assert!(topic.as_str().len() <= 128);
            prop_assert!(topic.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b)));
        }
    }

    #[test]
    fn query_pairs_are_those_of_form_urlencoded(
        query in prop_oneof![query(), "[a-z=&%+0-9-]{0,40}", "\\PC{0,40}"],
    ) {
        let ours: Vec<(String, String)> = params::pairs(Some(&query))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let theirs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        prop_assert_eq!(ours, theirs);
    }

    #[test]
    fn query_parameters_are_found_as_form_urlencoded_would(
        query in prop_oneof![query(), "((after|limit|events|origin|timeout|x)=[a-z0-9%+-]{0,6}&){0,6}"],
    ) {
        let parsed = params::Query::new(Some(&query));
        for name in params::NAMES {
            let values: Vec<String> = form_urlencoded::parse(query.as_bytes())
                .filter(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
                .collect();
            match parsed.get(name) {
                Ok(None) => prop_assert!(values.is_empty(), "{name}: {values:?}"),
                Ok(Some(value)) => prop_assert_eq!(&values, &[value.to_owned()]),
                Err(error) => {
                    prop_assert!(values.len() > 1, "{name}: {values:?}");
                    prop_assert!(error.to_string().contains(name));
                }
            }
        }
    }

    #[test]
    fn subscription_requests_parse_or_are_refused(
        topic in "\\PC{0,20}",
        query in query(),
        last_event_id in header_bytes(),
    ) {
        let hub = Hub::<Probe>::new();
        let headers = header(params::LAST_EVENT_ID, &last_event_id);
        if let Ok(topic) = hub.topic(&topic) {
            let _ = topic;
            let _ = params::parse::<Probe>(&params::Query::new(Some(&query)), &headers, true);
        }
    }

    #[test]
    fn poll_numbers_and_if_none_match_never_panic(query in query(), tag in header_bytes()) {
        let query = params::Query::new(Some(&query));
        let _ = poll::number(&query, "limit", "n", 1);
        let _ = poll::number(&query, "timeout", "n", 0);
        let _ = params::if_none_match(&header("if-none-match", &tag));
    }

    #[test]
    fn origins_parse_and_judge_without_panics(
        origin in prop_oneof!["\\PC{0,40}", "(https?)://[a-z0-9.:\\[\\]-]{0,30}"],
        host in "\\PC{0,30}",
        site in "\\PC{0,12}",
        frame in any::<bool>(),
    ) {
        if let Ok(normal) = parse_origin(&origin) {
            prop_assert_eq!(parse_origin(&normal).ok(), Some(normal.clone()));
        }
        let policy = OriginPolicy::default().allow(["https://app.example"]).unwrap_or_default();
        let mut headers = header("origin", origin.as_bytes());
        for (name, value) in [("host", &host), ("sec-fetch-site", &site)] {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        }
        let _ = policy.judge(&headers, frame);
    }

    #[test]
    fn request_targets_are_measured_without_panics(path in "/[a-z/%]{0,40}", query in query()) {
        if let Ok(uri) = format!("{path}?{query}").parse::<Uri>() {
            let limits = Limits::default().max_query(16).max_request_target(32);
            let verdict = limits::check_target(&uri, &limits);
            // What the URI holds: a `#` ends the query (finding: the first
            // version of this oracle measured the text before parsing).
            let (path, query) = (uri.path().len(), uri.query().map_or(0, str::len));
            prop_assert_eq!(verdict.is_ok(), query <= 16 && path + query <= 32);
        }
    }
}

/// Regression: a cursor whose numbers overflow `u64` is refused, not wrapped.
#[test]
fn an_overflowing_cursor_is_refused() {
    assert!("18446744073709551616-1".parse::<Cursor>().is_err());
    assert!("1-18446744073709551616".parse::<Cursor>().is_err());
}
