//! The `llama` loader and the GGUF tokenizer on small hand-built files: every tensor lands in
//! its role with the right row-major shape, every config key is read (and checked), and what
//! the engine cannot run is refused by name.

#[path = "gguf_support/writer.rs"]
mod writer;

use half::{bf16, f16};
use nemo_engine::gguf::{build_tokenizer, load_llama, ChatTemplate, GgufErrorKind, GgufFile};
use nemo_engine::model::RopeLayout;
use writer::{s, str_arr, GgufWriter, W};

const DIM: u64 = 64;
const HEADS: u64 = 4;
const KV_HEADS: u64 = 2;
const FFN: u64 = 96;
const LAYERS: usize = 2;
const TOKENS: [&str; 16] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool>",
    "a",
    "b",
    "c",
    "Ġ",
    "1",
    "2",
    "Ċ",
    "ab",
    "abc",
    "Ġa",
    "Ġab",
    "!",
];
const TOKEN_TYPES: [i32; 16] = [3, 3, 3, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
// By rank: "a b" merges before "Ġ a", so " ab" becomes Ġ + ab, then Ġab through "Ġ ab".
const MERGES: [&str; 4] = ["a b", "ab c", "Ġ a", "Ġ ab"];

/// A value that says where it came from: tensor `tag`, row `r`, column `c`.
fn probe(tag: u32, r: u64, c: u64) -> f32 {
    (tag * 1000) as f32 + (r * 7 + c) as f32 * 0.25
}

fn f32_data(tag: u32, rows: u64, cols: u64) -> Vec<u8> {
    (0..rows)
        .flat_map(|r| (0..cols).map(move |c| probe(tag, r, c)))
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// Q8_0 rows where element (r, c) = (r + c) % 100 (d = 1): position-checkable.
fn q8_0_data(rows: u64, cols: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for r in 0..rows {
        for block in 0..cols / 32 {
            out.extend(f16::from_f32(1.0).to_bits().to_le_bytes());
            out.extend((0..32).map(|j| ((r + block * 32 + j) % 100) as u8));
        }
    }
    out
}

/// Q4_1 blocks with d = 0 and m = `value`: a constant tensor.
fn q4_1_const(value: f32, numel: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..numel / 32 {
        out.extend(f16::from_f32(0.0).to_bits().to_le_bytes());
        out.extend(f16::from_f32(value).to_bits().to_le_bytes());
        out.extend([0xAB; 16]);
    }
    out
}

/// Q4_0 blocks with d = 1 and every nibble 8 + k: a constant `k` tensor.
fn q4_0_const(k: u8, numel: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..numel / 32 {
        out.extend(f16::from_f32(1.0).to_bits().to_le_bytes());
        out.extend([(8 + k) | ((8 + k) << 4); 16]);
    }
    out
}

fn tiny_llama(head_dim: u64) -> GgufWriter {
    let q_dim = HEADS * head_dim;
    let kv_dim = KV_HEADS * head_dim;
    let mut w = GgufWriter::default()
        .kv("general.architecture", s("llama"))
        .kv("llama.embedding_length", W::U32(DIM as u32))
        .kv("llama.block_count", W::U32(LAYERS as u32))
        .kv("llama.attention.head_count", W::U32(HEADS as u32))
        .kv("llama.attention.head_count_kv", W::U32(KV_HEADS as u32))
        .kv("llama.feed_forward_length", W::U32(FFN as u32))
        .kv("llama.rope.freq_base", W::F32(100000.0))
        .kv("llama.attention.layer_norm_rms_epsilon", W::F32(1e-5))
        .kv("llama.context_length", W::U32(8192))
        .kv("llama.rope.dimension_count", W::U32(head_dim as u32))
        .kv("tokenizer.ggml.model", s("gpt2"))
        .kv("tokenizer.ggml.pre", s("smollm"))
        .kv("tokenizer.ggml.tokens", str_arr(&TOKENS))
        .kv("tokenizer.ggml.token_type", W::Arr(5, TOKEN_TYPES.iter().map(|&t| W::I32(t)).collect()))
        .kv("tokenizer.ggml.merges", str_arr(&MERGES))
        .kv("tokenizer.ggml.bos_token_id", W::U32(1))
        .kv("tokenizer.ggml.eos_token_id", W::U32(2))
        .kv("tokenizer.chat_template", s("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"))
        .tensor("token_embd.weight", &[DIM, TOKENS.len() as u64], 8, q8_0_data(TOKENS.len() as u64, DIM));
    if head_dim != DIM / HEADS {
        w = w
            .kv("llama.attention.key_length", W::U32(head_dim as u32))
            .kv("llama.attention.value_length", W::U32(head_dim as u32));
    }
    for i in 0..LAYERS as u32 {
        let t = 10 * (i + 1);
        let f16_bytes: Vec<u8> = (0..kv_dim * DIM)
            .flat_map(|x| f16::from_f32((x % 50) as f32).to_bits().to_le_bytes())
            .collect();
        let bf16_bytes: Vec<u8> = (0..DIM * q_dim)
            .flat_map(|x| bf16::from_f32(x as f32).to_bits().to_le_bytes())
            .collect();
        w = w
            .f32_tensor(
                &format!("blk.{i}.attn_norm.weight"),
                &[DIM],
                &vec![t as f32 + 1.0; DIM as usize],
            )
            .tensor(
                &format!("blk.{i}.attn_q.weight"),
                &[DIM, q_dim],
                3,
                q4_1_const(t as f32 + 2.0, q_dim * DIM),
            )
            .tensor(
                &format!("blk.{i}.attn_k.weight"),
                &[DIM, kv_dim],
                2,
                q4_0_const(3, kv_dim * DIM),
            )
            .tensor(
                &format!("blk.{i}.attn_v.weight"),
                &[DIM, kv_dim],
                1,
                f16_bytes,
            )
            .tensor(
                &format!("blk.{i}.attn_output.weight"),
                &[q_dim, DIM],
                30,
                bf16_bytes,
            )
            .f32_tensor(
                &format!("blk.{i}.ffn_norm.weight"),
                &[DIM],
                &vec![t as f32 + 5.0; DIM as usize],
            )
            .tensor(
                &format!("blk.{i}.ffn_gate.weight"),
                &[DIM, FFN],
                0,
                f32_data(t + 6, FFN, DIM),
            )
            .tensor(
                &format!("blk.{i}.ffn_up.weight"),
                &[DIM, FFN],
                0,
                f32_data(t + 7, FFN, DIM),
            )
            .tensor(
                &format!("blk.{i}.ffn_down.weight"),
                &[FFN, DIM],
                0,
                f32_data(t + 8, DIM, FFN),
            );
    }
    w.f32_tensor("output_norm.weight", &[DIM], &vec![0.5; DIM as usize])
}

fn open(w: &GgufWriter) -> GgufFile {
    GgufFile::from_bytes("/models/tiny.gguf", w.build()).expect("valid file")
}

fn values(t: &nemo_engine::model::Tensor) -> Vec<f32> {
    t.as_bf16().iter().map(|v| v.to_f32()).collect()
}

#[test]
fn tiny_llama_loads_every_role_in_row_major_order() {
    let w = load_llama(&open(&tiny_llama(16))).unwrap();
    let c = &w.config;
    assert_eq!(
        (
            c.dim,
            c.n_layers,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim,
            c.ffn_dim
        ),
        (64, 2, 4, 2, 16, 96)
    );
    assert_eq!(
        (c.vocab_size, c.rope_theta, c.norm_eps, c.max_context),
        (16, 100000.0, 1e-5, 8192)
    );
    assert!(c.tied_embeddings);
    assert!(w.lm_head.is_none());
    assert_eq!(w.rope_layout, RopeLayout::Interleaved);

    assert_eq!(w.embedding.shape, [16, 64]);
    let emb = values(&w.embedding);
    for (r, col) in [(0, 0), (3, 5), (15, 63)] {
        assert_eq!(
            emb[r * 64 + col],
            ((r + col) % 100) as f32,
            "embedding[{r}][{col}]"
        );
    }
    assert_eq!(
        w.lm_head().name,
        "token_embd.weight",
        "tied head is the embedding"
    );

    for (i, l) in w.layers.iter().enumerate() {
        let t = 10.0 * (i as f32 + 1.0);
        assert_eq!(l.attn_norm.shape, [64]);
        assert!(values(&l.attn_norm).iter().all(|&v| v == t + 1.0));
        assert_eq!(
            (
                l.wq.shape.as_slice(),
                l.wk.shape.as_slice(),
                l.wv.shape.as_slice()
            ),
            (&[64, 64][..], &[32, 64][..], &[32, 64][..])
        );
        assert!(
            values(&l.wq).iter().all(|&v| v == t + 2.0),
            "Q4_1 d=0 gives m everywhere"
        );
        assert!(
            values(&l.wk).iter().all(|&v| v == 3.0),
            "Q4_0 nibble 11 - 8"
        );
        assert_eq!(values(&l.wv)[..3], [0.0, 1.0, 2.0]);
        assert_eq!(values(&l.wv)[60], 10.0);
        assert_eq!(l.wo.shape, [64, 64]);
        assert_eq!(values(&l.wo)[200], 200.0);
        assert!(values(&l.ffn_norm).iter().all(|&v| v == t + 5.0));
        assert_eq!(
            (
                l.w_gate.shape.as_slice(),
                l.w_up.shape.as_slice(),
                l.w_down.shape.as_slice()
            ),
            (&[96, 64][..], &[96, 64][..], &[64, 96][..])
        );
        let tag = |k: f32| (t + k) as u32;
        for (r, col) in [(0u64, 0u64), (5, 7), (95, 63)] {
            assert_eq!(
                values(&l.w_gate)[(r * 64 + col) as usize],
                bf16::from_f32(probe(tag(6.0), r, col)).to_f32()
            );
            assert_eq!(
                values(&l.w_up)[(r * 64 + col) as usize],
                bf16::from_f32(probe(tag(7.0), r, col)).to_f32()
            );
        }
        for (r, col) in [(0u64, 0u64), (5, 90), (63, 95)] {
            assert_eq!(
                values(&l.w_down)[(r * 96 + col) as usize],
                bf16::from_f32(probe(tag(8.0), r, col)).to_f32(),
                "w_down[{r}][{col}]"
            );
        }
    }
    assert!(values(&w.final_norm).iter().all(|&v| v == 0.5));
}

#[test]
fn head_dim_comes_from_key_length_when_present() {
    // head_dim 32 with 4 heads: q is 128 wide while the model is 64 wide, as in Nemo.
    let w = load_llama(&open(&tiny_llama(32))).unwrap();
    assert_eq!(
        (w.config.head_dim, w.config.q_dim(), w.config.kv_dim()),
        (32, 128, 64)
    );
    assert_eq!(w.layers[0].wq.shape, [128, 64]);
    assert_eq!(w.layers[0].wo.shape, [64, 128]);
}

#[test]
fn an_output_tensor_unties_the_head() {
    let file = tiny_llama(16).tensor("output.weight", &[DIM, 16], 0, f32_data(99, 16, DIM));
    let w = load_llama(&open(&file)).unwrap();
    assert!(!w.config.tied_embeddings);
    let head = w.lm_head.as_ref().expect("untied head");
    assert_eq!(head.shape, [16, 64]);
    assert_eq!(
        values(w.lm_head())[64 + 2],
        bf16::from_f32(probe(99, 1, 2)).to_f32()
    );
}

fn load_err(w: &GgufWriter) -> GgufErrorKind {
    let err = load_llama(&open(w)).err().expect("refused");
    assert!(err.to_string().contains("/models/tiny.gguf"), "{err}");
    err.kind
}

fn without(w: GgufWriter, name: &str) -> GgufWriter {
    let mut w = w;
    w.tensors.retain(|t| t.name != name);
    w.kv.retain(|(k, _)| k != name);
    w
}

fn with_kv(w: GgufWriter, key: &str, v: W) -> GgufWriter {
    without(w, key).kv(key, v)
}

#[test]
fn tensors_that_do_not_fit_are_refused_by_name() {
    let kind = load_err(&without(tiny_llama(16), "blk.1.ffn_up.weight"));
    assert!(
        matches!(kind, GgufErrorKind::MissingTensor { ref tensor } if tensor == "blk.1.ffn_up.weight"),
        "{kind:?}"
    );

    let mut w = tiny_llama(16);
    let k = w
        .tensors
        .iter_mut()
        .find(|t| t.name == "blk.0.attn_k.weight")
        .unwrap();
    k.ne = vec![DIM, DIM];
    k.data = q4_0_const(1, DIM * DIM);
    let kind = load_err(&w);
    assert!(
        matches!(kind, GgufErrorKind::TensorShape { ref tensor, ref expected, ref found } if tensor == "blk.0.attn_k.weight" && expected == &[32, 64] && found == &[64, 64]),
        "{kind:?}"
    );

    let kind = load_err(&tiny_llama(16).f32_tensor("rope_freqs.weight", &[8], &[1.0; 8]));
    assert!(
        matches!(kind, GgufErrorKind::UnexpectedTensor { ref tensor, .. } if tensor == "rope_freqs.weight"),
        "{kind:?}"
    );

    // Q5_0 is a known type (block 32, 22 bytes) that we do not dequantise.
    let mut w = tiny_llama(16);
    let g = w
        .tensors
        .iter_mut()
        .find(|t| t.name == "blk.1.ffn_gate.weight")
        .unwrap();
    g.type_id = 6;
    g.data = vec![0; (FFN * DIM / 32 * 22) as usize];
    let kind = load_err(&w);
    assert!(
        matches!(kind, GgufErrorKind::UnsupportedTensorType { ref tensor, type_name: "Q5_0" } if tensor == "blk.1.ffn_gate.weight"),
        "{kind:?}"
    );
}

#[test]
fn config_keys_are_required_and_checked() {
    let kind = load_err(&with_kv(tiny_llama(16), "general.architecture", s("gpt2")));
    assert!(
        matches!(kind, GgufErrorKind::UnsupportedArchitecture { ref arch } if arch == "gpt2"),
        "{kind:?}"
    );
    let kind = load_err(&without(tiny_llama(16), "llama.embedding_length"));
    assert!(
        matches!(kind, GgufErrorKind::MissingKey { ref key } if key == "llama.embedding_length"),
        "{kind:?}"
    );
    let kind = load_err(&without(
        tiny_llama(16),
        "llama.attention.layer_norm_rms_epsilon",
    ));
    assert!(matches!(kind, GgufErrorKind::MissingKey { .. }), "{kind:?}");
    let kind = load_err(&with_kv(tiny_llama(16), "llama.block_count", s("2")));
    assert!(
        matches!(kind, GgufErrorKind::WrongValueType { ref key, .. } if key == "llama.block_count"),
        "{kind:?}"
    );

    let bad_values = [
        ("llama.attention.head_count_kv", W::U32(3)),
        ("llama.rope.dimension_count", W::U32(8)),
        ("llama.block_count", W::U32(0)),
        ("llama.vocab_size", W::U32(17)),
        ("llama.rope.freq_base", W::F32(f32::NAN)),
        ("llama.rope.scaling.type", s("yarn")),
    ];
    for (key, value) in bad_values {
        let kind = load_err(&with_kv(tiny_llama(16), key, value));
        assert!(
            matches!(kind, GgufErrorKind::BadValue { key: ref k, .. } if k == key),
            "{key}: {kind:?}"
        );
    }
    // Without head_count_kv, every head has its own K/V (then attn_k no longer fits).
    let kind = load_err(&without(tiny_llama(16), "llama.attention.head_count_kv"));
    assert!(
        matches!(kind, GgufErrorKind::TensorShape { ref expected, .. } if expected == &[64, 64]),
        "{kind:?}"
    );
}

#[test]
fn tokenizer_from_metadata_splits_digits_and_keeps_added_tokens_whole() {
    let file = open(&tiny_llama(16));
    let t = build_tokenizer(&file).unwrap();
    assert_eq!(
        (t.bos_id, t.eos_id, t.eot_id, t.pad_id),
        (Some(1), Some(2), None, None)
    );
    let text = "abc ab12<|im_start|>!<tool> a\n";
    let enc = t.tokenizer.encode(text, true).unwrap();
    assert_eq!(
        enc.get_ids(),
        [12, 14, 8, 9, 1, 15, 3, 13, 10],
        "{:?}",
        enc.get_tokens()
    );
    assert_eq!(t.tokenizer.decode(enc.get_ids(), false).unwrap(), text);
    assert_eq!(
        t.tokenizer.decode(enc.get_ids(), true).unwrap(),
        "abc ab12!<tool> a\n",
        "skip drops control tokens only"
    );
    assert_eq!(
        t.tokenizer.get_vocab_size(true),
        16,
        "added tokens reuse their vocab ids"
    );
}

#[test]
fn tokenizer_adds_bos_only_when_the_file_says_so() {
    let file = open(&tiny_llama(16).kv("tokenizer.ggml.add_bos_token", W::Bool(true)));
    let t = build_tokenizer(&file).unwrap();
    assert_eq!(t.tokenizer.encode("ab", true).unwrap().get_ids(), [1, 11]);
    assert_eq!(t.tokenizer.encode("ab", false).unwrap().get_ids(), [11]);
}

#[test]
fn tokenizer_metadata_problems_are_refused() {
    let tok_err = |w: GgufWriter| match build_tokenizer(&open(&w)) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.kind,
    };
    let cases = [
        (
            with_kv(tiny_llama(16), "tokenizer.ggml.model", s("llama")),
            "tokenizer.ggml.model 'llama'",
        ),
        (
            with_kv(tiny_llama(16), "tokenizer.ggml.pre", s("llama-bpe")),
            "tokenizer.ggml.pre 'llama-bpe'",
        ),
        (
            with_kv(
                tiny_llama(16),
                "tokenizer.ggml.merges",
                str_arr(&["a b", "abc"]),
            ),
            "merges[1]",
        ),
        (
            with_kv(tiny_llama(16), "tokenizer.ggml.merges", str_arr(&["a z"])),
            "BPE",
        ),
        (
            without(
                with_kv(
                    tiny_llama(16),
                    "tokenizer.ggml.tokens",
                    str_arr(&["a", "b", "a"]),
                ),
                "tokenizer.ggml.token_type",
            ),
            "appears twice",
        ),
        (
            with_kv(
                tiny_llama(16),
                "tokenizer.ggml.token_type",
                W::Arr(5, vec![W::I32(1)]),
            ),
            "one per token",
        ),
    ];
    for (w, needle) in cases {
        match tok_err(w) {
            GgufErrorKind::Tokenizer { reason } => {
                assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
            }
            other => panic!("{needle}: {other:?}"),
        }
    }
    let kind = tok_err(with_kv(
        tiny_llama(16),
        "tokenizer.ggml.eos_token_id",
        W::U32(16),
    ));
    assert!(
        matches!(kind, GgufErrorKind::BadValue { ref key, .. } if key == "tokenizer.ggml.eos_token_id"),
        "{kind:?}"
    );
}

#[test]
fn chat_template_comes_from_the_file() {
    let file = open(&tiny_llama(16));
    let t = ChatTemplate::from_gguf(&file).unwrap();
    let msgs = [nemo_engine::gguf::ChatMessage::new("user", "ab")];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n"
    );
    let kind = ChatTemplate::from_gguf(&open(&without(tiny_llama(16), "tokenizer.chat_template")))
        .err()
        .unwrap()
        .kind;
    assert!(matches!(kind, GgufErrorKind::NoChatTemplate), "{kind:?}");
    let kind = ChatTemplate::from_gguf(&open(&with_kv(
        tiny_llama(16),
        "tokenizer.chat_template",
        s("{% if %}"),
    )))
    .err()
    .unwrap()
    .kind;
    assert!(matches!(kind, GgufErrorKind::ChatTemplate(_)), "{kind:?}");
}
