#![no_main]
//! `If-None-Match` (a poll's entity tag) with a query: see `if_none_match` in push-runtime/src/fuzz.rs.

use libfuzzer_sys::fuzz_target;
use push_runtime::__fuzz::server;

fuzz_target!(|data: &[u8]| server::if_none_match::<push_fuzz::ChatEvent>(data));
