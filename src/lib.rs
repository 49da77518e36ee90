//! nemo-engine: a from-scratch inference engine for Mistral-Nemo-Instruct-2407.
//!
//! - [`model`]: config and weights (both published layouts; no CUDA here).
//! - [`cpu`]: the plain f32 reference forward pass, the oracle for every kernel.
//! - [`gpu`]: the CUDA runtime and one typed wrapper per kernel in `kernels/`.
//! - [`sampling`]: greedy, temperature, top-k/top-p/min-p, logprobs.
//! - [`generate`]: the generation loop over any [`engine::Backend`].
//! - [`scheduler`]: continuous batching over the paged KV cache; the request/event engine.
//! - [`server`]: the OpenAI-compatible HTTP server over the scheduler's engine.
//! - [`structured`]: JSON-schema, regex, choice and Lark constraints on the output (llguidance).
//! - [`tokenizer`]: Tekken, the HF tokenizer, and the v3 chat template.
//! - [`gguf`]: a native GGUF reader (the SmolLM2 demo model).
//! - [`error_text`]: text from untrusted files made safe for a one-line error.

pub mod bench;
pub mod cpu;
pub mod engine;
pub mod error_text;
pub mod generate;
pub mod gguf;
pub mod gpu;
pub mod lab;
pub mod model;
pub mod perplexity;
pub mod sampling;
pub mod scheduler;
pub mod server;
pub mod structured;
pub mod tokenizer;
