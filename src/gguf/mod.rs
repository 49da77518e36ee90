//! A native GGUF reader for the demo model (SmolLM2-135M-Instruct, Q4_1), see `docs/gguf.md`.
//!
//! - [`reader`]: header, metadata, tensor table, memory-mapped data; hostile files refused.
//! - [`quant`]: Q4_0, Q4_1, Q8_0, F16, BF16, F32 dequantised to bf16 at load.
//! - [`model`]: the `llama` architecture to [`crate::model::ModelConfig`] and
//!   [`crate::model::ModelWeights`] (q/k rows in llama.cpp's interleaved RoPE order).
//! - [`tokenizer`]: a `tokenizers::Tokenizer` from the `tokenizer.ggml.*` metadata.
//! - [`chat_template`]: the Jinja `tokenizer.chat_template`, rendered with minijinja.

/// Where `scripts/setup.sh` puts the demo model (SmolLM2-135M-Instruct, Q4_1), relative to the
/// repository root.
pub const DEMO_MODEL_PATH: &str = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

pub mod chat_template;
mod cursor;
pub mod error;
pub mod header;
pub mod model;
pub mod quant;
pub mod reader;
pub mod tokenizer;
pub mod value;

pub use chat_template::{ChatMessage, ChatTemplate};
pub use error::{GgufError, GgufErrorKind};
pub use header::GgmlType;
pub use model::{llama_config, load_llama};
pub use reader::{GgufFile, TensorInfo};
pub use tokenizer::{build_tokenizer, GgufTokenizer};
pub use value::{Array, Value};
