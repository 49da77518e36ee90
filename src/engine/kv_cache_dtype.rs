//! How a KV cache stores K and V: vLLM's `--kv-cache-dtype auto|fp8` (docs/fp8-kv.md).

use std::str::FromStr;

use crate::model::ModelConfig;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvCacheDtype {
    /// The model's dtype: bf16 on the GPU; the CPU reference keeps f32.
    #[default]
    Auto,
    /// FP8 e4m3 with one f32 scale per token and KV head (the head's largest magnitude maps to
    /// 448): half the bytes of bf16 a token, twice the tokens in the same memory.
    Fp8E4m3,
}

impl KvCacheDtype {
    pub fn as_str(self) -> &'static str {
        match self {
            KvCacheDtype::Auto => "auto",
            KvCacheDtype::Fp8E4m3 => "fp8",
        }
    }

    /// Bytes of K and V a token takes in a GPU cache, all layers: bf16 for `Auto`; for FP8 one
    /// byte a value plus one f32 scale per KV head row (52 % of bf16 at head_dim 128).
    pub fn gpu_bytes_per_token(self, config: &ModelConfig) -> usize {
        match self {
            KvCacheDtype::Auto => config.kv_bytes_per_token(),
            KvCacheDtype::Fp8E4m3 => 2 * config.n_layers * (config.kv_dim() + 4 * config.n_kv_heads),
        }
    }

    /// What the GPU cache stores, for start-up lines and benchmark headers.
    pub fn gpu_label(self) -> &'static str {
        match self {
            KvCacheDtype::Auto => "bf16",
            KvCacheDtype::Fp8E4m3 => "fp8 e4m3",
        }
    }
}

impl FromStr for KvCacheDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" | "bf16" => Ok(KvCacheDtype::Auto),
            "fp8" | "fp8_e4m3" => Ok(KvCacheDtype::Fp8E4m3),
            other => Err(format!("unknown KV cache dtype {other:?}: expected auto (bf16), or fp8 (e4m3)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_takes_52_percent_of_bf16_at_nemos_shape() {
        let c = ModelConfig::nemo_12b();
        assert_eq!(KvCacheDtype::Auto.gpu_bytes_per_token(&c), 40 * 2 * 1024 * 2);
        assert_eq!(KvCacheDtype::Fp8E4m3.gpu_bytes_per_token(&c), 40 * 2 * (1024 + 32));
    }

    #[test]
    fn parses_vllms_names_and_refuses_others_by_name() {
        assert_eq!("auto".parse(), Ok(KvCacheDtype::Auto));
        assert_eq!("bf16".parse(), Ok(KvCacheDtype::Auto));
        assert_eq!("fp8".parse(), Ok(KvCacheDtype::Fp8E4m3));
        assert_eq!("fp8_e4m3".parse(), Ok(KvCacheDtype::Fp8E4m3));
        let e = "fp8_e5m2".parse::<KvCacheDtype>().unwrap_err();
        assert!(e.contains("\"fp8_e5m2\"") && e.contains("fp8 (e4m3)"), "{e}");
        for d in [KvCacheDtype::Auto, KvCacheDtype::Fp8E4m3] {
            assert_eq!(d.as_str().parse(), Ok(d));
        }
    }
}
