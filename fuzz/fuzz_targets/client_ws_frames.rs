#![no_main]
//! WebSocket frames from a server, as the client reads them: see `ws_frames` in push-runtime/src/client/fuzz.rs.

use libfuzzer_sys::fuzz_target;
use push_runtime::__fuzz::client;

fuzz_target!(|data: &[u8]| client::ws_frames::<push_fuzz::ChatEvent>(data));
