#![no_main]
//! WebSocket frames from a client, as the server's pump reads them: see `ws_frames` in push-runtime/src/fuzz.rs.

use libfuzzer_sys::fuzz_target;
use push_runtime::__fuzz::server;

fuzz_target!(|data: &[u8]| server::ws_frames(data));
