//! Credentials against scripted servers: headers on every request and
//! handshake, the provider's reasons, the server's expiry on each transport
//! (`push.expired`, close `4401`, a poll's `401`), refusals that back off.

use super::*;
use std::sync::{Arc, Mutex};

/// What a recording provider was asked, in order.
type Asked = Arc<Mutex<Vec<CredentialsReason>>>;

/// A provider that records each reason and answers `Bearer t<n>` for the
/// n-th call (from 1), or declines from call `decline_from` on.
fn recording_provider(decline_from: Option<usize>) -> (ClientConfig, Asked) {
    let asked: Asked = Arc::default();
    let log = asked.clone();
    let config = quick_config().credentials(move |why: CredentialsReason| {
        let log = log.clone();
        async move {
            let call = {
                let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                log.push(why);
                log.len()
            };
            if decline_from.is_some_and(|from| call >= from) {
                return None;
            }
            Credentials::bearer(&format!("t{call}")).ok()
        }
    });
    (config, asked)
}

fn asked(asked: &Asked) -> Vec<CredentialsReason> {
    asked
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Every request the scripted server saw, once the stream is over.
async fn all_seen(requests: &mut tokio::sync::mpsc::Receiver<Seen>) -> Vec<Seen> {
    let mut seen = Vec::new();
    while let Some(request) = requests.recv().await {
        seen.push(request);
    }
    seen
}

fn sse_event(cursor: &str, event: &str, data: &str) -> String {
    format!("id: {cursor}\nevent: {event}\ndata: {data}\n\n")
}

fn expired_payload(cursor: &str) -> String {
    format!(r#"{{"cursor":"{cursor}"}}"#)
}

const CLEARED: &str = r#"{"type":"cleared"}"#;

fn unauthorized(message: &str) -> String {
    response(
        "401 Unauthorized",
        "text/plain; charset=utf-8",
        "",
        &format!("{message}\n"),
    )
}

#[tokio::test]
async fn configured_headers_and_credentials_go_with_every_http_request() {
    let (base, mut requests) = scripted_http_server(vec![
        sse_stream("1-0", &sse_event("1-1", "cleared", CLEARED)),
        bad_request("enough"),
    ])
    .await;
    let (config, reasons) = recording_provider(None);
    let config = config
        .header("X-Tenant", "acme")
        .and_then(|config| config.header("authorization", "Bearer static"))
        .expect("valid headers");
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client.subscribe("lobby").stream();
    assert!(matches!(next_ok(&mut stream).await, Update::Ready { .. }));
    assert!(matches!(next_ok(&mut stream).await, Update::Event { .. }));
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Reconnecting { .. }
    ));
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Rejected { status: 400, .. }))
    ));
    let seen = all_seen(&mut requests).await;
    assert_eq!(seen.len(), 2);
    for (request, token) in seen.iter().zip(["t1", "t2"]) {
        assert!(
            request.head.contains("x-tenant: acme\r\n"),
            "{}",
            request.head
        );
        // The provider's header replaces the configured one of that name.
        assert!(
            request
                .head
                .contains(&format!("authorization: bearer {token}\r\n")),
            "{}",
            request.head
        );
        assert!(!request.head.contains("bearer static"), "{}", request.head);
    }
    assert_eq!(
        asked(&reasons),
        [CredentialsReason::Connect, CredentialsReason::Reconnect]
    );
}

#[tokio::test]
async fn websocket_handshakes_carry_the_headers_and_a_close_4401_resumes_with_fresh_credentials() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    // The handshake's URI and its `authorization` and `x-tenant` headers.
    let (heads, mut seen) = tokio::sync::mpsc::channel::<(String, String, String)>(8);
    tokio::spawn(async move {
        let scripts: [(&[&str], u16); 3] = [
            // `push.expired`, then the close that follows it.
            (
                &[
                    r#"{"cursor":"3-0","event":"push.ready","data":{"cursor":"3-0"}}"#,
                    r#"{"cursor":"3-1","event":"cleared","data":{"type":"cleared"}}"#,
                    r#"{"cursor":"3-1","event":"push.expired","data":{"cursor":"3-1"}}"#,
                ],
                4401,
            ),
            // A close 4401 alone: resume from the position.
            (
                &[
                    r#"{"cursor":"3-1","event":"push.ready","data":{"cursor":"3-1"}}"#,
                    r#"{"cursor":"3-2","event":"cleared","data":{"type":"cleared"}}"#,
                ],
                4401,
            ),
            (&[], 1008),
        ];
        for (messages, code) in scripts {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let heads = heads.clone();
            // The error type is tungstenite's, not ours to shrink.
            #[allow(clippy::result_large_err)]
            let callback = move |request: &Request, response: Response| {
                let header = |name: &str| {
                    request
                        .headers()
                        .get(name)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                let _ = heads.try_send((
                    request.uri().to_string(),
                    header("authorization"),
                    header("x-tenant"),
                ));
                Ok(response)
            };
            let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(socket, callback).await else {
                return;
            };
            for message in messages {
                let _ = socket.send(Message::text(*message)).await;
            }
            let close = CloseFrame {
                code: CloseCode::from(code),
                reason: "authorization expired".into(),
            };
            let _ = socket.close(Some(close)).await;
        }
    });
    let (config, reasons) = recording_provider(None);
    // A long delay: resuming after an expiry must not wait for it.
    let config = config
        .initial_delay(Duration::from_secs(5))
        .header("x-tenant", "acme")
        .expect("valid header");
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::WebSocket)
        .stream();
    assert!(matches!(next_ok(&mut stream).await, Update::Ready { .. }));
    assert!(
        matches!(next_ok(&mut stream).await, Update::Event { cursor, .. } if cursor == Cursor::new(3, 1))
    );
    let expired_at = |cursor| CredentialsReason::Expired {
        cursor: Some(cursor),
    };
    match next_ok(&mut stream).await {
        Update::Reauthorized { reason, delay } => {
            assert_eq!(
                (reason, delay),
                (expired_at(Cursor::new(3, 1)), Duration::ZERO)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(next_ok(&mut stream).await, Update::Ready { cursor } if cursor == Cursor::new(3, 1))
    );
    assert!(
        matches!(next_ok(&mut stream).await, Update::Event { cursor, .. } if cursor == Cursor::new(3, 2))
    );
    match next_ok(&mut stream).await {
        Update::Reauthorized { reason, delay } => {
            assert_eq!(
                (reason, delay),
                (expired_at(Cursor::new(3, 2)), Duration::ZERO)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Closed { code: 1008, .. }))
    ));
    assert!(stream.next().await.is_none());
    let mut handshakes = Vec::new();
    while let Some(head) = seen.recv().await {
        handshakes.push(head);
    }
    let expected = [
        ("/chat/lobby/ws", "Bearer t1"),
        ("/chat/lobby/ws?after=3-1", "Bearer t2"),
        ("/chat/lobby/ws?after=3-2", "Bearer t3"),
    ];
    assert_eq!(handshakes.len(), expected.len());
    for ((uri, authorization, tenant), (want_uri, want_authorization)) in
        handshakes.iter().zip(expected)
    {
        assert_eq!(
            (uri.as_str(), authorization.as_str(), tenant.as_str()),
            (want_uri, want_authorization, "acme")
        );
    }
    assert_eq!(
        asked(&reasons),
        [
            CredentialsReason::Connect,
            expired_at(Cursor::new(3, 1)),
            expired_at(Cursor::new(3, 2)),
        ]
    );
}

#[tokio::test]
async fn sse_resumes_from_the_expired_cursor_at_once_with_fresh_credentials() {
    let first = sse_stream(
        "2-0",
        &[
            sse_event("2-1", "cleared", CLEARED),
            sse_event("2-1", "push.expired", &expired_payload("2-1")),
            // Never read: the client leaves at push.expired.
            sse_event("2-2", "cleared", CLEARED),
        ]
        .concat(),
    );
    let (base, mut requests) = scripted_http_server(vec![
        first,
        sse_stream("2-1", &sse_event("2-2", "cleared", CLEARED)),
        bad_request("enough"),
    ])
    .await;
    let (config, reasons) = recording_provider(None);
    let config = config.initial_delay(Duration::from_secs(5));
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client.subscribe("lobby").stream();
    let mut cursors = Vec::new();
    loop {
        match stream.next().await {
            Some(Ok(Update::Event { cursor, .. })) => cursors.push(cursor),
            Some(Ok(Update::Reauthorized { reason, delay })) => {
                assert_eq!(delay, Duration::ZERO);
                assert_eq!(
                    reason,
                    CredentialsReason::Expired {
                        cursor: Some(Cursor::new(2, 1))
                    }
                );
                assert_eq!(stream.position(), Some(Cursor::new(2, 1)));
            }
            Some(Ok(Update::Ready { .. })) => {}
            // The second stream ends without push.end: an ordinary reconnection.
            Some(Ok(Update::Reconnecting { .. })) => {}
            Some(Err(ClientError::Rejected { status: 400, .. })) => break,
            other => panic!("{other:?}"),
        }
    }
    // Nothing lost, nothing twice.
    assert_eq!(cursors, [Cursor::new(2, 1), Cursor::new(2, 2)]);
    let seen = all_seen(&mut requests).await;
    let lines: Vec<_> = seen.iter().map(|seen| seen.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "GET /chat/lobby/sse HTTP/1.1",
            "GET /chat/lobby/sse?after=2-1 HTTP/1.1",
            "GET /chat/lobby/sse?after=2-2 HTTP/1.1",
        ]
    );
    assert!(seen[1].head.contains("authorization: bearer t2\r\n"));
    assert_eq!(
        asked(&reasons),
        [
            CredentialsReason::Connect,
            CredentialsReason::Expired {
                cursor: Some(Cursor::new(2, 1))
            },
            CredentialsReason::Reconnect,
        ]
    );
}

#[tokio::test]
async fn iframe_resumes_from_the_expired_cursor_and_ends_when_the_provider_declines() {
    let ready = |cursor: &str| item(cursor, "push.ready", &expired_payload(cursor));
    let expired = |cursor: &str| item(cursor, "push.expired", &expired_payload(cursor));
    let (base, mut requests) = scripted_http_server(vec![
        forever_frame(
            &[
                ready("4-0"),
                item("4-1", "cleared", CLEARED),
                expired("4-1"),
            ],
            None,
        ),
        forever_frame(
            &[
                ready("4-1"),
                item("4-2", "cleared", CLEARED),
                expired("4-2"),
            ],
            None,
        ),
    ])
    .await;
    // Gives credentials twice (connect, first expiry), then declines.
    let (config, reasons) = recording_provider(Some(3));
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::Iframe)
        .stream();
    assert!(matches!(next_ok(&mut stream).await, Update::Ready { .. }));
    assert!(
        matches!(next_ok(&mut stream).await, Update::Event { cursor, .. } if cursor == Cursor::new(4, 1))
    );
    assert!(matches!(
        next_ok(&mut stream).await,
        Update::Reauthorized {
            delay: Duration::ZERO,
            ..
        }
    ));
    assert!(
        matches!(next_ok(&mut stream).await, Update::Ready { cursor } if cursor == Cursor::new(4, 1))
    );
    assert!(
        matches!(next_ok(&mut stream).await, Update::Event { cursor, .. } if cursor == Cursor::new(4, 2))
    );
    match stream.next().await {
        Some(Err(ClientError::Expired { cursor })) => {
            assert_eq!(cursor, Some(Cursor::new(4, 2)));
        }
        other => panic!("{other:?}"),
    }
    assert!(stream.next().await.is_none());
    assert_eq!(stream.position(), Some(Cursor::new(4, 2)));
    let seen = all_seen(&mut requests).await;
    let lines: Vec<_> = seen.iter().map(|seen| seen.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "GET /chat/lobby/iframe HTTP/1.1",
            "GET /chat/lobby/iframe?after=4-1 HTTP/1.1",
        ]
    );
    assert_eq!(asked(&reasons).len(), 3);
}

#[tokio::test]
async fn without_a_provider_expiry_and_refusals_end_the_stream_with_typed_errors() {
    // push.expired on SSE.
    let (base, _requests) = scripted_http_server(vec![sse_stream(
        "2-0",
        &sse_event("2-0", "push.expired", &expired_payload("2-0")),
    )])
    .await;
    let mut stream = Client::<Chat>::with_config(&base, quick_config())
        .expect("client")
        .subscribe("lobby")
        .stream();
    assert!(matches!(next_ok(&mut stream).await, Update::Ready { .. }));
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Expired { cursor: Some(cursor) })) if cursor == Cursor::new(2, 0)
    ));
    assert!(stream.next().await.is_none());

    // 401 and 403 on every HTTP transport, with the server's message.
    for transport in [
        Transport::Sse,
        Transport::ShortPoll,
        Transport::LongPoll,
        Transport::Iframe,
        Transport::WebSocket,
    ] {
        for (status, line) in [(401, "401 Unauthorized"), (403, "403 Forbidden")] {
            let answer = response(line, "text/plain", "", "a bearer token is required\n");
            let (base, _requests) = scripted_http_server(vec![answer]).await;
            let mut stream = Client::<Chat>::with_config(&base, quick_config())
                .expect("client")
                .subscribe("lobby")
                .transport(transport)
                .stream();
            match stream.next().await {
                Some(Err(ClientError::Unauthorized {
                    status: said,
                    message,
                })) => {
                    assert_eq!(
                        (said, message.as_str()),
                        (status, "a bearer token is required"),
                        "{transport:?}"
                    );
                }
                other => panic!("{transport:?} {status}: {other:?}"),
            }
            assert!(stream.next().await.is_none(), "{transport:?}");
        }
    }
}

#[tokio::test]
async fn a_long_poll_answered_401_expired_resumes_from_its_position_at_once() {
    let (base, mut requests) = scripted_http_server(vec![
        poll_answer("5-2", false, &[&item("5-2", "cleared", CLEARED)]),
        // The poll held at the expiry.
        unauthorized("authorization expired"),
        poll_answer("5-3", false, &[&item("5-3", "cleared", CLEARED)]),
        bad_request("enough"),
    ])
    .await;
    let (config, reasons) = recording_provider(None);
    let config = config.initial_delay(Duration::from_secs(5));
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::LongPoll)
        .after(Cursor::new(5, 1))
        .stream();
    assert!(
        matches!(next_ok(&mut stream).await, Update::Ready { cursor } if cursor == Cursor::new(5, 1))
    );
    assert!(
        matches!(next_ok(&mut stream).await, Update::Event { cursor, .. } if cursor == Cursor::new(5, 2))
    );
    let expired = CredentialsReason::Expired {
        cursor: Some(Cursor::new(5, 2)),
    };
    match next_ok(&mut stream).await {
        Update::Reauthorized { reason, delay } => {
            assert_eq!((reason, delay), (expired.clone(), Duration::ZERO));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(next_ok(&mut stream).await, Update::Ready { cursor } if cursor == Cursor::new(5, 2))
    );
    assert!(
        matches!(next_ok(&mut stream).await, Update::Event { cursor, .. } if cursor == Cursor::new(5, 3))
    );
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Rejected { status: 400, .. }))
    ));
    let seen = all_seen(&mut requests).await;
    let lines: Vec<_> = seen.iter().map(|seen| seen.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "GET /chat/lobby/long-poll?after=5-1&timeout=25&limit=15 HTTP/1.1",
            "GET /chat/lobby/long-poll?after=5-2&timeout=25&limit=15 HTTP/1.1",
            "GET /chat/lobby/long-poll?after=5-2&timeout=25&limit=15 HTTP/1.1",
            "GET /chat/lobby/long-poll?after=5-3&timeout=25&limit=15 HTTP/1.1",
        ]
    );
    // Every poll of a run sends the run's credentials; the next run, fresh ones.
    let tokens: Vec<_> = seen
        .iter()
        .map(|seen| {
            seen.head
                .lines()
                .find_map(|line| line.strip_prefix("authorization: bearer "))
                .unwrap_or("none")
                .to_owned()
        })
        .collect();
    assert_eq!(tokens, ["t1", "t1", "t2", "t2"]);
    assert_eq!(asked(&reasons), [CredentialsReason::Connect, expired]);
}

#[tokio::test]
async fn a_short_poll_answered_401_expired_ends_without_a_provider() {
    let (base, _requests) = scripted_http_server(vec![
        poll_answer("5-2", false, &[&item("5-2", "cleared", CLEARED)]),
        unauthorized("authorization expired"),
    ])
    .await;
    let config = quick_config().poll_interval(Duration::from_millis(1));
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client
        .subscribe("lobby")
        .transport(Transport::ShortPoll)
        .after(Cursor::new(5, 1))
        .stream();
    assert!(matches!(next_ok(&mut stream).await, Update::Ready { .. }));
    assert!(matches!(next_ok(&mut stream).await, Update::Event { .. }));
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::Expired { cursor: Some(cursor) })) if cursor == Cursor::new(5, 2)
    ));
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn repeated_refusals_back_off_and_give_up_instead_of_spinning() {
    let refusals: Vec<_> = (0..4).map(|_| unauthorized("token rejected")).collect();
    let (base, mut requests) = scripted_http_server(refusals).await;
    let (config, reasons) = recording_provider(None);
    let config = config
        .initial_delay(Duration::from_millis(40))
        .max_delay(Duration::from_secs(1))
        .max_retries(Some(3));
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client.subscribe("lobby").stream();
    let mut delays = Vec::new();
    loop {
        match stream.next().await {
            Some(Ok(Update::Reauthorized { reason, delay })) => {
                assert_eq!(
                    reason,
                    CredentialsReason::Refused {
                        status: 401,
                        message: "token rejected".to_owned()
                    }
                );
                delays.push(delay);
            }
            Some(Err(ClientError::GaveUp { attempts, last })) => {
                assert_eq!(attempts, 3);
                assert!(matches!(
                    *last,
                    ClientError::Unauthorized { status: 401, .. }
                ));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(stream.next().await.is_none());
    // Doubling from the initial delay (backon computes in f32: within 1 ms).
    assert_eq!(delays.len(), 3);
    for (delay, expected) in delays.iter().zip([40, 80, 160]) {
        assert!(delay.as_millis().abs_diff(expected) <= 1, "{delays:?}");
    }
    let seen = all_seen(&mut requests).await;
    assert_eq!(seen.len(), 4);
    for (pair, delay) in seen.windows(2).zip(&delays) {
        assert!(
            pair[1].at - pair[0].at >= *delay,
            "retried before {delay:?}"
        );
    }
    // Each attempt sent the token the provider gave after the refusal before it.
    for (request, token) in seen.iter().zip(["t1", "t2", "t3", "t4"]) {
        assert!(
            request
                .head
                .contains(&format!("authorization: bearer {token}\r\n")),
            "{}",
            request.head
        );
    }
    // Connect, then one refusal per retry: not asked once retries are spent.
    assert_eq!(asked(&reasons).len(), 4);
    assert_eq!(asked(&reasons)[0], CredentialsReason::Connect);
}

#[tokio::test]
async fn a_provider_that_declines_at_first_sends_nothing() {
    let (base, mut requests) = scripted_http_server(vec![bad_request("never asked")]).await;
    let (config, reasons) = recording_provider(Some(1));
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client.subscribe("lobby").stream();
    assert!(matches!(
        stream.next().await,
        Some(Err(ClientError::CredentialsDeclined))
    ));
    assert!(stream.next().await.is_none());
    assert_eq!(asked(&reasons), [CredentialsReason::Connect]);
    drop(stream);
    drop(client);
    // The server task still waits for its one connection: nothing came.
    assert!(requests.try_recv().is_err());
}

#[tokio::test]
async fn expiries_that_bring_nothing_wait_for_the_reconnection_delay() {
    // Credentials that expire right after `push.ready`, every time.
    let expiring = |cursor: &str| {
        sse_stream(
            cursor,
            &sse_event(cursor, "push.expired", &expired_payload(cursor)),
        )
    };
    let (base, mut requests) = scripted_http_server(vec![
        expiring("7-0"),
        expiring("7-0"),
        expiring("7-0"),
        bad_request("enough"),
    ])
    .await;
    let (config, _reasons) = recording_provider(None);
    let delay = Duration::from_millis(300);
    let config = config.initial_delay(delay);
    let client = Client::<Chat>::with_config(&base, config).expect("client");
    let mut stream = client.subscribe("lobby").stream();
    let mut delays = Vec::new();
    loop {
        match stream.next().await {
            Some(Ok(Update::Ready { .. })) => {}
            Some(Ok(Update::Reauthorized { delay, .. })) => delays.push(delay),
            Some(Err(ClientError::Rejected { status: 400, .. })) => break,
            other => panic!("{other:?}"),
        }
    }
    // The first at once (it may follow progress made before), then waits.
    assert_eq!(delays.len(), 3);
    assert_eq!(delays[0], Duration::ZERO);
    for later in &delays[1..] {
        assert!(later.as_millis().abs_diff(300) <= 1, "{delays:?}");
    }
    let seen = all_seen(&mut requests).await;
    assert!(seen[2].at - seen[1].at >= delays[1] && seen[3].at - seen[2].at >= delays[2]);
}
