//! libFuzzer target: arbitrary bytes as a tekken_json file (see fuzz/harness.rs for the checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::tekken_json(data));
