//! sample_tokens_f32 on the emulator against the CPU sampler (sampling::sample_at): the same
//! token for the same logits, parameters, seed and step, over greedy, temperature, top-k, top-p
//! and min-p rows with masked tokens and exact ties; bad rows are reported as such.

use super::{addr, load};
use crate::common::*;
use crate::sampling::{
    assert_same_bits, bad_rows, check_scores, edited_on_the_cpu, logit_edit_rows, masked_on_the_cpu, sampling_rows, scoring_rows, token_mask_rows,
};
use nemo_engine::gpu::kernels::sampling::{launch_config, EditBatch, SampleParams};
use nemo_engine::gpu::kernels::token_mask::{self, MaskBatch};
use nemo_engine::sampling::mask_words;
use nemo_engine::sampling::LogitEdit;

type SampleTokens = unsafe extern "C" fn(u64, u64, u64, i32);

fn run(logits: &[f32], params: &[SampleParams], vocab: usize) -> Vec<i32> {
    let mut out = vec![i32::MIN; params.len()];
    let out_addr = out.as_mut_ptr() as u64;
    // SAFETY: logits hold params.len() rows of vocab; params and out one entry per row.
    load("sampling")
        .launch_args("sample_tokens_f32", launch_config(params.len()).unwrap(), |k: SampleTokens| unsafe {
            k(addr(logits), addr(params), out_addr, vocab as i32)
        })
        .unwrap();
    out
}

#[test]
fn emulated_sampling_matches_the_cpu_sampler() {
    let mut rng = Rng::fresh("emulated_sampling");
    let (mut compared, mut fallbacks) = (0, 0);
    for (vocab, spread) in [(1024, 1.0f32), (3000, 3.0), (4096, 8.0)] {
        let rows = sampling_rows(&mut rng, vocab, spread, 12);
        let (c, f) = rows.check(&run(&rows.logits, &rows.device_params(), vocab));
        (compared, fallbacks) = (compared + c, fallbacks + f);
    }
    eprintln!("emulated sampling: {compared} rows equal to the CPU sampler, {fallbacks} left to the host");
    assert!(compared >= 24, "too few rows sampled by the kernel: {compared}");
    let (logits, p) = bad_rows();
    assert_eq!(run(&logits, &[p; 3], 64), vec![-1, -1, -1]);
}

type ApplyEdits = unsafe extern "C" fn(u64, u64, u64, u64, i32, i32);

#[test]
fn emulated_logit_edits_match_the_cpu_bit_for_bit() {
    let mut rng = Rng::fresh("emulated_logit_edits");
    for (vocab, n_rows) in [(4096, 6), (1000, 5)] {
        let (logits, rows) = logit_edit_rows(&mut rng, vocab, n_rows);
        let per_row: Vec<&[LogitEdit]> = rows.iter().map(|r| &r[..]).collect();
        let batch = EditBatch::new(&per_row, vocab).unwrap();
        let n = batch.edits.len();
        let mut got = logits.clone();
        let mut saved = vec![f32::NAN; n];
        let (got_addr, saved_addr) = (got.as_mut_ptr() as u64, saved.as_mut_ptr() as u64);
        let cfg = cudarc::driver::LaunchConfig { grid_dim: (n.div_ceil(256) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: got holds n_rows rows of vocab; edits, rows and saved n entries, each edit's
        // token below vocab and row below n_rows (EditBatch::new).
        load("sampling")
            .launch_args("apply_logit_edits_f32", cfg, |k: ApplyEdits| unsafe {
                k(got_addr, addr(&batch.edits), addr(&batch.rows), saved_addr, n as i32, vocab as i32)
            })
            .unwrap();
        assert_same_bits(&format!("vocab {vocab}"), &got, &edited_on_the_cpu(&logits, &rows, vocab));
        let raw: Vec<f32> = batch.edits.iter().zip(&batch.rows).map(|(e, &r)| logits[r as usize * vocab + e.token as usize]).collect();
        assert_same_bits("saved raw logits", &saved, &raw);
    }
}

type ApplyMask = unsafe extern "C" fn(u64, u64, u64, i32, i32);

#[test]
fn emulated_token_masks_match_the_cpu_bit_for_bit() {
    let mut rng = Rng::fresh("emulated_token_masks");
    for (vocab, n_rows) in [(4096, 7), (1000, 6), (33, 2)] {
        let (logits, per_row) = token_mask_rows(&mut rng, vocab, n_rows);
        let views: Vec<Option<&[u32]>> = per_row.iter().map(|m| m.as_deref()).collect();
        let batch = MaskBatch::new(&views, vocab).unwrap();
        let mut got = logits.clone();
        let got_addr = got.as_mut_ptr() as u64;
        let cfg = token_mask::launch_config(vocab, batch.rows.len()).unwrap();
        // SAFETY: got holds n_rows rows of vocab; masks hold one mask of mask_words(vocab) words
        // per entry of rows, each row below n_rows (MaskBatch::new).
        load("sampling")
            .launch_args("apply_token_mask_f32", cfg, |k: ApplyMask| unsafe {
                k(got_addr, addr(&batch.masks), addr(&batch.rows), vocab as i32, mask_words(vocab) as i32)
            })
            .unwrap();
        assert_same_bits(&format!("vocab {vocab}"), &got, &masked_on_the_cpu(&logits, &per_row, vocab));
    }
}

type TargetLogprobs = unsafe extern "C" fn(u64, u64, u64, i32);

#[test]
fn emulated_target_logprobs_match_the_cpu() {
    let mut rng = Rng::fresh("emulated_target_logprobs");
    for (vocab, n_rows) in [(4096, 9), (1000, 5), (33, 3)] {
        let (logits, targets) = scoring_rows(&mut rng, vocab, n_rows);
        let ids: Vec<i32> = targets.iter().map(|&t| t as i32).collect();
        let mut out = vec![f32::MAX; targets.len()];
        let out_addr = out.as_mut_ptr() as u64;
        let cfg = nemo_engine::gpu::kernels::target_logprobs::launch_config(targets.len());
        // SAFETY: logits hold targets.len() rows of vocab, each target below vocab; out one float a row.
        load("sampling")
            .launch_args("target_logprobs_f32", cfg, |k: TargetLogprobs| unsafe { k(addr(&logits), addr(&ids), out_addr, vocab as i32) })
            .unwrap();
        check_scores(&format!("emulated, vocab {vocab}"), &logits, &targets, &out);
    }
}
