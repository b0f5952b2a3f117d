#![no_main]
//! A publish body into the chat example's event, then through every transport to the client: see `publish_body` in push-runtime/src/fuzz.rs.

use libfuzzer_sys::fuzz_target;
use push_runtime::__fuzz::server;

fuzz_target!(|data: &[u8]| server::publish_body::<push_fuzz::ChatEvent>(data));
