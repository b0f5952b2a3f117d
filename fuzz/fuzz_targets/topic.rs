#![no_main]
//! A topic name under a length limit: see `topic` in push-runtime/src/fuzz.rs.

use libfuzzer_sys::fuzz_target;
use push_runtime::__fuzz::server;

fuzz_target!(|data: &[u8]| server::topic(data));
