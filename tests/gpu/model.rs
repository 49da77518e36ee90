//! The whole GPU forward pass (CudaBackend) against transformers' fp32 fixtures and against the
//! CPU reference: prefill, chunked prefill, token-by-token decode, greedy runs, both layouts, and
//! a full-size Nemo-shaped random model.

use half::bf16;
use nemo_engine::cpu::forward_last;
use nemo_engine::cpu::KvCache;
use nemo_engine::engine::{Backend, CudaBackend, CudaOptions};
use nemo_engine::gpu::kernels::attention_wgmma::WgmmaSchedule;
use nemo_engine::gpu::model::{GemmKernel, PrefillKernel};
use nemo_engine::model::{load, LayerWeights, ModelConfig, ModelWeights, RopeLayout, Tensor, TensorData};
use rayon::prelude::*;

use crate::common::*;
use crate::fixtures::reference::{fixture_dir, reference_tensors, Reference};

/// The bound for bf16 GPU logits against fp32 ones.
const MEAN_ABS: f32 = 0.03;

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

fn top2_margin(v: &[f32]) -> f32 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    s[0] - s[1]
}

/// Mean and max absolute difference.
fn errors(got: &[f32], want: &[f32]) -> (f32, f32) {
    let (mut sum, mut max) = (0f64, 0f32);
    for (g, w) in got.iter().zip(want) {
        let e = (g - w).abs();
        assert!(e.is_finite(), "non-finite logit");
        sum += e as f64;
        max = max.max(e);
    }
    ((sum / got.len() as f64) as f32, max)
}

fn backend(weights: &ModelWeights, max_chunk: usize) -> CudaBackend {
    CudaBackend::from_weights(weights, CudaOptions { kv: 8192.into(), max_chunk, max_seqs: 8, kv_dtype: Default::default() }).unwrap()
}

#[test]
fn gpu_prefill_matches_transformers_in_both_layouts() {
    let Some(_gpu) = gpu_or_skip("gpu_prefill_matches_transformers_in_both_layouts") else { return };
    prefill_matches_transformers(GemmKernel::MmaSync);
}

/// The same with the Hopper GEMM (kernels/gemm_wgmma.cu) in every linear layer with M > 8.
#[test]
fn gpu_prefill_with_the_wgmma_gemm_matches_transformers() {
    let Some(_gpu) = gpu_or_skip("gpu_prefill_with_the_wgmma_gemm_matches_transformers") else { return };
    prefill_matches_transformers(GemmKernel::Wgmma);
}

/// The same with the Hopper prefill attention (kernels/attention_prefill_wgmma.cu).
#[test]
fn gpu_prefill_with_the_wgmma_attention_matches_transformers() {
    let Some(_gpu) = gpu_or_skip("gpu_prefill_with_the_wgmma_attention_matches_transformers") else { return };
    prefill_matches_transformers_with(GemmKernel::MmaSync, PrefillKernel::Wgmma(WgmmaSchedule::InOrder));
}

/// And with its overlap variant.
#[test]
fn gpu_prefill_with_the_wgmma_overlap_attention_matches_transformers() {
    let Some(_gpu) = gpu_or_skip("gpu_prefill_with_the_wgmma_overlap_attention_matches_transformers") else { return };
    prefill_matches_transformers_with(GemmKernel::MmaSync, PrefillKernel::Wgmma(WgmmaSchedule::Overlap));
}

/// And with its ping-pong variant.
#[test]
fn gpu_prefill_with_the_wgmma_pingpong_attention_matches_transformers() {
    let Some(_gpu) = gpu_or_skip("gpu_prefill_with_the_wgmma_pingpong_attention_matches_transformers") else { return };
    prefill_matches_transformers_with(GemmKernel::MmaSync, PrefillKernel::Wgmma(WgmmaSchedule::PingPong));
}

fn prefill_matches_transformers(gemm: GemmKernel) {
    prefill_matches_transformers_with(gemm, PrefillKernel::MMA_FLASH);
}

fn prefill_matches_transformers_with(gemm: GemmKernel, prefill: PrefillKernel) {
    let reference = Reference::load();
    let tensors = reference_tensors();
    for layout in ["hf", "mistral"] {
        let model = load(&fixture_dir().join(layout)).unwrap();
        let vocab = model.weights.config.vocab_size;
        // One chunk per prompt, then the same prompts in chunks of 100 tokens.
        for max_chunk in [4096, 100] {
            let mut gpu = backend(&model.weights, max_chunk);
            gpu.model.gemm = gemm;
            gpu.model.prefill = prefill;
            for p in &reference.prompts {
                gpu.reset();
                let logits = gpu.forward(&p.tokens).unwrap();
                let (_, all) = &tensors[&format!("logits.{}", p.name)];
                let want = &all[all.len() - vocab..]; // the last recorded position is the last token
                assert_eq!(*p.logit_positions.last().unwrap(), p.tokens.len() - 1);
                let (mean, max) = errors(&logits, want);
                eprintln!("{layout} chunk {max_chunk} {gemm:?} {prefill:?} {}: mean abs {mean:.2e}, max abs {max:.2e}", p.name);
                assert!(mean <= MEAN_ABS, "{layout} {gemm:?} {}: mean abs logit error {mean} > {MEAN_ABS}", p.name);
                if top2_margin(want) > 0.1 {
                    assert_eq!(argmax(&logits), argmax(want), "{layout} {}: greedy token", p.name);
                }
            }
        }
    }
}

/// `Backend::score` on the GPU (`CudaModel::score_chunk`: the layers once, then the LM head and
/// `target_logprobs_f32` over groups of `max_seqs` rows) against transformers' log-softmax at
/// every recorded position: in chunks of 100 tokens and groups of 8 rows, and in one chunk.
#[test]
fn gpu_scores_match_transformers() {
    let Some(_gpu) = gpu_or_skip("gpu_scores_match_transformers") else { return };
    let reference = Reference::load();
    let tensors = reference_tensors();
    let model = load(&fixture_dir().join("mistral")).unwrap();
    let vocab = model.weights.config.vocab_size;
    for (max_chunk, max_seqs) in [(100, 8), (4096, 256)] {
        let opts = CudaOptions { kv: 8192.into(), max_chunk, max_seqs, kv_dtype: Default::default() };
        let mut gpu = CudaBackend::from_weights(&model.weights, opts).unwrap();
        for p in reference.prompts.iter().filter(|p| p.tokens.len() > 1) {
            let n = p.tokens.len();
            gpu.reset();
            let scores = gpu.score(&p.tokens[..n - 1], &p.tokens[1..]).unwrap();
            assert_eq!((scores.len(), gpu.len()), (n - 1, n - 1));
            let (_, theirs) = &tensors[&format!("logits.{}", p.name)];
            let (mut sum, mut max, mut count) = (0f64, 0f64, 0);
            for (row, &pos) in p.logit_positions.iter().enumerate().filter(|(_, &pos)| pos < n - 1) {
                let want = crate::fixtures::reference::log_softmax(&theirs[row * vocab..(row + 1) * vocab])[p.tokens[pos + 1] as usize];
                let err = (scores[pos] as f64 - want).abs();
                assert!(err.is_finite(), "{} position {pos}: {}", p.name, scores[pos]);
                (sum, max, count) = (sum + err, max.max(err), count + 1);
            }
            let mean = sum / count as f64;
            eprintln!("chunk {max_chunk}, groups of {max_seqs}, {}: {count} positions, mean abs logprob error {mean:.2e}, max {max:.2e}", p.name);
            assert!(mean <= MEAN_ABS as f64, "{}: mean abs logprob error {mean} > {MEAN_ABS}", p.name);
        }
    }
}

#[test]
fn gpu_decode_steps_match_transformers_at_every_position() {
    let Some(_gpu) = gpu_or_skip("gpu_decode_steps_match_transformers_at_every_position") else { return };
    let reference = Reference::load();
    let tensors = reference_tensors();
    let model = load(&fixture_dir().join("hf")).unwrap();
    let vocab = model.weights.config.vocab_size;
    let p = reference.prompt("p64");
    let (_, all) = &tensors["logits.p64"];
    let mut gpu = backend(&model.weights, 4096);
    let mut worst = 0f32;
    for (i, &token) in p.tokens.iter().enumerate() {
        let logits = gpu.forward(&[token]).unwrap();
        let want = &all[i * vocab..(i + 1) * vocab];
        let (mean, _) = errors(&logits, want);
        worst = worst.max(mean);
        assert!(mean <= MEAN_ABS, "position {i}: mean abs logit error {mean}");
    }
    eprintln!("decode p64 token by token: worst mean abs logit error {worst:.2e}");
}

#[test]
fn gpu_greedy_run_matches_transformers_until_a_small_margin() {
    let Some(_gpu) = gpu_or_skip("gpu_greedy_run_matches_transformers_until_a_small_margin") else { return };
    let reference = Reference::load();
    for layout in ["hf", "mistral"] {
        let model = load(&fixture_dir().join(layout)).unwrap();
        let mut gpu = backend(&model.weights, 4096);
        for run in &reference.greedy {
            gpu.reset();
            let mut logits = gpu.forward(&reference.prompt(&run.prompt).tokens).unwrap();
            let mut matched = 0;
            for (step, (&want, &margin)) in run.tokens.iter().zip(&run.margins).enumerate() {
                if margin < 0.05 {
                    break; // bf16 rounding may flip a choice this close
                }
                assert_eq!(argmax(&logits) as u32, want, "{layout} {} step {step} (margin {margin})", run.prompt);
                matched += 1;
                logits = gpu.forward(&[want]).unwrap();
            }
            eprintln!("{layout} greedy from {}: {matched}/{} tokens equal", run.prompt, run.tokens.len());
        }
    }
}

/// Host memory in GiB (the Nemo-shaped check holds 24 GB of weights on the host).
fn host_memory_gib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb >> 20)
}

fn random_tensor(name: &str, shape: Vec<usize>, seed: u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut data = vec![bf16::ZERO; n];
    data.par_chunks_mut(1 << 20).enumerate().for_each(|(c, chunk)| {
        let mut rng = Rng::seeded(seed ^ ((c as u64) << 32));
        for x in chunk {
            *x = bf16::from_f32((rng.uniform() * 2.0 - 1.0) * scale);
        }
    });
    Tensor { name: name.into(), shape, data: TensorData::Owned(data) }
}

/// Nemo's exact shapes with random weights (scaled by 1/sqrt(fan-in), norms near 1).
fn nemo_shaped_random(seed: u64) -> ModelWeights {
    let c = ModelConfig::nemo_12b();
    let lin = |name: &str, out: usize, inp: usize, s: u64| random_tensor(name, vec![out, inp], seed + s, (3.0 / inp as f32).sqrt());
    let norm = |name: &str, s: u64| {
        let mut t = random_tensor(name, vec![c.dim], seed + s, 0.2);
        if let TensorData::Owned(v) = &mut t.data {
            v.iter_mut().for_each(|x| *x = bf16::from_f32(1.0 + x.to_f32()));
        }
        t
    };
    let layers = (0..c.n_layers as u64)
        .map(|l| {
            let s = 100 * (l + 1);
            LayerWeights {
                attn_norm: norm("attn_norm", s),
                wq: lin("wq", c.q_dim(), c.dim, s + 1),
                wk: lin("wk", c.kv_dim(), c.dim, s + 2),
                wv: lin("wv", c.kv_dim(), c.dim, s + 3),
                wo: lin("wo", c.dim, c.q_dim(), s + 4),
                ffn_norm: norm("ffn_norm", s + 5),
                w_gate: lin("w_gate", c.ffn_dim, c.dim, s + 6),
                w_up: lin("w_up", c.ffn_dim, c.dim, s + 7),
                w_down: lin("w_down", c.dim, c.ffn_dim, s + 8),
            }
        })
        .collect();
    ModelWeights {
        embedding: random_tensor("embedding", vec![c.vocab_size, c.dim], seed, 1.0),
        final_norm: norm("final_norm", 7),
        lm_head: Some(lin("lm_head", c.vocab_size, c.dim, 9)),
        layers,
        rope_layout: RopeLayout::Interleaved,
        config: c,
    }
}

#[test]
fn gpu_matches_cpu_on_a_full_size_nemo_shaped_model() {
    let Some(_gpu) = gpu_or_skip("gpu_matches_cpu_on_a_full_size_nemo_shaped_model") else { return };
    if host_memory_gib() < 64 {
        eprintln!("SKIPPED gpu_matches_cpu_on_a_full_size_nemo_shaped_model: needs 64 GiB of host memory");
        return;
    }
    let weights = nemo_shaped_random(42);
    let prompt: Vec<u32> = vec![1, 22, 4_000, 131_071, 77_777, 12];
    let mut cache = KvCache::new(&weights.config);
    let want = forward_last(&weights, &prompt, &mut cache).unwrap();
    let mut gpu = CudaBackend::from_weights(&weights, CudaOptions { kv: 4096.into(), max_chunk: 4096, max_seqs: 8, kv_dtype: Default::default() }).unwrap();
    let got = gpu.forward(&prompt).unwrap();
    let (mean, max) = errors(&got, &want);
    let scale = rms(&want);
    eprintln!("Nemo-shaped random model: logit rms {scale:.3}, mean abs err {mean:.3e}, max abs err {max:.3e}");
    assert!(mean <= 0.03 * scale.max(1.0), "mean abs logit error {mean} (logit rms {scale})");
    // One decode step on top.
    let want = forward_last(&weights, &[5], &mut cache).unwrap();
    let got = gpu.forward(&[5]).unwrap();
    let (mean, _) = errors(&got, &want);
    assert!(mean <= 0.03 * rms(&want).max(1.0), "decode step: mean abs logit error {mean}");
}

#[test]
fn gpu_sampling_in_the_loop_equals_host_sampling() {
    use nemo_engine::generate::{generate, GenerateRequest};
    use nemo_engine::sampling::{Penalties, SamplingParams, StopCriteria};
    let Some(_gpu) = gpu_or_skip("gpu_sampling_in_the_loop_equals_host_sampling") else { return };
    let reference = Reference::load();
    let model = load(&fixture_dir().join("hf")).unwrap();
    let mut gpu = backend(&model.weights, 4096);
    // The last two with logit bias and penalties: applied on the device or on the host.
    let penalised = Penalties { repetition: 1.3, frequency: 0.2, presence: 0.5, logit_bias: vec![(5, 3.0), (40, -100.0)] };
    for (i, (temperature, top_p, top_k, seed)) in [(0.0, 1.0, 0, 0), (0.8, 0.9, 0, 7), (1.2, 1.0, 40, 3), (0.5, 0.95, 0, 11), (0.0, 1.0, 0, 0), (0.7, 1.0, 0, 5)].into_iter().enumerate() {
        let params = SamplingParams { temperature, top_p, top_k, min_p: 0.0, seed };
        let penalties = if i >= 4 { penalised.clone() } else { Penalties::default() };
        let request = |logprobs| GenerateRequest {
            prompt: reference.prompt("p64").tokens.clone(),
            params,
            penalties: penalties.clone(),
            stop: StopCriteria::new(24, Vec::new(), Vec::new()).unwrap(),
            logprobs,
            grammar: None,
        };
        // Without logprobs the token is drawn on the device; with them, on the host.
        let on_device = generate(&mut gpu, &request(None), &mut |_| Ok(())).unwrap();
        let on_host = generate(&mut gpu, &request(Some(0)), &mut |_| Ok(())).unwrap();
        assert_eq!(on_device.tokens, on_host.tokens, "T {temperature} top_p {top_p} top_k {top_k} seed {seed}");
    }
}

/// Decode steps replayed as CUDA graphs give the eager steps' logits: three sequences of
/// different lengths (paged, distinct blocks) prefilled, then greedy decode at batch 3 and, after
/// one sequence leaves, batch 2 (a second graph); the graph path fixes the split count per batch
/// size, so logits agree to summation order, and greedy tokens agree wherever the top-2 margin
/// is clear. Graphs captured as steps come (two), or all at start-up
/// (`capture_decode_graphs`: the ladder up to 8 sequences, then no capture during the steps).
#[test]
fn cuda_graph_decode_steps_equal_eager_steps() {
    graph_steps_equal_eager_steps("cuda_graph_decode_steps_equal_eager_steps", false);
}

#[test]
fn cuda_graph_decode_steps_captured_at_start_up_equal_eager_steps() {
    graph_steps_equal_eager_steps("cuda_graph_decode_steps_captured_at_start_up_equal_eager_steps", true);
}

fn graph_steps_equal_eager_steps(test: &str, at_start_up: bool) {
    use nemo_engine::gpu::model::{CudaModel, GpuWeights, SeqChunk};
    use nemo_engine::gpu::{Gpu, GpuOptions};
    let Some(_gpu) = gpu_or_skip(test) else { return };
    let weights = load(&fixture_dir().join("hf")).unwrap().weights;
    let open = |cuda_graphs: bool| {
        let gpu = Gpu::open(GpuOptions { cuda_graphs, ..GpuOptions::from_env() }).unwrap();
        assert_eq!(gpu.cuda_graphs, cuda_graphs, "NEMO_CUDA_SYNC=1 turns graphs off; unset it for this test");
        let w = GpuWeights::upload(&gpu, &weights).unwrap();
        CudaModel::new(gpu, w, 4096, 512, 8).unwrap()
    };
    let (mut graphed, mut eager) = (open(true), open(false));
    if at_start_up {
        let report = graphed.capture_decode_graphs().unwrap().expect("graphs on");
        assert_eq!(report.captured, 4, "the ladder up to 8 sequences: 1, 2, 4, 8");
        assert!(eager.capture_decode_graphs().unwrap().is_none(), "graphs off: nothing to capture");
    }
    let vocab = weights.config.vocab_size;
    // Sequence i owns blocks 64 i.. (1024 slots each).
    let tables: Vec<Vec<u32>> = (0..3u32).map(|i| (64 * i..64 * (i + 1)).collect()).collect();
    let prompts: Vec<Vec<i32>> = [37usize, 5, 130].iter().enumerate().map(|(i, &len)| (0..len).map(|t| ((t * 31 + i * 7 + 1) % vocab) as i32).collect()).collect();
    let mut ctx: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let step_wanting = |model: &mut CudaModel, ids: &[Vec<i32>], ctx: &[usize], live: &[usize], want: &[bool]| {
        let seqs: Vec<SeqChunk> = live
            .iter()
            .zip(want)
            .map(|(&i, &want_logits)| SeqChunk { ids: &ids[i], ctx_len: ctx[i], block_table: &tables[i], want_logits })
            .collect();
        model.forward_batch(&seqs).unwrap()
    };
    let step = |model: &mut CudaModel, ids: &[Vec<i32>], ctx: &[usize], live: &[usize]| {
        step_wanting(model, ids, ctx, live, &[true; 3]).into_iter().map(Option::unwrap).collect::<Vec<_>>()
    };
    let all = [0usize, 1, 2];
    let mut next: Vec<Vec<i32>> = step(&mut eager, &prompts, &ctx, &all).iter().map(|l| vec![argmax(l) as i32]).collect();
    step(&mut graphed, &prompts, &ctx, &all); // prefill: eager in both (not a decode step)
    let mut worst = 0f32;
    // Batch 3 (padded to the ladder's 4: one padding row in the reserved last block), then 2,
    // then (after an eager step that no graph fits) 3 again with the sequences in other rows
    // than at its capture.
    for t in 0..30 {
        if t == 24 {
            // One sequence wants no logits: the logit-row count differs from the graphs', so the
            // step runs eagerly in both models.
            for &i in &all {
                ctx[i] += 1;
            }
            let want = step_wanting(&mut eager, &next, &ctx, &all, &[true, false, true]);
            let got = step_wanting(&mut graphed, &next, &ctx, &all, &[true, false, true]);
            assert!(want[1].is_none() && got[1].is_none());
            for k in [0, 2] {
                let (mean, max) = errors(got[k].as_ref().unwrap(), want[k].as_ref().unwrap());
                assert!(mean <= 5e-3 && max <= 5e-2, "mixed step, sequence {k}: mean abs {mean}, max abs {max}");
                next[k] = vec![argmax(want[k].as_ref().unwrap()) as i32];
            }
            next[1] = vec![5]; // no logits to choose from: any token, the same in both
            continue;
        }
        let live: &[usize] = match t {
            0..12 => &all,
            12..24 => &[0, 2],
            _ => &[2, 1, 0],
        };
        for &i in live {
            ctx[i] += 1;
        }
        let want = step(&mut eager, &next, &ctx, live);
        let got = step(&mut graphed, &next, &ctx, live);
        for (k, &i) in live.iter().enumerate() {
            let (mean, max) = errors(&got[k], &want[k]);
            worst = worst.max(max);
            // Only the split count differs (summation order, bf16 roundings): far below the O(1)
            // errors of a replay that read stale inputs or metadata.
            assert!(mean <= 5e-3 && max <= 5e-2, "step {t} sequence {i}: graph vs eager mean abs {mean}, max abs {max}");
            if top2_margin(&want[k]) > 0.05 {
                assert_eq!(argmax(&got[k]), argmax(&want[k]), "step {t} sequence {i}: greedy token");
            }
            next[i] = vec![argmax(&want[k]) as i32];
        }
    }
    let report = graphed.graph_report().expect("graphs on");
    eprintln!("cuda graphs: {} captured in {:.1} ms; worst max abs logit difference {worst:.2e}", report.captured, report.capture_ms);
    if at_start_up {
        assert_eq!(report.captured, 4, "no capture after start-up");
    } else {
        assert_eq!(report.captured, 2, "one graph per batch size (3, then 2), none for the mixed step");
    }
    assert!(eager.graph_report().is_none());
}

/// `CudaModel::profile_step` (nemo bench's per-kernel breakdown): a decode step of two sequences
/// profiled gives the plain step's logits bit for bit, and names every kernel group with its
/// launch count (one a layer; the embedding and the LM head once).
#[test]
fn profiled_step_equals_the_plain_step_and_names_every_kernel() {
    use nemo_engine::gpu::model::SeqChunk;
    let Some(_gpu) = gpu_or_skip("profiled_step_equals_the_plain_step_and_names_every_kernel") else { return };
    let weights = load(&fixture_dir().join("hf")).unwrap().weights;
    let n_layers = weights.config.n_layers;
    let mut b = backend(&weights, 512);
    let tables: [Vec<u32>; 2] = [(0..8).collect(), (8..16).collect()];
    let prompt: Vec<i32> = (1..=40).collect();
    let prefill: Vec<SeqChunk> = tables.iter().map(|t| SeqChunk { ids: &prompt, ctx_len: 40, block_table: t, want_logits: false }).collect();
    b.model.forward_batch(&prefill).unwrap();
    // The same decode step twice (it rewrites the same KV slots with the same values).
    let step: Vec<SeqChunk> = tables.iter().map(|t| SeqChunk { ids: &[7], ctx_len: 41, block_table: t, want_logits: true }).collect();
    let plain: Vec<Vec<f32>> = b.model.forward_batch(&step).unwrap().into_iter().map(Option::unwrap).collect();
    let breakdown = b.model.profile_step(&step).unwrap();
    for (row, want) in plain.iter().enumerate() {
        assert!(b.model.logits_row(row).unwrap() == *want, "row {row}: profiled logits differ from the plain step's");
    }
    eprintln!("profiled decode step, tiny model, batch 2:\n{}", breakdown.table());
    let got: Vec<(&str, usize)> = breakdown.rows.iter().map(|r| (r.name, r.launches)).collect();
    // RoPE runs inside the decode attention unless NEMO_DECODE_ROPE=separate.
    let rope_launch = !b.model.rope_in_decode;
    let per_layer = ["norm + qkv", "rope_write_kv", "attention (decode)", "o + residual", "norm + gate_up + swiglu", "down + residual"];
    let want: Vec<(&str, usize)> = [("embedding", 1)]
        .into_iter()
        .chain(per_layer.into_iter().filter(|&n| rope_launch || n != "rope_write_kv").map(|n| (n, n_layers)))
        .chain([("final norm + lm_head", 1)])
        .collect();
    assert_eq!(got, want);
    assert!(breakdown.rows.iter().all(|r| r.ms >= 0.0) && breakdown.total_ms > 0.0, "{breakdown:?}");
    // A prompt chunk (nemo bench profiles the longest prefill's last one): RoPE is its own launch.
    let chunk: Vec<SeqChunk> = tables.iter().map(|t| SeqChunk { ids: &prompt[..30], ctx_len: 40, block_table: t, want_logits: true }).collect();
    let prefill = b.model.profile_step(&chunk).unwrap();
    let got: Vec<(&str, usize)> = prefill.rows.iter().map(|r| (r.name, r.launches)).collect();
    for name in ["rope_write_kv", "attention (prefill)"] {
        assert!(got.contains(&(name, n_layers)), "prefill chunk: {name} once a layer in {got:?}");
    }
}
