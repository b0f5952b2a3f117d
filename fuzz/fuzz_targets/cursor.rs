#![no_main]
//! A cursor (`after`, `Last-Event-ID`, a tag's cursor): see `cursor` in push-runtime/src/fuzz.rs.

use libfuzzer_sys::fuzz_target;
use push_runtime::__fuzz::server;

fuzz_target!(|data: &[u8]| server::cursor(data));
