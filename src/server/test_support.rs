//! Shared by the server's unit tests: Nemo's tokenizer, loaded once. Like the tokenizer's own
//! tests, these fail (never skip) when `models/tekken/tekken.json` is missing.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::tokenizer::Tokenizer;

pub fn tekken() -> &'static Tokenizer {
    static TEKKEN: OnceLock<Tokenizer> = OnceLock::new();
    TEKKEN.get_or_init(|| {
        let path = std::env::var_os("NEMO_TEKKEN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tekken/tekken.json"));
        assert!(path.is_file(), "{} is missing: run scripts/setup.sh", path.display());
        Tokenizer::from_path(&path).expect("tekken.json loads")
    })
}
