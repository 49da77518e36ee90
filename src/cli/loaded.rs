//! A model opened for running: its tokenizer, chat format, stop ids and sampling
//! recommendation first (cheap, so bad requests are refused before the load), then its weights.
//! Both kinds behind one type: a checkpoint directory (Mistral / HF layout, tokenizer beside
//! it) and a GGUF file (weights, tokenizer and template in one).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use nemo_engine::gguf::{self, GgufFile};
use nemo_engine::model::{self, Checkpoint, ModelWeights};

use super::chat_format::ChatFormat;
use super::defaults::Recommended;
use super::eos;
use super::resolve::{self, ModelPath};
use super::text::Text;

/// Token ids that end generation, and where they came from (said on stderr when used).
pub struct StopIds {
    pub ids: Vec<u32>,
    pub origin: String,
}

impl StopIds {
    pub fn announce(&self) {
        if self.ids.is_empty() {
            eprintln!("nemo: notice: EOS unknown (no tokenizer, no eos_token_id in the config): generation ends at --stop-token ids or --max-tokens");
        } else {
            eprintln!("nemo: EOS {:?} ({})", self.ids, self.origin);
        }
    }
}

enum Files {
    Checkpoint(Checkpoint),
    Gguf(GgufFile),
}

pub struct Model {
    pub path: ModelPath,
    pub text: Option<Text>,
    pub chat: Option<ChatFormat>,
    pub stop: StopIds,
    pub recommended: Recommended,
    files: Files,
}

impl Model {
    /// `--model` (or the demo model), without its weights.
    pub fn open(model: Option<&Path>) -> anyhow::Result<Model> {
        let path = resolve::resolve(model)?;
        match &path {
            ModelPath::Checkpoint(dir) => open_checkpoint(dir, path.clone()),
            ModelPath::Gguf(file) => open_gguf(file, path.clone()),
        }
    }

    /// Loads and validates every weight; says what was loaded and how long it took.
    pub fn load_weights(&self) -> anyhow::Result<ModelWeights> {
        let start = Instant::now();
        let (weights, kind, warnings) = match &self.files {
            Files::Checkpoint(c) => {
                let loaded = model::load_checkpoint(c.clone()).with_context(|| {
                    format!("loading the model in {}", c.dir.display())
                })?;
                (loaded.weights, c.layout.to_string(), loaded.warnings)
            }
            Files::Gguf(file) => {
                let weights = gguf::load_llama(file)?;
                (weights, "GGUF (llama architecture, dequantised to bf16)".into(), Vec::new())
            }
        };
        eprintln!(
            "nemo: loaded {}: {kind} in {:.2} s",
            self.path.path().display(),
            start.elapsed().as_secs_f64()
        );
        for warning in &warnings {
            eprintln!("nemo: warning: {warning}");
        }
        if let Some(text) = &self.text {
            text.check_vocab(weights.config.vocab_size);
        }
        Ok(weights)
    }

    /// The chat format, or an error saying the model has none.
    pub fn chat_format(&self) -> anyhow::Result<&ChatFormat> {
        self.chat.as_ref().with_context(|| match &self.text {
            None => format!(
                "{} has no tokenizer (tekken.json or tokenizer.json), so no chat template",
                self.path.path().display()
            ),
            Some(t) => format!(
                "no chat template is known for the tokenizer {} (Mistral's v3 template needs its \
                 [INST] control tokens)",
                t.source.display()
            ),
        })
    }
}

fn open_checkpoint(dir: &Path, path: ModelPath) -> anyhow::Result<Model> {
    let context = || format!("loading the model in {}", dir.display());
    let checkpoint = Checkpoint::detect(dir).with_context(context)?;
    // Config problems show before the tokenizer's.
    checkpoint.parse_config().with_context(context)?;
    let text = checkpoint.tokenizer.as_deref().map(Text::from_path).transpose()?;
    let chat = text.as_ref().and_then(|t| ChatFormat::for_tokenizer(t.tokenizer()));
    let stop = match text.as_ref().map(Text::eos_ids).filter(|ids| !ids.is_empty()) {
        Some(ids) => StopIds { ids, origin: "from the tokenizer".into() },
        None => match eos::from_hf_config(&checkpoint)? {
            Some((ids, file)) => StopIds {
                ids,
                origin: format!("from {file}); --ignore-eos to generate past it"),
            },
            None => StopIds { ids: Vec::new(), origin: String::new() },
        },
    };
    let recommended = Recommended::from_generation_config(dir)?;
    Ok(Model { path, text, chat, stop, recommended, files: Files::Checkpoint(checkpoint) })
}

fn open_gguf(file: &Path, path: ModelPath) -> anyhow::Result<Model> {
    let gguf = GgufFile::open(file)?;
    let parts = GgufText::read(&gguf, file)?;
    let recommended = Recommended::from_gguf(&gguf)?;
    Ok(Model {
        path,
        text: Some(parts.text),
        chat: parts.chat,
        stop: parts.stop,
        recommended,
        files: Files::Gguf(gguf),
    })
}

/// What a GGUF file says about text: tokenizer, template, end-of-turn ids.
pub struct GgufText {
    pub text: Text,
    pub chat: Option<ChatFormat>,
    pub stop: StopIds,
}

impl GgufText {
    pub fn read(gguf: &GgufFile, file: &Path) -> anyhow::Result<GgufText> {
        let tokenizer = gguf::build_tokenizer(gguf)?;
        let add_bos = gguf.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
        let text = Text::from_gguf(file, &tokenizer, add_bos);
        let chat = ChatFormat::from_gguf(gguf, &tokenizer)?;
        // EOS, the end-of-turn id when the file names one, and ChatML's <|im_end|> when the
        // template ends turns with it: a chat answer ends at whichever comes first.
        let mut ids: Vec<u32> = [tokenizer.eos_id, tokenizer.eot_id].into_iter().flatten().collect();
        let template = gguf.opt_str("tokenizer.chat_template")?.unwrap_or("");
        if template.contains("<|im_end|>") {
            ids.extend(text.tokenizer().special_id("<|im_end|>"));
        }
        ids.sort_unstable();
        ids.dedup();
        let origin = format!("from the GGUF tokenizer {}", file.display());
        Ok(GgufText { text, chat, stop: StopIds { ids, origin } })
    }
}

/// `nemo tokenize --model PATH`: a tokenizer file (tekken.json, tokenizer.json, .gguf) or a
/// directory holding one; no weights are read. Without PATH, the demo model's.
pub fn open_tokenizer(path: Option<&Path>) -> anyhow::Result<(Text, Option<ChatFormat>)> {
    let gguf_path = match path {
        None => Some(resolve::resolve(None)?.path().to_path_buf()),
        Some(p) => gguf_of(p)?,
    };
    if let Some(file) = gguf_path {
        let gguf = GgufFile::open(&file)?;
        let parts = GgufText::read(&gguf, &file)?;
        return Ok((parts.text, parts.chat));
    }
    let path = path.expect("no path means the demo GGUF");
    let text = Text::from_path(path)?;
    let chat = ChatFormat::for_tokenizer(text.tokenizer());
    Ok((text, chat))
}

/// The GGUF file `path` names for tokenizing: itself, or the one .gguf in a directory that
/// has no tokenizer JSON.
fn gguf_of(path: &Path) -> anyhow::Result<Option<PathBuf>> {
    let has_json = ["tekken.json", "tokenizer.json"].iter().any(|n| path.join(n).is_file());
    if path.is_dir() && has_json {
        return Ok(None);
    }
    match resolve::resolve(Some(path)) {
        Ok(ModelPath::Gguf(file)) => Ok(Some(file)),
        // A JSON tokenizer file, or a directory the tokenizer loader judges.
        _ => Ok(None),
    }
}
