//! Scoring text (`Backend::score`, what `nemo perplexity` runs): the CPU backend's log-probability
//! of each next token against transformers' fp32 logits (tests/fixtures/tiny-s0) at every
//! recorded position, across its 256-row passes and after a held prefix; equal, bit for bit, to
//! the trait's one-token-a-call default; bad arguments refused.

mod common;

use common::reference::*;
use nemo_engine::engine::{Backend, CpuBackend, EngineError};
use nemo_engine::model::{load, ModelConfig};

/// The CPU backend without its own `score`: the trait's default, one token a call.
struct OneByOne<'w>(CpuBackend<'w>);

impl Backend for OneByOne<'_> {
    fn config(&self) -> &ModelConfig {
        self.0.config()
    }
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        self.0.forward(tokens)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn reset(&mut self) {
        self.0.reset()
    }
    fn device(&self) -> &'static str {
        "cpu, one token a call"
    }
}

#[test]
fn cpu_scores_match_transformers_and_the_one_token_default() {
    let reference = Reference::load();
    let tensors = reference_tensors();
    let model = load(&fixture_dir().join("mistral")).unwrap();
    let vocab = model.weights.config.vocab_size;
    let mut compared = 0;
    for p in reference.prompts.iter().filter(|p| p.tokens.len() > 1 && p.tokens.len() <= 300) {
        let n = p.tokens.len();
        let (inputs, targets) = (&p.tokens[..n - 1], &p.tokens[1..]);
        let mut cpu = CpuBackend::new(&model.weights);
        let scores = cpu.score(inputs, targets).unwrap();
        assert_eq!((scores.len(), cpu.len()), (n - 1, n - 1));
        let (_, theirs) = &tensors[&format!("logits.{}", p.name)];
        let mut worst = 0f64;
        for (row, &pos) in p.logit_positions.iter().enumerate().filter(|(_, &pos)| pos < n - 1) {
            let want = log_softmax(&theirs[row * vocab..(row + 1) * vocab])[p.tokens[pos + 1] as usize];
            let err = (scores[pos] as f64 - want).abs();
            assert!(err <= 1e-3, "{} position {pos}: {} vs transformers' {want}", p.name, scores[pos]);
            worst = worst.max(err);
            compared += 1;
        }
        eprintln!("{}: {} tokens scored, worst abs error against transformers {worst:.2e}", p.name, n - 1);
        // The default path, one token a call: the same logits row by row, so the same floats.
        let mut one = OneByOne(CpuBackend::new(&model.weights));
        assert_eq!(one.score(inputs, targets).unwrap(), scores, "{}", p.name);
        // After a held prefix, as `nemo perplexity` scores the second half of a window.
        let half = n / 2;
        let mut held = CpuBackend::new(&model.weights);
        held.forward(&p.tokens[..half]).unwrap();
        assert_eq!(held.score(&inputs[half..], &targets[half..]).unwrap(), scores[half..], "{}", p.name);
    }
    assert!(compared > 300, "too few positions compared: {compared}");
}

#[test]
fn bad_scoring_arguments_are_refused() {
    let model = load(&fixture_dir().join("mistral")).unwrap();
    let mut cpu = CpuBackend::new(&model.weights);
    assert!(matches!(cpu.score(&[1, 2], &[3]), Err(EngineError::BadStepOutput(_))));
    assert!(matches!(cpu.score(&[1, 2], &[3, 5000]), Err(EngineError::TokenOutOfRange { index: 1, token: 5000, .. })));
    assert_eq!(cpu.len(), 0, "nothing ran");
}

/// `perplexity`'s windows (BOS first, non-overlapping, each window's second half scored)
/// against the same sums made here from whole-window logits.
#[test]
fn perplexity_scores_the_second_half_of_each_window() {
    use nemo_engine::perplexity::{perplexity, Windows};
    let reference = Reference::load();
    let model = load(&fixture_dir().join("mistral")).unwrap();
    let w = &model.weights;
    let vocab = w.config.vocab_size;
    let text = &reference.prompt("p300").tokens;
    let windows = Windows { context: 64, max_windows: None };
    let mut cpu = CpuBackend::new(w);
    let mut seen = Vec::new();
    let got = perplexity(&mut cpu, Some(1), text, windows, &mut |window, so_far| seen.push((window.index, window.scored, so_far.tokens_scored))).unwrap();
    assert_eq!((got.windows, got.tokens_scored, got.tokens_left_out), (4, 4 * 31, 300 - 4 * 63));
    assert_eq!(seen, vec![(0, 31, 31), (1, 31, 62), (2, 31, 93), (3, 31, 124)]);
    let (mut nll, mut count) = (0f64, 0);
    for chunk in text.chunks_exact(63) {
        let window: Vec<u32> = std::iter::once(1).chain(chunk.iter().copied()).collect();
        let logits = nemo_engine::cpu::forward(w, &window, &mut nemo_engine::cpu::KvCache::new(&w.config)).unwrap();
        for j in 32..63 {
            nll -= log_softmax(&logits[j * vocab..(j + 1) * vocab])[window[j + 1] as usize];
            count += 1;
        }
    }
    let want = (nll / count as f64).exp();
    assert_eq!(count, got.tokens_scored);
    assert!((got.perplexity / want - 1.0).abs() < 1e-5, "{} vs {want}", got.perplexity);
    assert!(got.std_error > 0.0 && got.std_error < got.perplexity, "{got:?}");
    eprintln!("tiny model, p300 in windows of 64: perplexity {:.4} ± {:.4} over {} tokens", got.perplexity, got.std_error, got.tokens_scored);
}
