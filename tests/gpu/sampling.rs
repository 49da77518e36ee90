//! sample_tokens_f32 against the CPU sampler (sampling::sample_at): the same token for the same
//! logits, parameters, seed and step; apply_logit_edits_f32 against `sampling::apply_edits`, bit
//! for bit; apply_token_mask_f32 against `sampling::apply_token_mask`, bit for bit;
//! target_logprobs_f32 against `sampling::token_logprobs`.

use nemo_engine::gpu::kernels::sampling::{sample_tokens, EditBatch, LogitEdits, SampleParams, Sampled};
use nemo_engine::gpu::kernels::target_logprobs::target_logprobs;
use nemo_engine::gpu::kernels::token_mask::{MaskBatch, TokenMasks};
use nemo_engine::gpu::download;
use nemo_engine::sampling::{apply_edits, apply_token_mask, mask_words, sample_at, token_logprobs, LogitEdit, SamplingParams};

use crate::common::*;

#[test]
fn gpu_sampling_matches_the_cpu_sampler() {
    let Some(gpu) = gpu_or_skip("gpu_sampling_matches_the_cpu_sampler") else { return };
    let mut rng = Rng::fresh("sampling");
    let (mut compared, mut fallbacks) = (0, 0);
    for vocab in [131_072, 1024, 49_152] {
        for spread in [1.0f32, 3.0, 8.0] {
            let rows = sampling_rows(&mut rng, vocab, spread, 48);
            let (l_dev, p_dev) = (dev(&gpu, &rows.logits), dev(&gpu, &rows.device_params()));
            let mut out = dev(&gpu, &vec![i32::MIN; rows.params.len()]);
            sample_tokens(&gpu, &l_dev.as_view(), vocab, &p_dev.as_view(), &mut out.as_view_mut()).unwrap();
            let (c, f) = rows.check(&download(&gpu, &out).unwrap());
            (compared, fallbacks) = (compared + c, fallbacks + f);
        }
    }
    eprintln!("gpu sampling: {compared} rows equal to the CPU sampler, {fallbacks} left to the host");
    assert!(compared > 300, "too few rows sampled on the GPU: {compared}");
}

/// A batch of rows for the sampler, each with its own logits (some masked, some with an exact
/// tie at the top) and parameters (greedy to T 1.5, top-k, top-p, min-p), and a step.
/// Shared with the emulator's test (emulated/sampling.rs).
pub struct SamplingRows {
    pub vocab: usize,
    pub logits: Vec<f32>,
    pub params: Vec<(SamplingParams, u64)>,
}

pub fn sampling_rows(rng: &mut Rng, vocab: usize, spread: f32, n: usize) -> SamplingRows {
    let mut rows = SamplingRows { vocab, logits: Vec::new(), params: Vec::new() };
    for row in 0..n {
        let mut l: Vec<f32> = (0..vocab).map(|_| rng.normal(spread)).collect();
        if row % 5 == 0 {
            for _ in 0..vocab / 10 {
                l[rng.below(vocab)] = f32::NEG_INFINITY; // masked tokens
            }
        }
        if row % 7 == 0 {
            let top = rng.below(vocab);
            l[(top + 1) % vocab] = l[top]; // an exact tie
        }
        let p = SamplingParams {
            temperature: [0.0, 0.3, 0.7, 1.0, 1.5][row % 5],
            top_k: [0, 1, 5, 50, 2000, 0][row % 6],
            top_p: [1.0, 0.9, 0.5, 1.0][row % 4],
            min_p: [0.0, 0.0, 0.05][row % 3],
            seed: rng.next_u64(),
        };
        rows.logits.extend_from_slice(&l);
        rows.params.push((p, rng.below(1000) as u64));
    }
    rows
}

impl SamplingRows {
    /// The kernel's per-row parameters.
    pub fn device_params(&self) -> Vec<SampleParams> {
        self.params.iter().map(|(p, step)| SampleParams::new(p, *step)).collect()
    }

    /// Checks the kernel's outputs against `sample_at`: (rows equal, rows left to the host).
    pub fn check(&self, got: &[i32]) -> (usize, usize) {
        let (mut compared, mut fallbacks) = (0, 0);
        for (i, (p, step)) in self.params.iter().enumerate() {
            let want = sample_at(p, &self.logits[i * self.vocab..(i + 1) * self.vocab], *step).unwrap();
            match Sampled::from_raw(got[i]) {
                Sampled::Token(t) => {
                    assert_eq!(t, want, "vocab {} row {i} {p:?} step {step}", self.vocab);
                    compared += 1;
                }
                Sampled::HostFallback => fallbacks += 1,
                Sampled::BadLogits => panic!("row {i}: valid logits reported bad"),
            }
        }
        (compared, fallbacks)
    }
}

/// NaN, +inf, or every token masked: three rows of 64 the sampler must report as bad.
pub fn bad_rows() -> (Vec<f32>, SampleParams) {
    let vocab = 64;
    let mut logits = vec![0.5f32; 3 * vocab];
    logits[3] = f32::NAN;
    logits[vocab + 9] = f32::INFINITY;
    logits[2 * vocab..].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
    (logits, SampleParams::new(&SamplingParams { temperature: 0.7, ..SamplingParams::default() }, 0))
}

#[test]
fn gpu_sampling_reports_bad_logits() {
    let Some(gpu) = gpu_or_skip("gpu_sampling_reports_bad_logits") else { return };
    let (logits, p) = bad_rows();
    let (l_dev, p_dev) = (dev(&gpu, &logits), dev(&gpu, &[p; 3]));
    let mut out = dev(&gpu, &[0i32; 3]);
    sample_tokens(&gpu, &l_dev.as_view(), 64, &p_dev.as_view(), &mut out.as_view_mut()).unwrap();
    assert_eq!(download(&gpu, &out).unwrap(), vec![-1, -1, -1]);
}

/// Rows of logits with their edits: tokens at both ends of the vocabulary, rows without edits,
/// logits positive, negative and zero, penalties below and above 1, biases to +-100 and -inf
/// (min_tokens' ban). Shared with the emulator's test.
pub fn logit_edit_rows(rng: &mut Rng, vocab: usize, n_rows: usize) -> (Vec<f32>, Vec<Vec<LogitEdit>>) {
    let mut logits: Vec<f32> = (0..n_rows * vocab).map(|_| rng.normal(4.0)).collect();
    let mut rows = Vec::new();
    for r in 0..n_rows {
        let n = [0, 1, 7, 300, vocab.min(2000)][r % 5];
        let mut tokens: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).chain([0, vocab as u32 - 1].into_iter().take(n.min(2))).collect();
        tokens.sort_unstable();
        tokens.dedup();
        let edits = tokens
            .iter()
            .map(|&token| {
                if rng.below(8) == 0 {
                    logits[r * vocab + token as usize] = 0.0;
                }
                LogitEdit {
                    token,
                    bias: [0.0, 0.0, 1.5, -100.0, 100.0, rng.normal(3.0), f32::NEG_INFINITY][rng.below(7)],
                    scale: [1.0, 1.0, 1.3, 0.7, 0.01, 100.0][rng.below(6)],
                    sub: [0.0, 0.5, -2.0, rng.normal(2.0)][rng.below(4)],
                }
            })
            .collect();
        rows.push(edits);
    }
    (logits, rows)
}

/// The CPU reference: each row edited by `apply_edits`.
pub fn edited_on_the_cpu(logits: &[f32], rows: &[Vec<LogitEdit>], vocab: usize) -> Vec<f32> {
    let mut want = logits.to_vec();
    for (row, edits) in want.chunks_exact_mut(vocab).zip(rows) {
        apply_edits(row, edits).unwrap();
    }
    want
}

/// Bit for bit; the first differing index named.
pub fn assert_same_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        let bad = (0..got.len()).filter(|&i| got[i].to_bits() != want[i].to_bits()).count();
        panic!("{what}: {bad} values differ, first at {i}: got {} want {}", got[i], want[i]);
    }
}

#[test]
fn gpu_logit_edits_match_the_cpu_bit_for_bit() {
    let Some(gpu) = gpu_or_skip("gpu_logit_edits_match_the_cpu_bit_for_bit") else { return };
    let mut rng = Rng::fresh("logit_edits");
    let mut edits = LogitEdits::default();
    for (vocab, n_rows) in [(131_072, 10), (1000, 7), (49_152, 3)] {
        let (logits, rows) = logit_edit_rows(&mut rng, vocab, n_rows);
        let mut l_dev = dev(&gpu, &logits);
        let per_row: Vec<&[LogitEdit]> = rows.iter().map(|r| &r[..]).collect();
        edits.apply(&gpu, &mut l_dev.as_view_mut(), vocab, EditBatch::new(&per_row, vocab).unwrap()).unwrap();
        let got = download(&gpu, &l_dev).unwrap();
        assert_same_bits(&format!("vocab {vocab}"), &got, &edited_on_the_cpu(&logits, &rows, vocab));
        // The raw row comes back for logprobs.
        for r in 0..n_rows {
            let mut row = got[r * vocab..(r + 1) * vocab].to_vec();
            edits.restore_row(&gpu, r, &mut row).unwrap();
            assert_same_bits(&format!("vocab {vocab} row {r} restored"), &row, &logits[r * vocab..(r + 1) * vocab]);
        }
    }
}

/// `n_rows` rows of logits and their masks, by row in turn: none, all allowed, one random
/// token, a random third, only the last token, a sparse random set (odd vocabularies leave a
/// partial last word).
pub fn token_mask_rows(rng: &mut Rng, vocab: usize, n_rows: usize) -> (Vec<f32>, Vec<Option<Vec<u32>>>) {
    let logits: Vec<f32> = (0..n_rows * vocab).map(|_| rng.normal(4.0)).collect();
    let words = mask_words(vocab);
    let set = |tokens: Vec<usize>| {
        let mut m = vec![0u32; words];
        for t in tokens {
            m[t / 32] |= 1 << (t % 32);
        }
        Some(m)
    };
    let masks = (0..n_rows)
        .map(|r| match r % 6 {
            0 => None,
            1 => set((0..vocab).collect()),
            2 => set(vec![rng.below(vocab)]),
            3 => set((0..vocab).filter(|_| rng.below(3) == 0).collect()),
            4 => set(vec![vocab - 1]),
            _ => set((0..vocab).filter(|_| rng.below(97) == 0).collect()),
        })
        .collect();
    (logits, masks)
}

pub fn masked_on_the_cpu(logits: &[f32], masks: &[Option<Vec<u32>>], vocab: usize) -> Vec<f32> {
    let mut want = logits.to_vec();
    for (row, mask) in want.chunks_exact_mut(vocab).zip(masks) {
        if let Some(mask) = mask {
            apply_token_mask(row, mask).unwrap();
        }
    }
    want
}

#[test]
fn gpu_token_masks_match_the_cpu_bit_for_bit() {
    let Some(gpu) = gpu_or_skip("gpu_token_masks_match_the_cpu_bit_for_bit") else { return };
    let mut rng = Rng::fresh("token_masks");
    let mut masks = TokenMasks::default();
    for (vocab, n_rows) in [(131_072, 12), (1000, 7), (49_152, 3), (131_072, 1)] {
        let (logits, per_row) = token_mask_rows(&mut rng, vocab, n_rows);
        let mut l_dev = dev(&gpu, &logits);
        let views: Vec<Option<&[u32]>> = per_row.iter().map(|m| m.as_deref()).collect();
        masks.apply(&gpu, &mut l_dev.as_view_mut(), n_rows, vocab, &MaskBatch::new(&views, vocab).unwrap()).unwrap();
        let got = download(&gpu, &l_dev).unwrap();
        assert_same_bits(&format!("vocab {vocab}, {n_rows} rows"), &got, &masked_on_the_cpu(&logits, &per_row, vocab));
    }
}

#[test]
fn mask_batches_refuse_masks_of_the_wrong_size() {
    let ok = MaskBatch::new(&[None, Some(&[7, 1][..]), Some(&[0, 0][..])], 40).unwrap();
    assert_eq!((ok.masks, ok.rows), (vec![7, 1, 0, 0], vec![1, 2]));
    let err = MaskBatch::new(&[Some(&[u32::MAX][..])], 40).unwrap_err().to_string();
    assert!(err.contains("row 0's mask has 1 words, 40 logits need 2"), "{err}");
}

#[test]
fn logit_edit_batches_refuse_repeated_and_out_of_vocabulary_tokens() {
    let e = |token| LogitEdit { token, bias: 1.0, scale: 1.0, sub: 0.0 };
    let ok = EditBatch::new(&[&[e(0), e(9)], &[], &[e(3)]], 10).unwrap();
    assert_eq!((ok.rows, ok.starts), (vec![0, 0, 2], vec![0, 2, 2, 3]));
    let refused = |rows: &[&[LogitEdit]]| EditBatch::new(rows, 10).unwrap_err().to_string();
    assert!(refused(&[&[e(10)]]).contains("token 10 outside the vocabulary of 10"));
    assert!(refused(&[&[], &[e(4), e(4)]]).contains("row 1: tokens not strictly ascending"));
    assert!(refused(&[&[e(5), e(2)]]).contains("not strictly ascending"));
}

/// Rows to score and their targets: spreads from flat to peaked, masked (-inf) stretches, a
/// target that is itself masked (-inf out), then a row with NaN and one with nothing finite
/// (NaN out, which the caller reports). Shared with the emulator's test.
pub fn scoring_rows(rng: &mut Rng, vocab: usize, n_rows: usize) -> (Vec<f32>, Vec<u32>) {
    let mut logits = Vec::with_capacity((n_rows + 2) * vocab);
    let mut targets = Vec::with_capacity(n_rows + 2);
    for r in 0..n_rows {
        let spread = [0.5f32, 3.0, 12.0][r % 3];
        let mut row: Vec<f32> = (0..vocab).map(|_| rng.normal(spread)).collect();
        if r % 4 == 1 {
            row.iter_mut().filter(|_| rng.below(2) == 0).for_each(|l| *l = f32::NEG_INFINITY);
        }
        let target = rng.below(vocab);
        if r % 5 == 2 {
            row[target] = f32::NEG_INFINITY;
        }
        if !row.iter().any(|l| l.is_finite()) {
            row[0] = 0.0;
        }
        logits.extend(row);
        targets.push(target as u32);
    }
    let mut nan = vec![0.0f32; vocab];
    nan[vocab / 2] = f32::NAN;
    logits.extend(nan);
    logits.extend(vec![f32::NEG_INFINITY; vocab]);
    targets.extend([0, 1]);
    (logits, targets)
}

/// `got` against `token_logprobs` row by row: finite values within 2e-5 (absolute, or relative
/// to the value), -inf where the target is masked, NaN for the last two rows; the error is
/// reported as max abs / rel error and the first bad row.
pub fn check_scores(what: &str, logits: &[f32], targets: &[u32], got: &[f32]) {
    let vocab = logits.len() / targets.len();
    let (mut max_abs, mut max_rel, mut first_bad) = (0f64, 0f64, None);
    for (i, (row, &t)) in logits.chunks_exact(vocab).zip(targets).enumerate() {
        let want = token_logprobs(row, t, 0).map(|lp| lp.logprob).unwrap_or(f32::NAN);
        let ok = match (want.is_nan(), want.is_finite()) {
            (true, _) => got[i].is_nan(),
            (false, false) => got[i] == want,
            (false, true) => {
                let abs = (got[i] as f64 - want as f64).abs();
                let rel = abs / (want.abs() as f64).max(1e-30);
                (max_abs, max_rel) = (max_abs.max(abs), max_rel.max(rel));
                abs <= 2e-5 || rel <= 2e-5
            }
        };
        if !ok && first_bad.is_none() {
            first_bad = Some((i, got[i], want));
        }
    }
    eprintln!("{what}: {} rows, max abs error {max_abs:.2e}, max rel error {max_rel:.2e}", targets.len());
    assert!(first_bad.is_none(), "{what}: first bad row {:?} (got, want); max abs {max_abs:.2e}, rel {max_rel:.2e}", first_bad);
}

#[test]
fn gpu_target_logprobs_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_target_logprobs_match_the_cpu") else { return };
    let mut rng = Rng::fresh("target_logprobs");
    for (vocab, n_rows) in [(131_072, 40), (1000, 9), (49_152, 3), (131_072, 1)] {
        let (logits, targets) = scoring_rows(&mut rng, vocab, n_rows);
        let l_dev = dev(&gpu, &logits);
        let mut t_dev = dev(&gpu, &vec![-1i32; targets.len()]);
        let mut out = dev(&gpu, &vec![f32::MAX; targets.len()]); // poisoned
        target_logprobs(&gpu, &l_dev.as_view(), vocab, &targets, &mut t_dev, &mut out.as_view_mut()).unwrap();
        check_scores(&format!("gpu, vocab {vocab}"), &logits, &targets, &download(&gpu, &out).unwrap());
    }
}
