//! `--prompt TEXT` and text output through each layout's tokenizer, with tiny hand-made
//! tokenizers written beside copies of the fixture models: a byte-level `tekken.json` (Mistral
//! layout) and a byte-level BPE `tokenizer.json` (HF layout), both of the model's 1024 ids.
//! Expected ids and text are computed here from the tokenizers' own tables.

mod cli_support;
#[path = "common/tiny_tekken.rs"]
mod tiny_tekken;

use std::collections::HashMap;
use std::path::Path;

use cli_support::{copy_model, fixture_dir, nemo, parse_json, GenerateJson, Run};
use serde_json::json;
use tiny_tekken::{pairs, tiny_tekken_json, tiny_tekken_pieces};

/// A v3 tekken.json: 20 default specials (ids 0..20, `<s>` = 1, `</s>` = 2), then 256 bytes and
/// 748 pairs: 1024 ids. Returns the bytes of each ordinary id.
fn write_tekken(dir: &Path) -> HashMap<u32, Vec<u8>> {
    std::fs::write(dir.join("tekken.json"), tiny_tekken_json()).unwrap();
    tiny_tekken_pieces().into_iter().enumerate().map(|(i, p)| (i as u32 + 20, p)).collect()
}

/// GPT-2's byte-level alphabet: byte -> char.
fn byte_to_char() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!'..=b'~')
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .map(u32::from)
        .collect();
    let mut chars = printable.clone();
    let mut n = 0;
    for b in 0..=255u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec![' '; 256];
    for (b, c) in printable.into_iter().zip(chars) {
        out[b as usize] = char::from_u32(c).unwrap();
    }
    out
}

/// A byte-level BPE tokenizer.json: `<unk>`, `<s>`, `</s>` (0, 1, 2), the 256 byte symbols
/// (3..259), then 765 pair merges: 1024 ids. Returns the bytes of each ordinary id.
fn write_hf_tokenizer(dir: &Path) -> HashMap<u32, Vec<u8>> {
    let alphabet = byte_to_char();
    let mut vocab = serde_json::Map::new();
    let mut bytes = HashMap::new();
    for (id, name) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert(name.to_string(), json!(id));
    }
    for (b, c) in alphabet.iter().enumerate() {
        vocab.insert(c.to_string(), json!(3 + b));
        bytes.insert(3 + b as u32, vec![b as u8]);
    }
    let mut merges = Vec::new();
    for (i, p) in pairs(1024 - 259).into_iter().enumerate() {
        let (a, b) = (p[0] as char, p[1] as char);
        vocab.insert(format!("{a}{b}"), json!(259 + i));
        merges.push(format!("{a} {b}"));
        bytes.insert(259 + i as u32, p);
    }
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let file = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges},
    });
    std::fs::write(dir.join("tokenizer.json"), file.to_string()).unwrap();
    bytes
}

/// mistral_common's decode rule: special ids dropped, each run of ordinary ids UTF-8 with
/// replacement.
fn decode(pieces: &HashMap<u32, Vec<u8>>, ids: &[u32]) -> String {
    let mut out = String::new();
    let mut run = Vec::new();
    for id in ids {
        match pieces.get(id) {
            Some(p) => run.extend_from_slice(p),
            None => {
                out.push_str(&String::from_utf8_lossy(&run));
                run.clear();
            }
        }
    }
    out + &String::from_utf8_lossy(&run)
}

fn run_prompt(dir: &Path, prompt: &str, json: bool) -> Run {
    let mut args = vec![
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        prompt,
        "--temperature",
        "0",
        "--max-tokens",
        "24",
        "--device",
        "cpu",
    ];
    if json {
        args.push("--json");
    }
    nemo(&args)
}

fn check(layout: &str, write: fn(&Path) -> HashMap<u32, Vec<u8>>, want_prompt: &[u32]) {
    let dir = copy_model(&fixture_dir().join(layout));
    let pieces = write(dir.path());
    let run = run_prompt(dir.path(), "ab cd", true);
    let out: GenerateJson = parse_json(&run);
    assert_eq!(out.prompt_tokens, want_prompt, "BOS, then the text's ids");
    assert!(
        run.stderr.contains("EOS [2] (from the tokenizer)"),
        "{}",
        run.stderr
    );
    match out.finish_reason.as_str() {
        "stop" => assert_eq!(out.tokens.last(), Some(&2)),
        _ => assert_eq!(out.tokens.len(), 24),
    }
    let text = out.text.expect("a tokenizer gives text");
    assert_eq!(text, decode(&pieces, &out.tokens));

    // Streaming prints the same text, then a newline.
    let streamed = run_prompt(dir.path(), "ab cd", false);
    assert_eq!(streamed.code, Some(0), "{}", streamed.describe());
    assert_eq!(streamed.stdout, format!("{text}\n"));
}

#[test]
fn prompt_text_through_tekken_in_the_mistral_layout() {
    // "ab" = rank 256 + 1, " " = rank 32, "cd" = rank 256 + 2 * 36 + 3; ids are rank + 20.
    check("mistral", write_tekken, &[1, 277, 52, 351]);
}

#[test]
fn prompt_text_through_tokenizer_json_in_the_hf_layout() {
    // Byte-level: "ab" | "Ġcd" -> "ab" (259 + 1), "Ġ" (3 + 32), "cd" (259 + 75).
    check("hf", write_hf_tokenizer, &[1, 260, 35, 334]);
}

#[test]
fn an_unreadable_tokenizer_is_an_error_naming_it() {
    let dir = copy_model(&fixture_dir().join("mistral"));
    std::fs::write(dir.path().join("tekken.json"), "{\"config\": ").unwrap();
    let run = nemo(&[
        "generate",
        "--model",
        dir.path().to_str().unwrap(),
        "--prompt-tokens",
        "1",
        "--device",
        "cpu",
    ]);
    cli_support::assert_refused(&run, 1, &["tekken.json", "not a tekken.json"]);
}
