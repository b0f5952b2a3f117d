//! The browser client: `{base}/client.js` (an ES module speaking every
//! transport) and `{base}/client.d.ts` (its TypeScript declarations, typed
//! with the channel's events).

pub mod typescript;

use crate::channel::{Channel, EventKind};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::hash::{DefaultHasher, Hash, Hasher};

const CLIENT_JS: &str = include_str!("client.js");
/// Where the server writes the channel's base path and wire names into `client.js`.
const PATH_SLOT: &str = "/*PUSH_PATH*/\"\"";
const NAMES_SLOT: &str = "/*PUSH_NAMES*/[]";

/// The channel's `client.js` source, with its base path and wire names filled in.
pub fn client_js<C: Channel>() -> String {
    let names =
        serde_json::to_string(<C::Kind as EventKind>::NAMES).unwrap_or_else(|_| "[]".into());
    let path = serde_json::Value::from(C::PATH).to_string();
    CLIENT_JS
        .replacen(PATH_SLOT, &path, 1)
        .replacen(NAMES_SLOT, &names, 1)
}

/// The channel's `client.d.ts`: its event payloads as TypeScript types and the
/// typed client API (what the generated `typescript()` function returns).
pub fn client_dts<C: Channel>() -> String {
    match C::TYPESCRIPT {
        Some(shape) => typescript::declarations(shape, C::PATH),
        None => typescript::untyped_declarations(<C::Kind as EventKind>::NAMES, C::PATH),
    }
}

/// One file of the browser client, ready to serve.
#[derive(Clone)]
pub(crate) struct Asset {
    body: Bytes,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    pub(crate) fn new(text: String, content_type: &'static str) -> Self {
        let mut hasher = DefaultHasher::new();
        text.hash(&mut hasher);
        let etag = HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish()))
            .unwrap_or(HeaderValue::from_static("\"0\""));
        Self {
            body: Bytes::from(text),
            content_type,
            etag,
        }
    }

    /// `200` with the file, or `304` when the browser's copy is current.
    /// `no-cache` makes browsers revalidate (cheap, thanks to the `ETag`), so a
    /// new server version is picked up at once; `*` lets pages of any origin
    /// import the module (it holds no data, only code).
    pub(crate) fn respond(&self, request: &HeaderMap) -> Response {
        let headers = [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::ETAG, self.etag.clone()),
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ];
        let fresh = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|tag| tag.trim().trim_start_matches("W/") == self.etag);
        if fresh {
            (StatusCode::NOT_MODIFIED, headers).into_response()
        } else {
            (headers, self.body.clone()).into_response()
        }
    }
}
