//! The two config formats: Mistral's `params.json` and HF's `config.json`, each parsed into a
//! validated [`ModelConfig`]. Values are read key by key (not through a derived struct) so an
//! error names the key, the file and what was expected.

use std::path::Path;

use serde_json::{Map, Value};

use super::config::{ModelConfig, DEFAULT_MAX_CONTEXT};
use super::error::LoadError;

/// Upper bounds far above any real model, so a corrupt value fails here with a clear message
/// instead of as an allocation failure or an overflow later. Every config reader uses them
/// (GGUF's `llama.*` keys too).
pub const MAX_DIM: usize = 1 << 17;
pub const MAX_LAYERS: usize = 1024;
pub const MAX_HEADS: usize = 1024;
pub const MAX_HEAD_DIM: usize = 1024;
pub const MAX_FFN_DIM: usize = 1 << 20;
pub const MAX_VOCAB: usize = 1 << 24;

/// Reads and parses a JSON object file.
pub fn read_json_object(path: &Path) -> Result<Map<String, Value>, LoadError> {
    let bytes = std::fs::read(path).map_err(|e| LoadError::io(path, e))?;
    json_object(path, &bytes)
}

/// Parses a JSON object from bytes; `path` labels errors. Invalid UTF-8 is a JSON error with
/// its position, like any other syntax error.
pub fn json_object(path: &Path, bytes: &[u8]) -> Result<Map<String, Value>, LoadError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(LoadError::NotAnObject {
            path: path.to_path_buf(),
            found: kind_of(&other),
        }),
        Err(source) => Err(LoadError::Json {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Mistral's `params.json`: dim, n_layers, head_dim (optional: then dim / n_heads, Mistral's
/// documented default), hidden_dim, n_heads, n_kv_heads, norm_eps, vocab_size, rope_theta.
pub fn parse_params_json(path: &Path) -> Result<ModelConfig, LoadError> {
    params_from_object(path, &read_json_object(path)?)
}

/// [`parse_params_json`] over the file's bytes already in memory; `path` labels errors.
pub fn parse_params_json_bytes(path: &Path, bytes: &[u8]) -> Result<ModelConfig, LoadError> {
    params_from_object(path, &json_object(path, bytes)?)
}

fn params_from_object(path: &Path, obj: &Map<String, Value>) -> Result<ModelConfig, LoadError> {
    let keys = Keys { path, obj };
    for unsupported in ["moe", "vision_encoder", "lora", "quantization"] {
        if keys.present(unsupported) {
            return Err(LoadError::Unsupported {
                path: path.to_path_buf(),
                message: format!(
                    "`{unsupported}` is set; only the dense text model is implemented"
                ),
            });
        }
    }
    let dim = keys.usize("dim", MAX_DIM)?;
    let n_heads = keys.usize("n_heads", MAX_HEADS)?;
    let head_dim = match keys.optional_usize("head_dim", MAX_HEAD_DIM)? {
        Some(h) => h,
        None => default_head_dim(path, "head_dim", dim, n_heads)?,
    };
    let config = ModelConfig {
        dim,
        n_layers: keys.usize("n_layers", MAX_LAYERS)?,
        head_dim,
        n_heads,
        n_kv_heads: keys.usize("n_kv_heads", MAX_HEADS)?,
        ffn_dim: keys.usize("hidden_dim", MAX_FFN_DIM)?,
        vocab_size: keys.usize("vocab_size", MAX_VOCAB)?,
        rope_theta: keys.positive_f64("rope_theta")?,
        norm_eps: keys.norm_eps("norm_eps")?,
        max_context: DEFAULT_MAX_CONTEXT,
        tied_embeddings: false,
    };
    keys.check_sliding_window("sliding_window", config.max_context)?;
    check_config(path, &config, "n_kv_heads", "head_dim")?;
    Ok(config)
}

/// HF's `config.json` (`MistralForCausalLM`).
pub fn parse_config_json(path: &Path) -> Result<ModelConfig, LoadError> {
    config_from_object(path, &read_json_object(path)?)
}

/// [`parse_config_json`] over the file's bytes already in memory; `path` labels errors.
pub fn parse_config_json_bytes(path: &Path, bytes: &[u8]) -> Result<ModelConfig, LoadError> {
    config_from_object(path, &json_object(path, bytes)?)
}

fn config_from_object(path: &Path, obj: &Map<String, Value>) -> Result<ModelConfig, LoadError> {
    let keys = Keys { path, obj };
    let unsupported = |message: String| LoadError::Unsupported {
        path: path.to_path_buf(),
        message,
    };

    if let Some(model_type) = keys.optional_str("model_type")? {
        if model_type != "mistral" && model_type != "llama" {
            return Err(unsupported(format!(
                "model_type is \"{model_type}\", expected \"mistral\""
            )));
        }
    }
    if let Some(act) = keys.optional_str("hidden_act")? {
        if act != "silu" {
            return Err(unsupported(format!(
                "hidden_act is \"{act}\"; only silu (SwiGLU) is implemented"
            )));
        }
    }
    for flag in ["attention_bias", "mlp_bias"] {
        if keys.optional_bool(flag)? == Some(true) {
            return Err(unsupported(format!(
                "`{flag}` is true; bias terms are not implemented"
            )));
        }
    }
    // RoPE scaling (YaRN, linear, llama3, ...) would change every angle: refuse it rather than
    // silently computing plain RoPE. transformers >= 5 moved theta into `rope_parameters`.
    let mut rope_theta = None;
    for key in ["rope_scaling", "rope_parameters"] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(p)) => {
                let rope_type = p.get("rope_type").or_else(|| p.get("type"));
                if let Some(t) = rope_type.filter(|t| t.as_str() != Some("default")) {
                    return Err(unsupported(format!(
                        "{key}.rope_type is {t}; only default RoPE is implemented"
                    )));
                }
                if let Some(theta) = p.get("rope_theta") {
                    rope_theta = Some(
                        Keys { path, obj: p }
                            .positive_f64_value(&format!("{key}.rope_theta"), theta)?,
                    );
                }
            }
            Some(other) => {
                return Err(LoadError::config(
                    path,
                    key,
                    format!("expected an object or null, found {}", kind_of(other)),
                ));
            }
        }
    }
    let rope_theta = match rope_theta {
        Some(theta) if !keys.present("rope_theta") => theta,
        _ => keys.positive_f64("rope_theta")?,
    };

    let dim = keys.usize("hidden_size", MAX_DIM)?;
    let n_heads = keys.usize("num_attention_heads", MAX_HEADS)?;
    // transformers' MistralConfig: head_dim = head_dim or hidden_size // num_attention_heads.
    let head_dim = match keys.optional_usize("head_dim", MAX_HEAD_DIM)? {
        Some(h) => h,
        None => default_head_dim(path, "head_dim", dim, n_heads)?,
    };
    let config = ModelConfig {
        dim,
        n_layers: keys.usize("num_hidden_layers", MAX_LAYERS)?,
        head_dim,
        n_heads,
        n_kv_heads: keys.usize("num_key_value_heads", MAX_HEADS)?,
        ffn_dim: keys.usize("intermediate_size", MAX_FFN_DIM)?,
        vocab_size: keys.usize("vocab_size", MAX_VOCAB)?,
        rope_theta,
        norm_eps: keys.norm_eps("rms_norm_eps")?,
        max_context: DEFAULT_MAX_CONTEXT,
        tied_embeddings: keys.optional_bool("tie_word_embeddings")?.unwrap_or(false),
    };
    keys.check_sliding_window("sliding_window", config.max_context)?;
    check_config(path, &config, "num_key_value_heads", "head_dim")?;
    Ok(config)
}

/// Cross-field checks shared by both formats.
/// `kv_key` and `head_dim_key` are the format's names for those values, for the message.
pub fn check_config(
    path: &Path,
    c: &ModelConfig,
    kv_key: &str,
    head_dim_key: &str,
) -> Result<(), LoadError> {
    if c.n_heads % c.n_kv_heads != 0 {
        return Err(LoadError::config(
            path,
            kv_key,
            format!(
            "{} query heads are not a multiple of {} KV heads (grouped-query attention needs it)",
            c.n_heads, c.n_kv_heads),
        ));
    }
    if c.head_dim % 2 != 0 {
        return Err(LoadError::config(
            path,
            head_dim_key,
            format!("{} is odd; RoPE rotates pairs of dimensions", c.head_dim),
        ));
    }
    Ok(())
}

fn default_head_dim(
    path: &Path,
    key: &str,
    dim: usize,
    n_heads: usize,
) -> Result<usize, LoadError> {
    if dim % n_heads != 0 {
        return Err(LoadError::config(
            path,
            key,
            format!("absent, and the default dim / n_heads = {dim} / {n_heads} is not an integer"),
        ));
    }
    Ok(dim / n_heads)
}

fn kind_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Typed access to one config object, producing errors that name the file and key.
struct Keys<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
}

impl Keys<'_> {
    fn err(&self, key: &str, message: String) -> LoadError {
        LoadError::config(self.path, key, message)
    }

    fn present(&self, key: &str) -> bool {
        !matches!(self.obj.get(key), None | Some(Value::Null))
    }

    fn required(&self, key: &str) -> Result<&Value, LoadError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Err(self.err(key, "missing (required)".into())),
            Some(v) => Ok(v),
        }
    }

    fn usize(&self, key: &str, max: usize) -> Result<usize, LoadError> {
        let v = self.required(key)?;
        let n = v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
            self.err(
                key,
                format!("expected a positive integer, found {}", kind_of(v)),
            )
        })?;
        if n > max as u64 {
            return Err(self.err(key, format!("{n} is implausibly large (limit {max})")));
        }
        Ok(n as usize)
    }

    fn optional_usize(&self, key: &str, max: usize) -> Result<Option<usize>, LoadError> {
        if self.present(key) {
            self.usize(key, max).map(Some)
        } else {
            Ok(None)
        }
    }

    fn positive_f64(&self, key: &str) -> Result<f64, LoadError> {
        let v = self.required(key)?;
        self.positive_f64_value(key, v)
    }

    fn positive_f64_value(&self, key: &str, v: &Value) -> Result<f64, LoadError> {
        match v.as_f64() {
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            _ => Err(self.err(
                key,
                format!("expected a positive number, found {}", kind_of(v)),
            )),
        }
    }

    fn norm_eps(&self, key: &str) -> Result<f32, LoadError> {
        let eps = self.positive_f64(key)?;
        if eps >= 1.0 {
            return Err(self.err(
                key,
                format!("{eps} is implausibly large for an RMSNorm epsilon"),
            ));
        }
        // The norm runs in f32: an epsilon that is 0 (1e-75) or subnormal there divides 0 by 0,
        // or nearly, on a zero row.
        let eps32 = eps as f32;
        if eps32 < f32::MIN_POSITIVE {
            return Err(self.err(
                key,
                format!("{eps:e} is below the smallest normal f32 (the norm runs in f32); it must be at least {:e}", f32::MIN_POSITIVE),
            ));
        }
        Ok(eps32)
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>, LoadError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(key, format!("expected true or false, found {}", kind_of(v)))),
        }
    }

    fn optional_str(&self, key: &str) -> Result<Option<&str>, LoadError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(key, format!("expected a string, found {}", kind_of(v)))),
        }
    }

    /// Sliding-window attention is not implemented: a window is only acceptable when it covers
    /// the whole context, where it changes nothing.
    fn check_sliding_window(&self, key: &str, context: usize) -> Result<(), LoadError> {
        let Some(v) = self.obj.get(key).filter(|v| !v.is_null()) else {
            return Ok(());
        };
        let window = v.as_u64().ok_or_else(|| {
            self.err(
                key,
                format!("expected null or a positive integer, found {}", kind_of(v)),
            )
        })?;
        if window < context as u64 {
            return Err(LoadError::Unsupported {
                path: self.path.to_path_buf(),
                message: format!(
                    "sliding_window is {window}, shorter than the {context}-token context; \
                     sliding-window attention is not implemented"
                ),
            });
        }
        Ok(())
    }
}
