//! The demo model (SmolLM2-135M-Instruct, GGUF Q4_1 dequantised to bf16; head_dim 64, 9/3 heads,
//! tied embeddings) on the GPU against the CPU reference and transformers' fixture: the same
//! greedy answer to "What is the capital of France?".

use std::path::Path;

use nemo_engine::engine::{Backend, CpuBackend, CudaBackend, CudaOptions};
use nemo_engine::gguf::{load_llama, GgufFile, DEMO_MODEL_PATH};
use serde::Deserialize;

use crate::common::*;

#[derive(Deserialize)]
struct Fixture {
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    last_top_ids: Vec<u32>,
    last_top_logits: Vec<f32>,
}

fn greedy(backend: &mut dyn Backend, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>, Vec<f32>) {
    let mut logits = backend.forward(prompt).unwrap();
    let first = logits.clone();
    let (mut tokens, mut margins) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        margins.push(logits[order[0]] - logits[order[1]]);
        tokens.push(order[0] as u32);
        logits = backend.forward(&[order[0] as u32]).unwrap();
    }
    (tokens, margins, first)
}

#[test]
fn demo_model_answers_the_same_on_gpu_and_cpu() {
    let Some(_gpu) = gpu_or_skip("demo_model_answers_the_same_on_gpu_and_cpu") else { return };
    if !Path::new(DEMO_MODEL_PATH).is_file() {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED demo_model_answers_the_same_on_gpu_and_cpu: {DEMO_MODEL_PATH} absent (scripts/setup.sh)");
        return;
    }
    let fixture: Fixture =
        serde_json::from_str(&std::fs::read_to_string("tests/fixtures/smollm2/logits.json").unwrap()).unwrap();
    let file = GgufFile::open(DEMO_MODEL_PATH).unwrap();
    let weights = load_llama(&file).unwrap();
    let mut cpu = CpuBackend::new(&weights);
    let mut gpu = CudaBackend::from_weights(&weights, CudaOptions { kv: 8192.into(), max_chunk: 4096, max_seqs: 8, kv_dtype: Default::default() }).unwrap();
    let n = 24;
    let (cpu_tokens, cpu_margins, _) = greedy(&mut cpu, &fixture.prompt_ids, n);
    let (gpu_tokens, _, gpu_first) = greedy(&mut gpu, &fixture.prompt_ids, n);
    // The last prompt position's top-20 logits against transformers'.
    let got: Vec<f32> = fixture.last_top_ids.iter().map(|&t| gpu_first[t as usize]).collect();
    let (max_err, mean_err) = got.iter().zip(&fixture.last_top_logits).fold((0f32, 0f32), |(mx, sum), (g, w)| {
        ((g - w).abs().max(mx), sum + (g - w).abs() / got.len() as f32)
    });
    eprintln!("demo model on the GPU: top-20 logits vs transformers: mean abs {mean_err:.3e}, max abs {max_err:.3e}");
    eprintln!("cpu greedy {cpu_tokens:?}\ngpu greedy {gpu_tokens:?}");
    assert!(mean_err < 0.1, "top-20 logits off by {mean_err} on average");
    // "The capital of France is Paris." is the first 7 tokens of transformers' answer.
    assert_eq!(&cpu_tokens[..7], &fixture.greedy_ids[..7], "CPU greedy answer");
    for (step, ((g, c), m)) in gpu_tokens.iter().zip(&cpu_tokens).zip(&cpu_margins).enumerate() {
        if *m < 0.05 {
            eprintln!("stopping the comparison at step {step}: CPU margin {m}");
            break;
        }
        assert_eq!(g, c, "step {step}: GPU and CPU greedy tokens differ (CPU margin {m})");
    }
    assert_eq!(&gpu_tokens[..7], &fixture.greedy_ids[..7], "GPU greedy answer");
}
