#![no_main]
//! `Last-Event-ID` with a query: see `last_event_id` in push-runtime/src/fuzz.rs.

use libfuzzer_sys::fuzz_target;
use push_runtime::__fuzz::server;

fuzz_target!(|data: &[u8]| server::last_event_id::<push_fuzz::ChatEvent>(data));
