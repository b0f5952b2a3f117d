#![no_main]
//! The client's WebSocket message parser: see `ws_message` in push-runtime/src/client/fuzz.rs.

use libfuzzer_sys::fuzz_target;
use push_runtime::__fuzz::client;

fuzz_target!(|data: &[u8]| client::ws_message::<push_fuzz::ChatEvent>(data));
