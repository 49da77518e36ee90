//! What `--model PATH` names, shared by every subcommand: a checkpoint directory (Mistral or
//! HF layout), a `.gguf` file, or a directory holding exactly one `.gguf`. Without `--model`,
//! the demo model (SmolLM2-135M-Instruct, put in models/ by scripts/setup.sh), said on stderr.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use nemo_engine::gguf::DEMO_MODEL_PATH;

/// Overrides where the demo model is looked for (tests use it to simulate a missing model).
pub const DEMO_MODEL_ENV: &str = "NEMO_DEMO_MODEL";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelPath {
    /// A directory in the Mistral or HF layout (config + safetensors).
    Checkpoint(PathBuf),
    /// A GGUF file: weights, tokenizer and chat template in one.
    Gguf(PathBuf),
}

impl ModelPath {
    pub fn path(&self) -> &Path {
        match self {
            ModelPath::Checkpoint(p) | ModelPath::Gguf(p) => p,
        }
    }
}

/// `--model`, or the demo model when it is absent.
pub fn resolve(model: Option<&Path>) -> anyhow::Result<ModelPath> {
    match model {
        Some(path) => classify(path),
        None => {
            let path = demo_model_path()?;
            eprintln!(
                "nemo: no --model given: using the demo model SmolLM2-135M-Instruct ({})",
                path.display()
            );
            Ok(ModelPath::Gguf(path))
        }
    }
}

/// Where the demo model is: `$NEMO_DEMO_MODEL`, else `DEMO_MODEL_PATH` under the current
/// directory, else under the source tree this binary was built from (so `target/release/nemo`
/// finds it from anywhere in a checkout).
pub fn demo_model_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(DEMO_MODEL_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "no --model given, and the demo model is not at {} (from ${DEMO_MODEL_ENV}): run \
                 scripts/setup.sh to fetch it, or pass --model",
                path.display()
            );
        }
        return Ok(path);
    }
    let candidates = [
        PathBuf::from(DEMO_MODEL_PATH),
        Path::new(env!("CARGO_MANIFEST_DIR")).join(DEMO_MODEL_PATH),
    ];
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => bail!(
            "no --model given, and the demo model is not at {}: run scripts/setup.sh to fetch it \
             (SmolLM2-135M-Instruct, 98 MB), or pass --model",
            DEMO_MODEL_PATH
        ),
    }
}

fn classify(path: &Path) -> anyhow::Result<ModelPath> {
    if path.is_file() {
        if is_gguf_file(path)? {
            return Ok(ModelPath::Gguf(path.to_path_buf()));
        }
        bail!(
            "{} is a file but not a GGUF model: --model takes a checkpoint directory, a .gguf \
             file, or a directory holding one",
            path.display()
        );
    }
    if path.is_dir() && !has_checkpoint_config(path) {
        let ggufs = gguf_files_in(path)?;
        match ggufs.as_slice() {
            [one] => return Ok(ModelPath::Gguf(one.clone())),
            [] => {}
            many => bail!(
                "{} holds {} .gguf files ({}): pass one of them as --model",
                path.display(),
                many.len(),
                many.iter()
                    .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    // A checkpoint, or a path whose absence / emptiness the checkpoint loader reports.
    Ok(ModelPath::Checkpoint(path.to_path_buf()))
}

fn has_checkpoint_config(dir: &Path) -> bool {
    dir.join("params.json").is_file() || dir.join("config.json").is_file()
}

/// A `.gguf` name, or the GGUF magic in the first bytes whatever the name.
fn is_gguf_file(path: &Path) -> anyhow::Result<bool> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        return Ok(true);
    }
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(file.read_exact(&mut magic).is_ok() && &magic == b"GGUF")
}

fn gguf_files_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")))
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directories_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // An empty directory goes to the checkpoint loader, which says what is missing.
        assert_eq!(classify(d).unwrap(), ModelPath::Checkpoint(d.into()));
        std::fs::write(d.join("a.gguf"), b"GGUF").unwrap();
        assert_eq!(classify(d).unwrap(), ModelPath::Gguf(d.join("a.gguf")));
        assert_eq!(classify(&d.join("a.gguf")).unwrap(), ModelPath::Gguf(d.join("a.gguf")));
        std::fs::write(d.join("b.gguf"), b"GGUF").unwrap();
        let err = classify(d).unwrap_err().to_string();
        assert!(err.contains("2 .gguf files (a.gguf, b.gguf)"), "{err}");
        // A renamed GGUF is known by its magic; another file is refused.
        std::fs::write(d.join("model.bin"), b"GGUF\x03\0\0\0").unwrap();
        assert_eq!(classify(&d.join("model.bin")).unwrap(), ModelPath::Gguf(d.join("model.bin")));
        std::fs::write(d.join("notes.txt"), b"hello").unwrap();
        assert!(classify(&d.join("notes.txt")).unwrap_err().to_string().contains("not a GGUF model"));
        // A checkpoint config wins over stray .gguf files.
        std::fs::write(d.join("params.json"), b"{}").unwrap();
        assert_eq!(classify(d).unwrap(), ModelPath::Checkpoint(d.into()));
    }
}
