//! Tokenizer tests against mistral_common's own output (tests/fixtures/tokenizer, made by
//! scripts/fixtures/make_tokenizer_fixtures.py). They need Nemo's tekken.json, which
//! scripts/setup.sh puts in models/tekken/: without it they fail, they do not skip.

mod chat;
mod codec;
mod hf_layout;
mod json_py;
mod stream;
mod tool_calls;

use std::path::PathBuf;
use std::sync::OnceLock;

use nemo_engine::tokenizer::Tokenizer;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tekken_path() -> PathBuf {
    std::env::var_os("NEMO_TEKKEN").map(PathBuf::from).unwrap_or_else(|| root().join("models/tekken/tekken.json"))
}

/// Nemo's Tekken tokenizer, loaded once for all tests.
pub fn tekken() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = tekken_path();
        assert!(path.is_file(), "{} is missing: run scripts/setup.sh (it extracts Nemo's tekken.json)", path.display());
        Tokenizer::from_path(&path).expect("tekken.json loads")
    })
}

/// The committed fixtures, or a held-out set made by scripts/fixtures/make_tokenizer_heldout.py
/// when NEMO_TOKENIZER_FIXTURES names its directory.
pub fn fixture_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("NEMO_TOKENIZER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests/fixtures/tokenizer"));
    dir.join(name)
}

pub fn fixture(name: &str) -> serde_json::Value {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

pub fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}
