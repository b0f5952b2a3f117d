#![no_main]
//! The client's forever-frame parser: see `iframe` in push-runtime/src/client/fuzz.rs.

use libfuzzer_sys::fuzz_target;
use push_runtime::__fuzz::client;

fuzz_target!(|data: &[u8]| client::iframe::<push_fuzz::ChatEvent>(data));
