//! The loop against a fake backend whose logits are a fixed function of the sequence so far.

use super::*;
use crate::engine::check_tokens;
use crate::model::ModelConfig;

const VOCAB: usize = 16;

/// Logits `[VOCAB]` after the sequence `seq`: smooth, distinct, and different at every position.
fn fake_logits(seq: &[u32]) -> Vec<f32> {
    let len = seq.len() as f32;
    let last = *seq.last().unwrap() as f32;
    (0..VOCAB)
        .map(|i| 3.0 * (i as f32 * 1.3 + len * 0.7 + last * 0.11).sin())
        .collect()
}

struct FakeBackend {
    config: ModelConfig,
    seq: Vec<u32>,
    /// Every `forward` call's tokens, in order.
    calls: Vec<Vec<u32>>,
    /// `forward` fails on the call with this index.
    fail_at_call: Option<usize>,
}

impl FakeBackend {
    fn new(max_context: usize) -> Self {
        let config = ModelConfig {
            vocab_size: VOCAB,
            max_context,
            ..ModelConfig::nemo_12b()
        };
        FakeBackend {
            config,
            seq: vec![7, 7, 7],
            calls: vec![],
            fail_at_call: None,
        }
    }
}

impl Backend for FakeBackend {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        if self.fail_at_call == Some(self.calls.len()) {
            return Err(EngineError::NoTokens);
        }
        check_tokens(
            &self.config,
            self.seq.len(),
            self.config.max_context,
            tokens,
        )?;
        self.calls.push(tokens.to_vec());
        self.seq.extend_from_slice(tokens);
        Ok(fake_logits(&self.seq))
    }
    fn len(&self) -> usize {
        self.seq.len()
    }
    fn reset(&mut self) {
        self.seq.clear();
    }
    fn device(&self) -> &'static str {
        "fake"
    }
}

fn request(
    prompt: &[u32],
    max_tokens: usize,
    stop: &[u32],
    logprobs: Option<usize>,
) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.to_vec(),
        params: SamplingParams::greedy(),
        penalties: Penalties::default(),
        stop: StopCriteria::new(max_tokens, vec![], stop.to_vec()).unwrap(),
        logprobs,
        grammar: None,
    }
}

fn run(backend: &mut FakeBackend, req: &GenerateRequest) -> (Generation, Vec<GeneratedToken>) {
    let mut streamed = Vec::new();
    let out = generate(backend, req, &mut |t| {
        streamed.push(t.clone());
        Ok(())
    })
    .unwrap();
    (out, streamed)
}

fn argmax(x: &[f32]) -> u32 {
    (0..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b }) as u32
}

#[test]
fn greedy_runs_to_max_tokens_with_length_and_feeds_each_token_back() {
    let mut backend = FakeBackend::new(64);
    let (out, streamed) = run(&mut backend, &request(&[1, 2, 3], 10, &[], None));
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert_eq!(out.tokens.len(), 10);
    assert_eq!(out.prompt_tokens, vec![1, 2, 3]);
    assert!(out.logprobs.is_none());
    // The stale sequence was reset; the prompt went in whole, then each token but the last.
    assert_eq!(backend.calls[0], vec![1, 2, 3]);
    assert_eq!(backend.calls.len(), 10);
    for (i, call) in backend.calls[1..].iter().enumerate() {
        assert_eq!(call, &vec![out.tokens[i]]);
    }
    // Each token is the argmax after the sequence before it.
    let mut seq = vec![1, 2, 3];
    for &t in &out.tokens {
        assert_eq!(t, argmax(&fake_logits(&seq)));
        seq.push(t);
    }
    assert_eq!(
        streamed.iter().map(|t| t.token).collect::<Vec<_>>(),
        out.tokens
    );
    assert_eq!(
        streamed.iter().map(|t| t.index).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(out.timing.decode_steps, 9);
}

#[test]
fn a_stop_token_ends_the_run_with_stop_and_is_the_last_token() {
    let mut backend = FakeBackend::new(64);
    let (free, _) = run(&mut backend, &request(&[1, 2, 3], 20, &[], None));
    // Stop at the first token that did not appear before it, at step >= 2.
    let at = (2..free.tokens.len())
        .find(|&i| !free.tokens[..i].contains(&free.tokens[i]))
        .unwrap();
    let stop = free.tokens[at];
    let mut backend = FakeBackend::new(64);
    let (out, streamed) = run(&mut backend, &request(&[1, 2, 3], 20, &[stop], None));
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.tokens, free.tokens[..=at].to_vec());
    assert_eq!(streamed.len(), at + 1, "the stop token is streamed too");
    assert_eq!(
        backend.calls.len(),
        at + 1,
        "no forward pass after the stop token"
    );

    // EOS ids stop the same way; a stop on the last allowed token is still a stop.
    let mut req = request(&[1, 2, 3], at + 1, &[], None);
    req.stop = StopCriteria::new(at + 1, vec![stop], vec![]).unwrap();
    let (out, _) = run(&mut backend, &req);
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.tokens.len(), at + 1);
}

#[test]
fn logprobs_are_the_log_softmax_of_the_raw_logits_whatever_the_temperature() {
    for temperature in [0.0, 0.7, 2.0] {
        let mut backend = FakeBackend::new(64);
        let mut req = request(&[4, 5], 8, &[], Some(5));
        req.params.temperature = temperature;
        req.params.seed = 42;
        let (out, streamed) = run(&mut backend, &req);
        let logprobs = out.logprobs.as_ref().unwrap();
        assert_eq!(logprobs.len(), out.tokens.len());
        let mut seq = vec![4, 5];
        for (i, (lp, &t)) in logprobs.iter().zip(&out.tokens).enumerate() {
            let logits = fake_logits(&seq);
            let max = logits.iter().copied().fold(f32::MIN, f32::max) as f64;
            let lse = max
                + logits
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            let want = |tok: u32| logits[tok as usize] as f64 - lse;
            assert_eq!(lp.token, t);
            assert!((lp.logprob as f64 - want(t)).abs() < 1e-6, "step {i}");
            let mut order: Vec<u32> = (0..VOCAB as u32).collect();
            order.sort_by(|&a, &b| {
                logits[b as usize]
                    .total_cmp(&logits[a as usize])
                    .then(a.cmp(&b))
            });
            assert_eq!(
                lp.top.iter().map(|p| p.0).collect::<Vec<_>>(),
                order[..5].to_vec()
            );
            for &(tok, l) in &lp.top {
                assert!((l as f64 - want(tok)).abs() < 1e-6);
            }
            assert_eq!(streamed[i].logprobs.as_ref(), Some(lp));
            seq.push(t);
        }
    }
}

#[test]
fn logprobs_zero_gives_the_chosen_token_only() {
    let mut backend = FakeBackend::new(64);
    let (out, _) = run(&mut backend, &request(&[4], 3, &[], Some(0)));
    let lps = out.logprobs.unwrap();
    assert_eq!(lps.len(), 3);
    assert!(lps.iter().all(|lp| lp.top.is_empty() && lp.logprob < 0.0));
}

#[test]
fn seeded_sampling_is_reproducible_and_the_seed_matters() {
    let sample = |seed| {
        let mut backend = FakeBackend::new(64);
        let mut req = request(&[9], 24, &[], None);
        req.params = SamplingParams {
            temperature: 1.5,
            seed,
            ..SamplingParams::default()
        };
        run(&mut backend, &req).0.tokens
    };
    assert_eq!(sample(1), sample(1));
    assert_ne!(sample(1), sample(2));
}

#[test]
fn bad_inputs_are_typed_errors_before_any_forward_pass() {
    let mut backend = FakeBackend::new(16);
    let mut none = |_: &GeneratedToken| Ok(());
    let err = generate(&mut backend, &request(&[], 4, &[], None), &mut none).unwrap_err();
    assert!(matches!(err, GenerateError::EmptyPrompt), "{err}");

    let err = generate(&mut backend, &request(&[1; 10], 7, &[], None), &mut none).unwrap_err();
    assert!(matches!(
        err,
        GenerateError::ContextTooSmall {
            prompt: 10,
            max_tokens: 7,
            context: 16
        }
    ));

    let mut req = request(&[1], 4, &[], None);
    req.params.top_p = 1.5;
    let err = generate(&mut backend, &req, &mut none).unwrap_err();
    assert!(
        matches!(err, GenerateError::Params(SamplingError::InvalidTopP(_))),
        "{err}"
    );
    assert!(backend.calls.is_empty());
}

#[test]
fn backend_and_callback_errors_say_which_step() {
    let mut none = |_: &GeneratedToken| Ok(());
    let mut backend = FakeBackend::new(64);
    let err = generate(&mut backend, &request(&[1, 99, 2], 4, &[], None), &mut none).unwrap_err();
    match &err {
        GenerateError::Prefill {
            prompt: 3,
            device: "fake",
            source:
                EngineError::TokenOutOfRange {
                    index: 1,
                    token: 99,
                    ..
                },
        } => {}
        other => panic!("{other:?}"),
    }

    backend.fail_at_call = Some(3);
    let err = generate(&mut backend, &request(&[1], 8, &[], None), &mut none).unwrap_err();
    assert!(
        matches!(err, GenerateError::Decode { step: 3, .. }),
        "{err:?}"
    );

    let mut backend = FakeBackend::new(64);
    let mut broken = |t: &GeneratedToken| {
        if t.index == 2 {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
        } else {
            Ok(())
        }
    };
    let err = generate(&mut backend, &request(&[1], 8, &[], None), &mut broken).unwrap_err();
    assert!(
        matches!(err, GenerateError::Output { step: 2, .. }),
        "{err:?}"
    );
    // Token 2 came from the third pass (prefill, decode 1, decode 2); no pass after it.
    assert_eq!(
        backend.calls.len(),
        3,
        "generation stops when the output fails"
    );
}

#[test]
fn a_following_turn_prefills_only_its_new_tokens_and_matches_a_fresh_run() {
    let mut backend = FakeBackend::new(64);
    let (first, _) = run(&mut backend, &request(&[1, 2, 3], 5, &[], None));
    // The held sequence: prompt + every generated token but the last.
    let held: Vec<u32> = [&[1, 2, 3][..], &first.tokens[..4]].concat();
    assert_eq!(backend.seq, held);
    let next: Vec<u32> = [&held[..], &[first.tokens[4], 9, 4]].concat();
    let calls_before = backend.calls.len();
    let req = request(&next, 6, &[], None);
    let second = generate_after(&mut backend, held.len(), &req, &mut |_| Ok(())).unwrap();
    assert_eq!(backend.calls[calls_before], vec![first.tokens[4], 9, 4]);
    assert_eq!(second.reused_tokens, held.len());
    let (fresh, _) = run(&mut FakeBackend::new(64), &req);
    assert_eq!(second.tokens, fresh.tokens);
    assert_eq!(fresh.reused_tokens, 0);
}

#[test]
fn reuse_must_match_what_the_backend_holds_and_leave_something_to_run() {
    let mut backend = FakeBackend::new(64);
    let mut none = |_: &GeneratedToken| Ok(());
    // FakeBackend starts holding 3 stale tokens.
    for (reused, prompt) in [(2, &[1, 2, 3, 4][..]), (3, &[1, 2, 3][..])] {
        let err = generate_after(&mut backend, reused, &request(prompt, 2, &[], None), &mut none).unwrap_err();
        assert!(matches!(err, GenerateError::BadReuse { held: 3, .. }), "{err:?}");
    }
    assert!(backend.calls.is_empty());
}

/// Logit bias and penalties in both paths (drawn by the backend, or here with logprobs): each
/// token is the argmax of the logits after vLLM's dense formula over the prompt and the tokens
/// so far, and the logprobs are those of the raw logits.
#[test]
fn penalties_edit_the_logits_of_every_draw_and_logprobs_stay_raw() {
    let p = Penalties { repetition: 1.7, frequency: 0.6, presence: 0.4, logit_bias: vec![(2, 1.5), (9, -100.0)] };
    let prompt = [1, 2, 3];
    for logprobs in [None, Some(2)] {
        let mut backend = FakeBackend::new(64);
        let req = GenerateRequest { penalties: p.clone(), ..request(&prompt, 12, &[], logprobs) };
        let (out, _) = run(&mut backend, &req);
        let mut seq = prompt.to_vec();
        for (i, &t) in out.tokens.iter().enumerate() {
            let raw = fake_logits(&seq);
            let mut want = raw.clone();
            for &(tok, b) in &p.logit_bias {
                want[tok as usize] += b;
            }
            let generated = &seq[prompt.len()..];
            for (tok, l) in want.iter_mut().enumerate() {
                let count = generated.iter().filter(|&&g| g as usize == tok).count() as f32;
                if count > 0.0 || prompt.contains(&(tok as u32)) {
                    *l = if *l > 0.0 { *l / p.repetition } else { *l * p.repetition };
                }
                *l -= p.frequency * count + if count > 0.0 { p.presence } else { 0.0 };
            }
            assert_eq!(t, argmax(&want), "token {i} with logprobs {logprobs:?}");
            assert_ne!(t, 9, "a -100 bias bans its token");
            if let Some(all) = &out.logprobs {
                assert_eq!(all[i], crate::sampling::token_logprobs(&raw, t, 2).unwrap(), "raw logprobs");
            }
            seq.push(t);
        }
        let plain = run(&mut FakeBackend::new(64), &request(&prompt, 12, &[], logprobs)).0;
        assert_ne!(plain.tokens, out.tokens, "the penalties changed nothing");
    }
    let bad = GenerateRequest { penalties: Penalties { logit_bias: vec![(16, 1.0)], ..Penalties::default() }, ..request(&prompt, 4, &[], None) };
    let err = generate(&mut FakeBackend::new(64), &bad, &mut |_| Ok(())).unwrap_err();
    assert!(matches!(err, GenerateError::Params(SamplingError::LogitBiasOutOfVocabulary { token: 16, vocab: 16 })), "{err:?}");
}
