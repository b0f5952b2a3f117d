#![no_main]
//! The client's poll answer parser: see `poll_answer` in push-runtime/src/client/fuzz.rs.

use libfuzzer_sys::fuzz_target;
use push_runtime::__fuzz::client;

fuzz_target!(|data: &[u8]| client::poll_answer::<push_fuzz::ChatEvent>(data));
