//! Hostile files: every parser of an untrusted file (safetensors, params.json, config.json,
//! tekken.json, tokenizer.json, GGUF) answers any input with its value or a typed error that
//! names the file, never a panic, an out-of-bounds read or an allocation sized by a header.
//!
//! - [`seeds`]: the committed seed corpus (`fuzz/seeds/`): `ok-*` accepted, `bad-*` refused
//!   with a message naming the file and the field.
//! - [`fuzz_pass`]: the libFuzzer harnesses (`fuzz/harness.rs`), bounded: every seed plus a few
//!   thousand deterministic mutations per parser.
//! - `*_props`: structured property tests (proptest) with an independent oracle of what each
//!   parser must accept.
//! - [`regressions`]: the inputs fuzzing found, one test each.
//!
//! This binary's allocator refuses any single allocation above [`alloc_cap::LIMIT`]: a
//! parser that sizes a buffer by a header field aborts the run with the target and case named.

mod alloc_cap;
mod config_props;
mod expected;
mod fuzz_pass;
mod gguf_props;
mod json_tree_props;
mod regressions;
mod safetensors_props;
mod seeds;
mod tekken_props;

#[path = "../../fuzz/harness.rs"]
mod harness;

#[path = "../gguf_support/writer.rs"]
mod writer;

#[global_allocator]
static ALLOCATOR: alloc_cap::Capped = alloc_cap::Capped;
