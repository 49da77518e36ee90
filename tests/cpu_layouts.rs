//! The CPU forward on a random toy model (no fixtures needed): the Mistral layout and both HF
//! variants (q/k permuted by permute_for_rope) give the same logits, and incremental decoding
//! equals one full pass.

mod common;

use common::*;
use nemo_engine::cpu::{forward, forward_rows, CpuError, CpuSession, KvCache};
use nemo_engine::model::{load, RopeLayout};

fn tokens(n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 31 + 7) % TOY.vocab) as u32).collect()
}

#[test]
fn mistral_and_hf_layouts_give_the_same_logits() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mistral = toy_mistral_tensors(7);
    let hf = to_hf(&mistral);
    write_toy_mistral(dirs[0].path(), &mistral);
    write_toy_hf_sharded(dirs[1].path(), &hf);
    write_toy_hf_single(dirs[2].path(), &hf);

    let prompt = tokens(48);
    let mut logits = Vec::new();
    for (dir, rope) in dirs.iter().zip([
        RopeLayout::Interleaved,
        RopeLayout::RotateHalf,
        RopeLayout::RotateHalf,
    ]) {
        let model = load(dir.path()).unwrap();
        assert_eq!(model.weights.rope_layout, rope);
        let mut cache = KvCache::new(&model.weights.config);
        logits.push(forward(&model.weights, &prompt, &mut cache).unwrap());
    }
    let scale = logits[0].iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(
        scale > 1.0,
        "logits too small to tell layouts apart: {scale}"
    );
    eprintln!(
        "max |logit| {scale}; Mistral vs HF max abs diff {}",
        max_abs_diff(&logits[0], &logits[1])
    );
    // The permutation only reorders the q.k sums: differences are f32 rounding.
    assert!(
        max_abs_diff(&logits[0], &logits[1]) < 1e-4,
        "{}",
        max_abs_diff(&logits[0], &logits[1])
    );
    assert_eq!(
        logits[1], logits[2],
        "the single-file HF variant holds the same weights"
    );

    // A wrong RoPE layout must be visible in the logits (or the test above proves nothing).
    let mut wrong = load(dirs[1].path()).unwrap();
    wrong.weights.rope_layout = RopeLayout::Interleaved;
    let mut cache = KvCache::new(&wrong.weights.config);
    let bad = forward(&wrong.weights, &prompt, &mut cache).unwrap();
    eprintln!(
        "wrong layout: max abs diff {}",
        max_abs_diff(&logits[0], &bad)
    );
    assert!(
        max_abs_diff(&logits[0], &bad) > 1e-2,
        "{}",
        max_abs_diff(&logits[0], &bad)
    );
}

#[test]
fn chunked_prefill_then_single_steps_equals_one_full_pass() {
    let dir = tempfile::tempdir().unwrap();
    write_toy_hf_single(dir.path(), &to_hf(&toy_mistral_tensors(11)));
    let model = load(dir.path()).unwrap();
    let w = &model.weights;
    let all = tokens(150);
    let full = forward(w, &all, &mut KvCache::new(&w.config)).unwrap();
    let vocab = w.config.vocab_size;

    // Prefill 100 tokens in chunks of 33 (ragged), then decode 50 one at a time.
    let mut session = CpuSession::new(w);
    let last = session.prefill(&all[..100], 33).unwrap();
    assert_eq!(last, full[99 * vocab..100 * vocab]);
    for (i, &tok) in all.iter().enumerate().skip(100) {
        let step = session.step(tok).unwrap();
        // Every op computes a token's row in the same order however the tokens are grouped.
        assert_eq!(step, full[i * vocab..(i + 1) * vocab], "position {i}");
    }
    assert_eq!(session.cache.len(), 150);

    // Selected rows are the same rows.
    let rows = forward_rows(w, &all, &mut KvCache::new(&w.config), &[0, 77, 149]).unwrap();
    assert_eq!(rows[vocab..2 * vocab], full[77 * vocab..78 * vocab]);
}

#[test]
fn bad_inputs_are_refused_and_leave_the_cache_untouched() {
    let dir = tempfile::tempdir().unwrap();
    write_toy_mistral(dir.path(), &toy_mistral_tensors(3));
    let model = load(dir.path()).unwrap();
    let w = &model.weights;
    let mut cache = KvCache::new(&w.config);
    forward(w, &[1, 2], &mut cache).unwrap();
    assert_eq!(
        forward(w, &[1, 50], &mut cache),
        Err(CpuError::TokenOutOfRange {
            index: 1,
            token: 50,
            vocab_size: 50
        })
    );
    assert_eq!(forward(w, &[], &mut cache), Err(CpuError::NoTokens));
    assert!(matches!(
        forward_rows(w, &[1], &mut cache, &[1]),
        Err(CpuError::RowOutOfRange { .. })
    ));
    assert_eq!(cache.len(), 2);

    let mut small = w.config.clone();
    small.max_context = 3;
    let mut short = KvCache::new(&small);
    forward(w, &[1, 2, 3], &mut short).unwrap();
    assert_eq!(
        forward(w, &[4], &mut short),
        Err(CpuError::ContextFull {
            held: 3,
            new: 1,
            max: 3
        })
    );
}
