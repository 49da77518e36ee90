//! Sampling values a model recommends, used for every flag the user left out:
//! - a GGUF file's `general.sampling.{temp,top_p,top_k,min_p}` (llama.cpp's keys), when present;
//! - an HF checkpoint's `generation_config.json` `temperature` / `top_p` / `top_k` / `min_p`
//!   (what vLLM applies by default);
//! - otherwise temperature 0.3: Mistral-Nemo's model card recommends it for this model, and it
//!   is kept for the demo model too, whose GGUF carries no sampling keys (SmolLM2-135M's
//!   configuration names none either; its card's example samples at 0.2 with top_p 0.9).
//!   Filters stay off.

use std::path::Path;

use anyhow::Context;
use nemo_engine::gguf::{GgufFile, Value};
use nemo_engine::sampling::SamplingParams;

use super::args::SamplingArgs;

/// Mistral-Nemo-Instruct-2407's card: "we recommend using a temperature of 0.3".
pub const FALLBACK_TEMPERATURE: f32 = 0.3;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recommended {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    /// Where the values came from, for the notice.
    pub source: String,
}

impl Recommended {
    pub fn from_gguf(file: &GgufFile) -> anyhow::Result<Self> {
        let f = |k: &str| -> anyhow::Result<Option<f32>> {
            Ok(file.opt_f64(&format!("general.sampling.{k}"))?.map(|v| v as f32))
        };
        // llama.cpp writes top_k as i32, -1 or 0 meaning off.
        let top_k = match file.get("general.sampling.top_k") {
            None => None,
            Some(Value::I32(k)) if *k < 0 => Some(0),
            Some(Value::I64(k)) if *k < 0 => Some(0),
            Some(v) => Some(v.as_u64().map(|k| k as usize).with_context(|| {
                format!("general.sampling.top_k: expected an integer, found {}", v.describe())
            })?),
        };
        Ok(Recommended {
            temperature: f("temp")?,
            top_p: f("top_p")?,
            top_k,
            min_p: f("min_p")?,
            source: "the GGUF's general.sampling keys".into(),
        })
    }

    /// An HF checkpoint's generation_config.json, when it has one.
    pub fn from_generation_config(dir: &Path) -> anyhow::Result<Self> {
        let file = dir.join("generation_config.json");
        if !file.is_file() {
            return Ok(Recommended::default());
        }
        let text = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", file.display()))?;
        let num = |k: &str| json.get(k).and_then(serde_json::Value::as_f64);
        Ok(Recommended {
            temperature: num("temperature").map(|v| v as f32),
            top_p: num("top_p").map(|v| v as f32),
            top_k: num("top_k").map(|v| v.max(0.0) as usize),
            min_p: num("min_p").map(|v| v as f32),
            source: file.display().to_string(),
        })
    }

    /// The parameters to run with: the flags given, else the recommendation, else the
    /// fallback temperature and neutral filters. Says on stderr which defaults were applied.
    pub fn apply(&self, args: &SamplingArgs) -> SamplingParams {
        let neutral = SamplingParams::default();
        let mut applied = Vec::new();
        let mut pick = |name: &str, flag: Option<f32>, rec: Option<f32>| {
            if flag.is_none() {
                if let Some(v) = rec {
                    applied.push(format!("{name} {v}"));
                }
            }
            flag.or(rec)
        };
        let temperature = pick("temperature", args.temperature, self.temperature);
        let top_p = pick("top_p", args.top_p, self.top_p).unwrap_or(neutral.top_p);
        let min_p = pick("min_p", args.min_p, self.min_p).unwrap_or(neutral.min_p);
        if args.top_k.is_none() {
            if let Some(k) = self.top_k {
                applied.push(format!("top_k {k}"));
            }
        }
        let top_k = args.top_k.or(self.top_k).unwrap_or(neutral.top_k);
        if !applied.is_empty() {
            eprintln!("nemo: sampling: {} (from {})", applied.join(", "), self.source);
        }
        let temperature = temperature.unwrap_or_else(|| {
            eprintln!(
                "nemo: sampling: temperature {FALLBACK_TEMPERATURE} (the model names none; \
                 Mistral-Nemo's recommended value); --temperature to change, 0 = greedy"
            );
            FALLBACK_TEMPERATURE
        });
        SamplingParams { temperature, top_p, top_k, min_p, seed: args.seed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(temperature: Option<f32>, top_k: Option<usize>) -> SamplingArgs {
        SamplingArgs { temperature, top_p: None, top_k, min_p: None, seed: 3, repetition_penalty: 1.0, frequency_penalty: 0.0, presence_penalty: 0.0, logit_bias: Vec::new() }
    }

    #[test]
    fn flags_win_then_the_model_then_the_fallback() {
        let none = Recommended::default();
        let p = none.apply(&args(None, None));
        assert_eq!((p.temperature, p.top_p, p.top_k, p.min_p, p.seed), (0.3, 1.0, 0, 0.0, 3));
        let rec = Recommended { temperature: Some(0.7), top_k: Some(40), top_p: Some(0.9), ..Default::default() };
        let p = rec.apply(&args(None, None));
        assert_eq!((p.temperature, p.top_p, p.top_k), (0.7, 0.9, 40));
        let p = rec.apply(&args(Some(0.0), Some(0)));
        assert_eq!((p.temperature, p.top_p, p.top_k), (0.0, 0.9, 0));
        // A flag's bad value reaches validation untouched.
        assert!(none.apply(&args(Some(f32::NAN), None)).temperature.is_nan());
    }

    #[test]
    fn generation_config_values_are_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Recommended::from_generation_config(dir.path()).unwrap(), Recommended::default());
        std::fs::write(dir.path().join("generation_config.json"), r#"{"temperature": 0.6, "top_k": 20, "eos_token_id": 2}"#).unwrap();
        let r = Recommended::from_generation_config(dir.path()).unwrap();
        assert_eq!((r.temperature, r.top_k, r.top_p), (Some(0.6), Some(20), None));
    }
}
