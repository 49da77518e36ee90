//! The FP8 (e4m3) KV cache on a trained model: the demo model (SmolLM2-135M-Instruct, the GGUF
//! from scripts/setup.sh) reads English text through the CPU reference with an f32, a bf16 and an
//! fp8 cache. tests/fp8_kv_cache.rs measures against transformers on a tiny random model, whose
//! sharp attention exaggerates the cost; here is what a real model's next-token predictions lose:
//! the perplexity of the text and how often the top-1 token changes. Numbers in docs/fp8-kv.md.

use nemo_engine::engine::{BatchBackend, CpuBatchBackend, CpuBatchOptions, KvCacheDtype, StepEntry};
use nemo_engine::gguf::{build_tokenizer, load_llama, GgufFile, DEMO_MODEL_PATH};

const TEXT: &str = "The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a \
small tin of oil and a cloth for the lens. For thirty years he had watched the ships pass the \
rocks below, some of them fishing boats returning with their catch, others large cargo vessels \
heading for the harbour on the far side of the bay. He kept a logbook in which he wrote the \
weather, the state of the sea and the names of the ships he could read through his telescope. \
In winter the storms came from the north, and the waves broke so high against the cliff that \
spray reached the windows of the lamp room. On such nights he did not sleep at all, but sat by \
the light with a pot of tea, listening to the wind and checking the flame every hour. When the \
morning came he would walk down to the village for bread and news, and the children would ask \
him whether he had seen any ghosts. He always told them that the only ghosts at sea were the \
stories sailors told to pass the time, though privately he was not entirely sure. The village \
had changed over the years. The old school had become a museum, the harbour had a new concrete \
wall, and most of the young people had moved to the city to find work. Yet the lighthouse \
remained exactly as it had been when his father kept it before him, and he intended to keep it \
that way for as long as his legs could carry him up the stairs.";

struct Run {
    /// Per predicted token: the logits.
    logits: Vec<Vec<f32>>,
    /// Mean negative log-likelihood of the text's next tokens.
    nll: f64,
}

/// Prefills `prefix` tokens in one step, then feeds the rest one token a step (each step reads
/// every earlier key back from the cache), scoring each next token.
fn run(tokens: &[u32], prefix: usize, dtype: Option<KvCacheDtype>) -> Run {
    let file = GgufFile::open(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DEMO_MODEL_PATH)).expect("run scripts/setup.sh: it fetches the demo model");
    let weights = load_llama(&file).unwrap();
    let blocks = tokens.len().div_ceil(16);
    let backend = CpuBatchBackend::new(&weights, CpuBatchOptions { block_size: 16, num_blocks: blocks, max_step_tokens: 4096 });
    let mut backend = match dtype {
        None => backend.with_bf16_kv_cache(),
        Some(d) => backend.with_kv_cache_dtype(d),
    };
    let table: Vec<u32> = (0..blocks as u32).collect();
    let (mut logits, mut nll) = (Vec::new(), 0f64);
    let mut start = 0;
    for end in std::iter::once(prefix).chain(prefix + 1..tokens.len()) {
        let entry = StepEntry { tokens: &tokens[start..end], ctx_len: end, block_table: &table, want_logits: true };
        let l = backend.step(&[entry]).unwrap().pop().unwrap().unwrap();
        let max = l.iter().copied().fold(f32::MIN, f32::max) as f64;
        let log_z = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        nll += log_z - l[tokens[end] as usize] as f64;
        logits.push(l);
        start = end;
    }
    let n = logits.len() as f64;
    Run { logits, nll: nll / n }
}

#[test]
fn fp8_kv_cache_costs_a_trained_model_little_perplexity() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DEMO_MODEL_PATH);
    let file = GgufFile::open(&path).expect("run scripts/setup.sh: it fetches the demo model");
    let tokens: Vec<u32> = build_tokenizer(&file).unwrap().tokenizer.encode(TEXT, false).unwrap().get_ids().to_vec();
    assert!(tokens.len() > 250, "{} tokens", tokens.len());
    let prefix = 64;
    let exact = run(&tokens, prefix, Some(KvCacheDtype::Auto));
    let bf16 = run(&tokens, prefix, None);
    let fp8 = run(&tokens, prefix, Some(KvCacheDtype::Fp8E4m3));
    let compare = |r: &Run| {
        let (mut sum, mut count, mut flips) = (0f64, 0usize, 0usize);
        let argmax = |l: &[f32]| (0..l.len()).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap();
        for (a, b) in exact.logits.iter().zip(&r.logits) {
            sum += a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).sum::<f64>();
            count += a.len();
            flips += (argmax(a) != argmax(b)) as usize;
        }
        (sum / count as f64, flips)
    };
    let n = exact.logits.len();
    let ppl = |r: &Run| r.nll.exp();
    let ((bf16_err, bf16_flips), (fp8_err, fp8_flips)) = (compare(&bf16), compare(&fp8));
    eprintln!(
        "SmolLM2-135M, {n} next tokens after a {prefix}-token prefix: perplexity f32 {:.4}, bf16 {:.4}, fp8 {:.4}; \
         mean abs logit change bf16 {bf16_err:.2e}, fp8 {fp8_err:.2e}; top-1 changed bf16 {bf16_flips}, fp8 {fp8_flips}",
        ppl(&exact),
        ppl(&bf16),
        ppl(&fp8)
    );
    assert!(fp8_err > bf16_err, "the fp8 cache should round more than bf16");
    assert!((ppl(&fp8) / ppl(&exact) - 1.0).abs() < 0.02, "fp8 perplexity {} vs f32 {}", ppl(&fp8), ppl(&exact));
    assert!(fp8_flips * 20 <= n, "top-1 changed at {fp8_flips} of {n} positions");
}
