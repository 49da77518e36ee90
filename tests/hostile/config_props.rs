//! params.json and config.json with one key changed (removed, retyped, negative, fractional,
//! zero, huge, or a plausible other value), against an independent statement of what each key
//! accepts: the parser accepts exactly the configs that statement allows, reads back the
//! values it was given, and a refusal names the file and the key.

use std::path::Path;

use nemo_engine::model::params::{parse_config_json_bytes, parse_params_json_bytes};
use nemo_engine::model::ModelConfig;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// What a key accepts.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// A positive integer up to this limit (src/model/params.rs).
    Count(u64),
    /// Optional; a positive integer up to this limit when present.
    OptionalCount(u64),
    /// A finite number > 0 (below 1 for an epsilon).
    Positive { below_one: bool },
}

const PARAMS_KEYS: [(&str, Rule); 9] = [
    ("dim", Rule::Count(1 << 17)),
    ("n_layers", Rule::Count(1024)),
    ("head_dim", Rule::OptionalCount(1024)),
    ("hidden_dim", Rule::Count(1 << 20)),
    ("n_heads", Rule::Count(1024)),
    ("n_kv_heads", Rule::Count(1024)),
    ("vocab_size", Rule::Count(1 << 24)),
    ("rope_theta", Rule::Positive { below_one: false }),
    ("norm_eps", Rule::Positive { below_one: true }),
];

const CONFIG_KEYS: [(&str, Rule); 9] = [
    ("hidden_size", Rule::Count(1 << 17)),
    ("num_hidden_layers", Rule::Count(1024)),
    ("head_dim", Rule::OptionalCount(1024)),
    ("intermediate_size", Rule::Count(1 << 20)),
    ("num_attention_heads", Rule::Count(1024)),
    ("num_key_value_heads", Rule::Count(1024)),
    ("vocab_size", Rule::Count(1 << 24)),
    ("rope_theta", Rule::Positive { below_one: false }),
    ("rms_norm_eps", Rule::Positive { below_one: true }),
];

fn nemo_params() -> Map<String, Value> {
    let v = json!({"dim": 5120, "n_layers": 40, "head_dim": 128, "hidden_dim": 14336, "n_heads": 32,
        "n_kv_heads": 8, "norm_eps": 1e-05, "vocab_size": 131072, "rope_theta": 1000000.0});
    v.as_object().unwrap().clone()
}

fn nemo_config() -> Map<String, Value> {
    let v = json!({"architectures": ["MistralForCausalLM"], "head_dim": 128, "hidden_act": "silu",
        "hidden_size": 5120, "intermediate_size": 14336, "max_position_embeddings": 1024000,
        "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 40,
        "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
        "sliding_window": null, "tie_word_embeddings": false, "vocab_size": 131072});
    v.as_object().unwrap().clone()
}

/// `None` = remove the key.
fn new_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        1 => any::<bool>().prop_map(|b| Some(json!(b))),
        1 => "[a-z0-9]{0,6}".prop_map(|s| Some(json!(s))),
        2 => any::<i64>().prop_map(|n| Some(json!(n))),
        2 => (-3i64..3).prop_map(|n| Some(json!(n))),
        4 => (1u64..=4096).prop_map(|n| Some(json!(n))),
        1 => prop::sample::select(vec![1u64 << 17, (1 << 17) + 1, 1024, 1025, 1 << 20, 1 << 24, (1 << 24) + 1, u64::MAX]).prop_map(|n| Some(json!(n))),
        2 => prop::num::f64::ANY.prop_map(|x| Some(json!(x))),
        1 => (0.0f64..2.0).prop_map(|x| Some(json!(x))),
        1 => prop::sample::select(vec![1e-75, 1e-40, 1.1754942e-38, 1.2e-38, 5e-324]).prop_map(|x| Some(json!(x))),
        1 => Just(Some(json!([1]))),
        1 => Just(Some(json!({"a": 1}))),
    ]
}

/// Whether `rule` accepts `value` on its own (`None` = absent).
fn accepts(rule: Rule, value: Option<&Value>) -> bool {
    let value = value.filter(|v| !v.is_null());
    match (rule, value) {
        (Rule::OptionalCount(_), None) => true,
        (_, None) => false,
        (Rule::Count(max) | Rule::OptionalCount(max), Some(v)) => {
            v.as_u64().is_some_and(|n| n > 0 && n <= max)
        }
        // An epsilon is used in f32: it must be a normal f32 there.
        (Rule::Positive { below_one }, Some(v)) => v.as_f64().is_some_and(|x| {
            x.is_finite() && x > 0.0 && (!below_one || (x < 1.0 && x as f32 >= f32::MIN_POSITIVE))
        }),
    }
}

/// The cross-key rules both formats share, over the values the parser would use.
fn consistent(dim: u64, heads: u64, kv_heads: u64, head_dim: Option<u64>) -> bool {
    let head_dim = match head_dim {
        Some(h) => h,
        None if dim % heads == 0 => dim / heads,
        None => return false,
    };
    heads % kv_heads == 0 && head_dim % 2 == 0
}

fn check(
    obj: &Map<String, Value>,
    keys: &[(&str, Rule); 9],
    changed: &str,
    parse: fn(&Path, &[u8]) -> Result<ModelConfig, nemo_engine::model::LoadError>,
    path: &Path,
) -> Result<(), TestCaseError> {
    let per_key = keys.iter().all(|(k, rule)| accepts(*rule, obj.get(*k)));
    let n = |k: &str| obj.get(k).and_then(Value::as_u64);
    let [dim, _, head_dim, _, heads, kv_heads, ..] = keys.map(|(k, _)| k);
    let valid = per_key
        && consistent(
            n(dim).unwrap(),
            n(heads).unwrap(),
            n(kv_heads).unwrap(),
            n(head_dim),
        );
    let bytes = serde_json::to_vec(obj).unwrap();
    match parse(path, &bytes) {
        Ok(c) => {
            prop_assert!(valid, "accepted {changed} = {:?}: {c:?}", obj.get(changed));
            // The values are the file's, not defaults or clamped.
            let got = [
                c.dim,
                c.n_layers,
                c.head_dim,
                c.ffn_dim,
                c.n_heads,
                c.n_kv_heads,
                c.vocab_size,
            ];
            for ((k, _), v) in keys.iter().zip(got) {
                if let Some(want) = n(k) {
                    prop_assert_eq!(v as u64, want, "{}", k);
                }
            }
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(
                !valid,
                "refused a valid config ({changed} = {:?}): {message}",
                obj.get(changed)
            );
            prop_assert!(message.contains(&path.display().to_string()), "{}", message);
            // A per-key refusal names that key; a cross-key one names the key the rule is about.
            let named = message.contains(&format!("`{changed}`"))
                || [head_dim, kv_heads]
                    .iter()
                    .any(|k| message.contains(&format!("`{k}`")));
            prop_assert!(named, "the error does not name `{changed}`: {message}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn params_json_accepts_exactly_the_valid_values(key in 0usize..9, value in new_value()) {
        let mut obj = nemo_params();
        let name = PARAMS_KEYS[key].0;
        match value {
            Some(v) => { obj.insert(name.into(), v); }
            None => { obj.remove(name); }
        }
        check(&obj, &PARAMS_KEYS, name, parse_params_json_bytes, Path::new("prop/params.json"))?;
    }

    #[test]
    fn config_json_accepts_exactly_the_valid_values(key in 0usize..9, value in new_value()) {
        let mut obj = nemo_config();
        let name = CONFIG_KEYS[key].0;
        match value {
            Some(v) => { obj.insert(name.into(), v); }
            None => { obj.remove(name); }
        }
        check(&obj, &CONFIG_KEYS, name, parse_config_json_bytes, Path::new("prop/config.json"))?;
    }
}
