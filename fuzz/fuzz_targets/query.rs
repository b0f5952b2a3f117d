#![no_main]
//! The query string of every route, `after` and `events` for the chat channel: see `query` in push-runtime/src/fuzz.rs.

use libfuzzer_sys::fuzz_target;
use push_runtime::__fuzz::server;

fuzz_target!(|data: &[u8]| server::query::<push_fuzz::ChatEvent>(data));
