#!/usr/bin/env python3
"""Writes the fuzz seed corpus: small valid files (made and re-read by the reference
implementations) and near-valid ones (one defect each), a directory per parser.

    fuzz/seeds/<target>/ok-*   accepted by the reference library and by nemo-engine
    fuzz/seeds/<target>/bad-*  one defect each; refused by nemo-engine (and, where the
                               reference library checks that rule, by it too)

tests/hostile/seeds.rs holds nemo-engine to the ok-/bad- split; the fuzzers and the bounded
pass in `cargo test` start from these files.

Usage:  /work/venvs/fuzzseeds/bin/python fuzz/seeds/make_seeds.py
Pinned: numpy==2.3.5 safetensors==0.8.0 gguf==0.19.0 tokenizers==0.23.3 mistral_common==1.13.1
        (fuzz/seeds/requirements.txt)
"""

import base64
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np
import safetensors
from safetensors import TensorSpec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TEXT = (
    "the quick brown fox jumps over the lazy dog. the dog sleeps; the fox runs.\n"
    "Hello, world! 12345 héllo wörld — ünïcödé ✓ 日本語 🙂 [INST] tools [/INST]\n"
) * 4
# Mistral Nemo's tekken.json pre-split pattern (tekken_240718.json, `config.pattern`).
TEKKEN_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
    r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def write(target, name, data):
    d = HERE / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)
    assert len(data) <= 16 * 1024, f"{target}/{name} is {len(data)} bytes: keep seeds small"


def refused_by(fn, data):
    try:
        fn(data)
    except Exception:  # the reference raises its own error types
        return True
    return False


# ---------------------------------------------------------------- safetensors


def st_serialize(tensors, metadata=None):
    """tensors: name -> (dtype, shape, numpy array of the raw bytes' values)."""
    keep = []
    specs = {}
    for name, (dtype, shape, arr) in tensors.items():
        arr = np.ascontiguousarray(arr)
        keep.append(arr)
        specs[name] = TensorSpec(dtype=dtype, shape=shape, data_ptr=arr.ctypes.data, data_len=arr.nbytes)
    return safetensors.serialize(specs, metadata)


def st_header(data):
    n = struct.unpack("<Q", data[:8])[0]
    return n, json.loads(data[8 : 8 + n])


def st_rebuild(header, payload, pad=True):
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + payload


def safetensors_seeds():
    rng = np.random.default_rng(0)
    bf16 = lambda *shape: rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)  # noqa: E731
    one = st_serialize({"norm.weight": ("bfloat16", [8], bf16(8))})
    mixed = st_serialize(
        {
            "a.f32": ("float32", [2, 3], rng.standard_normal((2, 3)).astype(np.float32)),
            "b.bf16": ("bfloat16", [3, 2], bf16(3, 2)),
            "c.f16": ("float16", [4], rng.standard_normal(4).astype(np.float16)),
            "d.i64": ("int64", [2], np.array([1, -1], dtype=np.int64)),
            "e.u8": ("uint8", [5], np.arange(5, dtype=np.uint8)),
            "f.bool": ("bool", [3], np.array([1, 0, 1], dtype=np.uint8)),
            "g.empty": ("bfloat16", [0, 4], np.zeros(0, dtype=np.uint16)),
            "h.scalar": ("float32", [], np.array(1.5, dtype=np.float32)),
        },
        {"format": "pt", "note": "fuzz seed"},
    )
    # Mistral-layout names of a one-layer model: dim 8, 2 heads of 4, 1 KV head, FFN 16, vocab 16.
    d, q, kv, f, v = 8, 8, 4, 16, 16
    mistral = st_serialize(
        {
            "tok_embeddings.weight": ("bfloat16", [v, d], bf16(v, d)),
            "layers.0.attention_norm.weight": ("bfloat16", [d], bf16(d)),
            "layers.0.attention.wq.weight": ("bfloat16", [q, d], bf16(q, d)),
            "layers.0.attention.wk.weight": ("bfloat16", [kv, d], bf16(kv, d)),
            "layers.0.attention.wv.weight": ("bfloat16", [kv, d], bf16(kv, d)),
            "layers.0.attention.wo.weight": ("bfloat16", [d, q], bf16(d, q)),
            "layers.0.ffn_norm.weight": ("bfloat16", [d], bf16(d)),
            "layers.0.feed_forward.w1.weight": ("bfloat16", [f, d], bf16(f, d)),
            "layers.0.feed_forward.w2.weight": ("bfloat16", [d, f], bf16(d, f)),
            "layers.0.feed_forward.w3.weight": ("bfloat16", [f, d], bf16(f, d)),
            "norm.weight": ("bfloat16", [d], bf16(d)),
            "output.weight": ("bfloat16", [v, d], bf16(v, d)),
        }
    )
    empty = st_serialize({})
    oks = {"ok-one-bf16": one, "ok-mixed-dtypes": mixed, "ok-mistral-1-layer": mistral, "ok-empty": empty}
    for name, data in oks.items():
        safetensors.deserialize(data)  # the reference reads it back
        write("safetensors", name + ".safetensors", data)

    n, header = st_header(mixed)
    payload = mixed[8 + n :]

    def edited(edit):
        h = json.loads(json.dumps(header))
        edit(h)
        return st_rebuild(h, payload)

    def set_(name, key, value):
        return lambda h: h[name].__setitem__(key, value)

    bads = {
        "bad-truncated-data": mixed[:-5],
        "bad-truncated-header": mixed[: 8 + n // 2],
        "bad-short": mixed[:5],
        "bad-header-length-past-end": struct.pack("<Q", 1 << 40) + mixed[8:],
        "bad-header-length-u64-max": struct.pack("<Q", (1 << 64) - 1) + mixed[8:],
        "bad-header-not-json": mixed[:8] + b"[" + mixed[9:],
        "bad-header-not-utf8": mixed[:9] + b"\xff\xfe" + mixed[11:],
        "bad-overlapping-offsets": edited(set_("b.bf16", "data_offsets", header["a.f32"]["data_offsets"][:1] + [header["a.f32"]["data_offsets"][0] + 12])),
        "bad-offsets-past-end": edited(set_("e.u8", "data_offsets", [len(payload) + 100, len(payload) + 105])),
        "bad-offsets-reversed": edited(set_("c.f16", "data_offsets", header["c.f16"]["data_offsets"][::-1])),
        "bad-unknown-dtype": edited(set_("b.bf16", "dtype", "Q4_K")),
        "bad-negative-shape": edited(set_("a.f32", "shape", [-2, -3])),
        "bad-shape-overflow": edited(set_("d.i64", "shape", [1 << 62, 1 << 62])),
        "bad-shape-mismatch": edited(set_("a.f32", "shape", [2, 2])),
        "bad-shape-not-list": edited(set_("a.f32", "shape", "2x3")),
        "bad-trailing-bytes": mixed + b"\0" * 16,
        "bad-metadata-not-strings": edited(lambda h: h.__setitem__("__metadata__", {"n": 5})),
    }
    for name, data in bads.items():
        write("safetensors", name + ".safetensors", data)
    # Rules the reference library enforces too (it does not check metadata value types itself
    # in every version, so that one is ours alone).
    for name in ["bad-truncated-data", "bad-header-length-past-end", "bad-overlapping-offsets", "bad-unknown-dtype", "bad-negative-shape"]:
        assert refused_by(safetensors.deserialize, bads[name]), name


# ---------------------------------------------------------------- params.json / config.json

NEMO_PARAMS = {
    "dim": 5120, "n_layers": 40, "head_dim": 128, "hidden_dim": 14336, "n_heads": 32,
    "n_kv_heads": 8, "norm_eps": 1e-05, "vocab_size": 131072, "rope_theta": 1000000.0,
}  # fmt: skip
# Mistral-Nemo-Instruct-2407's config.json as published.
NEMO_CONFIG = {
    "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
    "eos_token_id": 2, "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 1024000,
    "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 40,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 131072,
}  # fmt: skip


def json_seeds(target, oks, base, edits, raw_bads):
    for name, obj in oks.items():
        write(target, name + ".json", json.dumps(obj, indent=1))
    for name, edit in edits.items():
        obj = json.loads(json.dumps(base))
        edit(obj)
        write(target, name + ".json", json.dumps(obj))
    for name, data in raw_bads.items():
        write(target, name + ".json", data)


def setk(k, v):
    return lambda o: o.__setitem__(k, v)


def delk(k):
    return lambda o: o.pop(k)


def config_seeds():
    tiny_params = json.loads((ROOT / "tests/fixtures/tiny-s0/mistral/params.json").read_text())
    no_head_dim = {k: v for k, v in NEMO_PARAMS.items() if k != "head_dim"}
    no_head_dim["dim"] = 4096
    text = json.dumps(NEMO_PARAMS)
    json_seeds(
        "params_json",
        {"ok-tiny-s0": tiny_params, "ok-nemo-12b": NEMO_PARAMS, "ok-head-dim-default": no_head_dim},
        NEMO_PARAMS,
        {
            "bad-missing-n-heads": delk("n_heads"),
            "bad-negative-dim": setk("dim", -5120),
            "bad-zero-layers": setk("n_layers", 0),
            "bad-string-vocab": setk("vocab_size", "131072"),
            "bad-float-hidden-dim": setk("hidden_dim", 14336.5),
            "bad-absurd-vocab": setk("vocab_size", 1 << 40),
            "bad-u64-overflow-dim": setk("dim", 1 << 64),
            "bad-null-n-kv-heads": setk("n_kv_heads", None),
            "bad-kv-heads-not-dividing": setk("n_kv_heads", 5),
            "bad-odd-head-dim": setk("head_dim", 127),
            "bad-negative-theta": setk("rope_theta", -1.0),
            "bad-eps-too-large": setk("norm_eps", 2.0),
            "bad-moe": setk("moe", {"num_experts": 8}),
            "bad-short-sliding-window": setk("sliding_window", 4096),
        },
        {
            "bad-truncated": text[: len(text) // 2],
            "bad-array": "[5120, 40]",
            "bad-not-utf8": b'{"dim": 5120, "\xff\xfe": 1}',
            "bad-deep-nesting": "[" * 200 + "]" * 200,
            "bad-huge-exponent": text.replace("1e-05", "1e400"),
        },
    )
    tiny_config = json.loads((ROOT / "tests/fixtures/tiny-s0/hf/config.json").read_text())
    v5 = dict(NEMO_CONFIG)
    v5.pop("rope_theta")
    v5["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0}
    text = json.dumps(NEMO_CONFIG)
    json_seeds(
        "hf_config_json",
        {"ok-tiny-s0": tiny_config, "ok-nemo-12b": NEMO_CONFIG, "ok-rope-parameters": v5},
        NEMO_CONFIG,
        {
            "bad-missing-hidden-size": delk("hidden_size"),
            "bad-negative-layers": setk("num_hidden_layers", -40),
            "bad-string-heads": setk("num_attention_heads", "32"),
            "bad-absurd-intermediate": setk("intermediate_size", 1 << 50),
            "bad-bool-vocab": setk("vocab_size", True),
            "bad-model-type": setk("model_type", "mixtral"),
            "bad-hidden-act": setk("hidden_act", "gelu"),
            "bad-attention-bias": setk("attention_bias", True),
            "bad-yarn-scaling": setk("rope_scaling", {"rope_type": "yarn", "factor": 4.0}),
            "bad-rope-scaling-string": setk("rope_scaling", "linear"),
            "bad-tie-not-bool": setk("tie_word_embeddings", "false"),
            "bad-sliding-window": setk("sliding_window", 4096),
            "bad-nan-eps": setk("rms_norm_eps", "NaN"),
        },
        {
            "bad-truncated": text[: len(text) // 3],
            "bad-empty": "",
            "bad-string": '"config"',
            "bad-trailing-garbage": text + "}",
        },
    )


# ---------------------------------------------------------------- tekken.json


def bpe_merges(text_bytes, n_merges):
    """Plain byte-level BPE training: the ranked list of merged byte strings."""
    vocab = []
    seqs = [[bytes([b]) for b in text_bytes]]
    for _ in range(n_merges):
        counts = {}
        for s in seqs:
            for a, b in zip(s, s[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        (a, b), _ = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        merged = a + b
        if merged in vocab:
            break
        vocab.append(merged)
        new = []
        for s in seqs:
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            new.append(out)
        seqs = new
    return vocab


def tekken_obj(version, n_merges, num_special, specials=None):
    pieces = [bytes([b]) for b in range(256)] + bpe_merges(TEXT.encode(), n_merges)
    vocab = []
    for rank, p in enumerate(pieces):
        try:
            token_str = p.decode("utf-8")
        except UnicodeDecodeError:
            token_str = None
        vocab.append({"rank": rank, "token_bytes": base64.b64encode(p).decode(), "token_str": token_str})
    obj = {
        "config": {
            "pattern": TEKKEN_PATTERN,
            "num_vocab_tokens": len(vocab),
            "default_vocab_size": num_special + len(vocab),
            "default_num_special_tokens": num_special,
            "version": version,
        },
        "vocab": vocab,
    }
    if specials is not None:
        obj["special_tokens"] = [{"rank": i, "token_str": s, "is_control": True} for i, s in enumerate(specials)]
    return obj


def tekken_seeds():
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    v3 = tekken_obj("v3", 16, 100)
    listed = tekken_obj(
        "v7", 12, 24,
        ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
         "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
         "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
         "[TOOL_CONTENT]"],
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name, obj in {"ok-v3-default-specials": v3, "ok-v7-listed-specials": listed}.items():
            path = Path(tmp) / "tekken.json"
            path.write_text(json.dumps(obj))
            tok = Tekkenizer.from_file(path)  # the reference reads it and round-trips text
            ids = tok.encode("the quick brown fox, héllo 🙂", bos=True, eos=True)
            assert tok.decode(ids) == "the quick brown fox, héllo 🙂", name
            write("tekken_json", name + ".json", json.dumps(obj, separators=(",", ":")))

    def ed(edit):
        o = json.loads(json.dumps(v3))
        edit(o)
        return json.dumps(o, separators=(",", ":"))

    def vocab_entry(i, key, value):
        return lambda o: o["vocab"][i].__setitem__(key, value)

    def cfg(key, value):
        return lambda o: o["config"].__setitem__(key, value)

    text = json.dumps(v3, separators=(",", ":"))
    bads = {
        "bad-rank-mismatch": ed(vocab_entry(262, "rank", 7)),
        "bad-base64": ed(vocab_entry(268, "token_bytes", "***")),
        "bad-duplicate-token": ed(vocab_entry(265, "token_bytes", base64.b64encode(b"a").decode())),
        "bad-first-256-not-bytes": ed(vocab_entry(65, "token_bytes", base64.b64encode(b"AB").decode())),
        "bad-vocab-size-past-entries": ed(cfg("default_vocab_size", 100 + len(v3["vocab"]) + 1)),
        "bad-huge-num-special": ed(lambda o: (cfg("default_num_special_tokens", 10**12)(o), cfg("default_vocab_size", 10**12 + len(v3["vocab"]))(o))),
        "bad-fewer-than-256-ordinary": ed(cfg("default_vocab_size", 100 + 200)),
        "bad-v13-without-specials": ed(cfg("version", "v13")),
        "bad-specials-without-bos": ed(lambda o: o.__setitem__("special_tokens", [{"rank": 0, "token_str": "<unk>", "is_control": True}])),
        "bad-truncated": text[: len(text) // 2],
    }
    for name, data in bads.items():
        write("tekken_json", name + ".json", data)


# ---------------------------------------------------------------- tokenizer.json


def hf_tokenizer(split_regex):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=split_regex))
    if split_regex:
        # Nemo's tokenizer.json: the tekken regex, then byte-level without its own regex.
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(TEKKEN_PATTERN), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TEXT], trainer=trainer)
    return tok


def tokenizer_json_seeds():
    from tokenizers import Tokenizer

    for name, split in {"ok-byte-level-bpe": False, "ok-nemo-style-split": True}.items():
        tok = hf_tokenizer(split)
        data = tok.to_str()
        back = Tokenizer.from_str(data)  # the reference reads it back and round-trips text
        probe = "the quick brown fox, héllo 🙂"
        assert back.decode(back.encode(probe, add_special_tokens=False).ids) == probe
        write("tokenizer_json", name + ".json", data)
    base = json.loads(hf_tokenizer(False).to_str())

    def ed(edit):
        o = json.loads(json.dumps(base))
        edit(o)
        return json.dumps(o, separators=(",", ":"))

    first_merge = base["model"]["merges"][0]
    bads = {
        "bad-model-type": ed(lambda o: o["model"].__setitem__("type", "Transformer")),
        "bad-missing-model": ed(lambda o: o.pop("model")),
        "bad-merge-unknown-token": ed(lambda o: o["model"]["merges"].__setitem__(0, ["zzz", "qqq"])),
        "bad-merge-shape": ed(lambda o: o["model"]["merges"].__setitem__(0, first_merge + ["x"] if isinstance(first_merge, list) else 5)),
        "bad-vocab-negative-id": ed(lambda o: o["model"]["vocab"].__setitem__("a", -1)),
        "bad-no-bos": ed(lambda o: o.__setitem__("added_tokens", [t for t in o["added_tokens"] if t["content"] != "<s>"])),
        "bad-added-token-id-string": ed(lambda o: o["added_tokens"][0].__setitem__("id", "0")),
        "bad-unknown-pretokenizer": ed(lambda o: o.__setitem__("pre_tokenizer", {"type": "Nope"})),
        "bad-truncated": json.dumps(base)[:2000],
    }
    for name, data in bads.items():
        write("tokenizer_json", name + ".json", data)


# ---------------------------------------------------------------- GGUF

GGUF_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b", "c", "d", "e", "h", "l", "o",
               "Ġ", "Ċ", "1", "2", "!", "ab", "abc", "Ġa", "Ġab", "he", "ll", "hell", "hello", "Ġhello",
               "de", "cd", "o!", "lo", "el", "Ġb", "Ġc"]  # fmt: skip
GGUF_MERGES = ["a b", "ab c", "Ġ a", "Ġ ab", "h e", "l l", "he ll", "hell o", "Ġ hello", "d e", "c d",
               "o !", "l o", "e l", "Ġ b", "Ġ c"]  # fmt: skip
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def gguf_model(path):
    dim, heads, kv_heads, ffn, layers = 32, 2, 1, 32, 1
    head_dim = dim // heads
    vocab = len(GGUF_TOKENS)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_embedding_length(dim)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(GGUF_TOKENS)
    w.add_token_types([3, 3, 3] + [1] * (vocab - 3))
    w.add_token_merges(GGUF_MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    rng = np.random.default_rng(1)

    def q8(name, rows, cols):
        x = rng.standard_normal((rows, cols)).astype(np.float32)
        w.add_tensor(name, gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def f32(name, n):
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    q8("token_embd.weight", vocab, dim)
    for i in range(layers):
        f32(f"blk.{i}.attn_norm.weight", dim)
        q8(f"blk.{i}.attn_q.weight", heads * head_dim, dim)
        q8(f"blk.{i}.attn_k.weight", kv_heads * head_dim, dim)
        q8(f"blk.{i}.attn_v.weight", kv_heads * head_dim, dim)
        q8(f"blk.{i}.attn_output.weight", dim, heads * head_dim)
        f32(f"blk.{i}.ffn_norm.weight", dim)
        q8(f"blk.{i}.ffn_gate.weight", ffn, dim)
        q8(f"blk.{i}.ffn_up.weight", ffn, dim)
        q8(f"blk.{i}.ffn_down.weight", dim, ffn)
    f32("output_norm.weight", dim)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_metadata_only(path):
    w = gguf.GGUFWriter(str(path), "test")
    w.add_uint8("t.u8", 7)
    w.add_int8("t.i8", -7)
    w.add_uint16("t.u16", 700)
    w.add_int16("t.i16", -700)
    w.add_uint32("t.u32", 70000)
    w.add_int32("t.i32", -70000)
    w.add_uint64("t.u64", 1 << 40)
    w.add_int64("t.i64", -(1 << 40))
    w.add_float32("t.f32", 1.5)
    w.add_float64("t.f64", -2.25)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_array("t.arr_str", ["a", "bb", ""])
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_nested", [[1, 2], [3]])
    w.add_tensor("t.f16", np.arange(16, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_seeds():
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, make in {"ok-llama-q8_0": gguf_model, "ok-metadata-types": gguf_metadata_only}.items():
            p = Path(tmp) / (name + ".gguf")
            make(p)
            gguf.GGUFReader(p)  # the reference reads it back
            files[name] = p.read_bytes()
            write("gguf", name + ".gguf", files[name])
    # Header defects on the small file (one F16 tensor), loader defects on the model.
    small, model = files["ok-metadata-types"], files["ok-llama-q8_0"]

    def tensor_fields(data, name):
        """Offsets of the n_dims, ne[0], type and offset fields of a tensor-info record."""
        name = name.encode()
        at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
        n_dims = struct.unpack_from("<I", data, at)[0]
        return at, at + 4, at + 4 + 8 * n_dims, at + 4 + 8 * n_dims + 4

    def patch(fmt, pos, value, base=small):
        b = bytearray(base)
        struct.pack_into(fmt, b, pos, value)
        return bytes(b)

    n_kv = struct.unpack_from("<Q", small, 16)[0]
    n_dims_at, ne_at, type_at, offset_at = tensor_fields(small, "t.f16")
    key = b"general.architecture"
    key_at = small.index(struct.pack("<Q", len(key)) + key)
    arr = b"t.arr_str"
    arr_len_at = small.index(struct.pack("<Q", len(arr)) + arr) + 8 + len(arr) + 4 + 4
    emb_type_at = tensor_fields(model, "token_embd.weight")[2]
    bads = {
        "bad-magic": b"GGUG" + small[4:],
        "bad-version-1": patch("<I", 4, 1),
        "bad-big-endian": patch(">I", 4, 3),
        "bad-tensor-count-huge": patch("<Q", 8, 1 << 60),
        "bad-kv-count-huge": patch("<Q", 16, 1 << 60),
        "bad-kv-count-short": patch("<Q", 16, n_kv - 1),
        "bad-key-length-huge": patch("<Q", key_at, 1 << 62),
        "bad-value-type": patch("<I", key_at + 8 + len(key), 99),
        "bad-array-length-huge": patch("<Q", arr_len_at, 1 << 61),
        "bad-n-dims-5": patch("<I", n_dims_at, 5),
        "bad-ne-huge": patch("<Q", ne_at, 1 << 62),
        "bad-ggml-type": patch("<I", type_at, 77),
        "bad-offset-misaligned": patch("<Q", offset_at, 7),
        "bad-offset-past-end": patch("<Q", offset_at, 1 << 40),
        "bad-truncated-header": small[:40],
        "bad-ggml-type-unsupported": patch("<I", emb_type_at, 6, base=model),  # Q5_0: smaller, still placed
        "bad-truncated-model": model[: len(model) * 2 // 3],
    }
    for name, data in bads.items():
        write("gguf", name + ".gguf", data)


def main():
    for sub in ["safetensors", "params_json", "hf_config_json", "tekken_json", "tokenizer_json", "gguf"]:
        shutil.rmtree(HERE / sub, ignore_errors=True)
    safetensors_seeds()
    config_seeds()
    tekken_seeds()
    tokenizer_json_seeds()
    gguf_seeds()
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file() and p.suffix != ".py")
    print(f"wrote {sum(1 for p in HERE.rglob('*-*.*'))} seeds, {total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
