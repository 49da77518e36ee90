//! Structure-aware mutation of the JSON files (params.json, config.json, tekken.json,
//! tokenizer.json): the valid seeds parsed, one node anywhere in the tree replaced by a value of
//! another type, an extreme number, a copy of another node, or removed, and the result given to
//! the same harness as the fuzzers. Byte-level mutation rarely keeps JSON well-formed past the
//! first few bytes; this reaches the typed checks deep inside every file.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::harness;
use super::seeds::seed_files;

#[derive(Clone, Debug)]
enum Edit {
    Replace(Value),
    /// Replace with a copy of the node at this (wrapped) pre-order index.
    CopyOf(usize),
    Remove,
}

fn edit() -> impl Strategy<Value = Edit> {
    let extreme = prop::sample::select(vec![
        json!(null),
        json!(true),
        json!(-1),
        json!(0),
        json!(1),
        json!(255),
        json!(256),
        json!(u32::MAX),
        json!(1u64 << 40),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(0.5),
        json!(1e300),
        json!(""),
        json!("v3"),
        json!("v13"),
        json!("<s>"),
        json!("AAAA"),
        json!("***"),
        json!("(unclosed"),
        json!(".*"),
        json!([]),
        json!({}),
        json!([0, 1]),
        json!({"rank": 0, "token_bytes": "AA==", "token_str": null}),
    ]);
    prop_oneof![
        4 => extreme.prop_map(Edit::Replace),
        1 => any::<usize>().prop_map(Edit::CopyOf),
        2 => Just(Edit::Remove),
    ]
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

fn node(v: &Value, mut i: usize) -> Option<&Value> {
    if i == 0 {
        return Some(v);
    }
    i -= 1;
    let children: Box<dyn Iterator<Item = &Value>> = match v {
        Value::Array(a) => Box::new(a.iter()),
        Value::Object(o) => Box::new(o.values()),
        _ => return None,
    };
    for c in children {
        let n = count(c);
        if i < n {
            return node(c, i);
        }
        i -= n;
    }
    None
}

/// Applies `edit` to the node at pre-order index `i` (the root cannot be removed).
fn apply(v: &mut Value, mut i: usize, edit: &Edit, copy: &Value) -> bool {
    if i == 0 {
        match edit {
            Edit::Remove => return false,
            Edit::Replace(new) => *v = new.clone(),
            Edit::CopyOf(_) => *v = copy.clone(),
        }
        return true;
    }
    i -= 1;
    match v {
        Value::Array(a) => {
            for k in 0..a.len() {
                let n = count(&a[k]);
                if i < n {
                    if i == 0 && matches!(edit, Edit::Remove) {
                        a.remove(k);
                        return true;
                    }
                    return apply(&mut a[k], i, edit, copy);
                }
                i -= n;
            }
        }
        Value::Object(o) => {
            let keys: Vec<String> = o.keys().cloned().collect();
            for k in keys {
                let n = count(&o[&k]);
                if i < n {
                    if i == 0 && matches!(edit, Edit::Remove) {
                        o.remove(&k);
                        return true;
                    }
                    return apply(o.get_mut(&k).unwrap(), i, edit, copy);
                }
                i -= n;
            }
        }
        _ => {}
    }
    false
}

fn ok_seeds(target: &str) -> Vec<Value> {
    seed_files(target)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("ok-"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

fn mutate_and_run(target: &str, run: fn(&[u8]), seed: usize, edits: &[(usize, Edit)]) {
    let seeds = ok_seeds(target);
    let mut v = seeds[seed % seeds.len()].clone();
    for (at, edit) in edits {
        let n = count(&v);
        let copy = match edit {
            Edit::CopyOf(j) => node(&v, j % n).cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        };
        apply(&mut v, at % n, edit, &copy);
    }
    run(&serde_json::to_vec(&v).unwrap());
}

fn edits() -> impl Strategy<Value = Vec<(usize, Edit)>> {
    prop::collection::vec((any::<usize>(), edit()), 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn params_json_tree_edits(seed in any::<usize>(), edits in edits()) {
        mutate_and_run("params_json", harness::params_json, seed, &edits);
    }

    #[test]
    fn config_json_tree_edits(seed in any::<usize>(), edits in edits()) {
        mutate_and_run("hf_config_json", harness::hf_config_json, seed, &edits);
    }

    #[test]
    fn tokenizer_json_tree_edits(seed in any::<usize>(), edits in edits()) {
        mutate_and_run("tokenizer_json", harness::tokenizer_json, seed, &edits);
    }
}

proptest! {
    // A tekken.json seed holds ~270 vocabulary entries: the edits land mostly there, where the
    // per-entry checks are.
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn tekken_json_tree_edits(seed in any::<usize>(), edits in edits()) {
        mutate_and_run("tekken_json", harness::tekken_json, seed, &edits);
    }
}

#[test]
fn tree_edits_reach_every_node() {
    let v = json!({"a": [1, {"b": 2}], "c": 3});
    assert_eq!(count(&v), 6);
    let mut w = v.clone();
    assert!(apply(&mut w, 4, &Edit::Replace(json!("x")), &Value::Null));
    assert_eq!(w, json!({"a": [1, {"b": "x"}], "c": 3}));
    let mut w = v.clone();
    assert!(apply(&mut w, 1, &Edit::Remove, &Value::Null));
    assert_eq!(w, json!({"c": 3}));
    assert_eq!(node(&v, 5), Some(&json!(3)));
}

/// Found by CI: `continuing_subword_prefix` set to "v3" (longer than a merge's second token)
/// makes `tokenizers` panic while re-reading the model section to name the failing one.
#[test]
fn tokenizer_json_with_a_prefix_longer_than_a_merge_token_fails_cleanly() {
    mutate_and_run(
        "tokenizer_json",
        harness::tokenizer_json,
        11724781144998115219,
        &[(7211250556495507787, Edit::Replace(json!(-1))), (4611063422719905499, Edit::Replace(json!("v3")))],
    );
}
