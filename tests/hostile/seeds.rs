//! The committed seed corpus (`fuzz/seeds/<target>/`, made by `fuzz/seeds/make_seeds.py` with
//! the reference libraries): every `ok-*` file loads through the engine's own file entry points,
//! and every `bad-*` file is refused with one line naming the file and the broken field.

use std::path::{Path, PathBuf};

use nemo_engine::gguf::{build_tokenizer, load_llama, ChatTemplate, GgufFile};
use nemo_engine::model::params::{parse_config_json, parse_params_json};
use nemo_engine::model::safetensors_files::SafetensorsFile;
use nemo_engine::tokenizer::{HfTokenizer, Tekken};

use super::expected::EXPECTED;

pub fn seed_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target)
}

/// Every seed of a target, sorted by name.
pub fn seed_files(target: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(seed_dir(target))
        .unwrap_or_else(|e| panic!("fuzz/seeds/{target}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("ok-") || name.starts_with("bad-")
        })
        .collect();
    files.sort();
    files
}

/// Loads a file as the engine does; `Err` is the one-line message the CLI would print.
fn load(target: &str, path: &Path) -> Result<(), String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    match target {
        "safetensors" => SafetensorsFile::open(path).map(drop).map_err(|e| s(&e)),
        "params_json" => parse_params_json(path).map(drop).map_err(|e| s(&e)),
        "hf_config_json" => parse_config_json(path).map(drop).map_err(|e| s(&e)),
        "tekken_json" => Tekken::from_file(path).map(drop).map_err(|e| s(&e)),
        "tokenizer_json" => HfTokenizer::from_file(path).map(drop).map_err(|e| s(&e)),
        "gguf" => {
            let file = GgufFile::open(path).map_err(|e| s(&e))?;
            if file.architecture().ok() == Some("llama") {
                load_llama(&file).map_err(|e| s(&e))?;
                build_tokenizer(&file).map_err(|e| s(&e))?;
                ChatTemplate::from_gguf(&file).map_err(|e| s(&e))?;
            }
            Ok(())
        }
        _ => unreachable!("{target}"),
    }
}

#[test]
fn ok_seeds_load_and_bad_seeds_are_refused_by_name() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for (target, _) in crate::harness::TARGETS {
        let files = seed_files(target);
        assert!(
            files
                .iter()
                .any(|p| p.file_name().unwrap().to_str().unwrap().starts_with("ok-")),
            "{target}: no ok- seed"
        );
        for path in files {
            let stem = path.file_stem().unwrap().to_str().unwrap();
            let result = load(target, &path);
            if stem.starts_with("ok-") {
                if let Err(e) = result {
                    panic!("{target}/{stem} is valid (the reference library reads it) but was refused: {e}");
                }
                continue;
            }
            let message = match result {
                Ok(()) => panic!("{target}/{stem} was accepted"),
                Err(m) => m,
            };
            if std::env::var_os("HOSTILE_SHOW_MESSAGES").is_some() {
                eprintln!("{target}/{stem}: {message}");
            }
            assert!(
                message.contains(&path.display().to_string()),
                "{target}/{stem}: the file is not named: {message}"
            );
            assert!(
                !message.contains('\n'),
                "{target}/{stem}: not one line: {message}"
            );
            let (_, _, needles) = EXPECTED
                .iter()
                .find(|(t, s, _)| *t == target && *s == stem)
                .unwrap_or_else(|| {
                    panic!("{target}/{stem}: add its expected message to EXPECTED ({message})")
                });
            let missing: Vec<&&str> = needles.iter().filter(|n| !message.contains(**n)).collect();
            if !missing.is_empty() {
                failures.push(format!(
                    "{target}/{stem}: {missing:?} missing from: {message}"
                ));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "messages that do not say what broke:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        checked,
        EXPECTED.len(),
        "a seed listed in EXPECTED is missing from fuzz/seeds"
    );
}
