//! Shared by the server's unit tests: Nemo's tokenizer, loaded once, and the structured-output
//! compiler over it. Like the tokenizer's own tests, these fail (never skip) when
//! `models/tekken/tekken.json` is missing.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::structured::Grammars;
use crate::tokenizer::Tokenizer;

pub fn tekken_shared() -> &'static Arc<Tokenizer> {
    static TEKKEN: OnceLock<Arc<Tokenizer>> = OnceLock::new();
    TEKKEN.get_or_init(|| {
        let path = std::env::var_os("NEMO_TEKKEN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tekken/tekken.json"));
        assert!(path.is_file(), "{} is missing: run scripts/setup.sh", path.display());
        Arc::new(Tokenizer::from_path(&path).expect("tekken.json loads"))
    })
}

pub fn tekken() -> &'static Tokenizer {
    tekken_shared()
}

/// Grammars over Nemo's tokenizer and a model of its 131072 ids.
pub fn tekken_grammars() -> &'static Grammars {
    static GRAMMARS: OnceLock<Grammars> = OnceLock::new();
    GRAMMARS.get_or_init(|| Grammars::new(tekken_shared().clone(), tekken().vocab_size(), &[]).expect("grammars over tekken.json"))
}
