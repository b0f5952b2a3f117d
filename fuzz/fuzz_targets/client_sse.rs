#![no_main]
//! The client's SSE parser: see `sse` in push-runtime/src/client/fuzz.rs.

use libfuzzer_sys::fuzz_target;
use push_runtime::__fuzz::client;

fuzz_target!(|data: &[u8]| client::sse::<push_fuzz::ChatEvent>(data));
