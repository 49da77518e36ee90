//! libFuzzer target: arbitrary bytes as a hf_config_json file (see fuzz/harness.rs for the checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::hf_config_json(data));
