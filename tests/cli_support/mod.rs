//! Running the real `nemo` binary and judging what it printed (shared by tests/cli_*.rs).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The binary under test: cargo's build of `nemo`, or `NEMO_BIN` (a bundled copy on a machine
/// without the Rust toolchain).
pub fn nemo_bin() -> PathBuf {
    std::env::var_os("NEMO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nemo")))
}

/// The `--device` of the acceptance runs: cpu, or `NEMO_CLI_DEVICE` (cuda on a GPU machine).
pub fn acceptance_device() -> String {
    std::env::var("NEMO_CLI_DEVICE").unwrap_or_else(|_| "cpu".into())
}

pub fn nemo<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    nemo_with(args, &[], None)
}

/// `nemo` with extra environment variables and, when given, `stdin` piped in (else no stdin).
pub fn nemo_with<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(nemo_bin())
        .args(args)
        .envs(env.iter().copied())
        // A panic must show as one, not be hidden or decorated by the environment.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nemo");
    if let Some(input) = stdin {
        // Written from a thread so a child that answers before reading everything cannot
        // deadlock against a full pipe.
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_string();
        std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    let out = child.wait_with_output().expect("wait for nemo");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A refusal: exit `code`, nothing on stdout, no panic, and exactly one `error:` line, the last
/// one on stderr, containing every needle. Returns that line.
pub fn assert_refused(run: &Run, code: i32, needles: &[&str]) -> String {
    let d = run.describe();
    assert_eq!(run.code, Some(code), "{d}");
    assert!(
        run.stdout.is_empty(),
        "stdout must stay empty on error\n{d}"
    );
    assert!(!run.stderr.contains("panicked"), "{d}");
    assert!(!run.stderr.contains("RUST_BACKTRACE"), "{d}");
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line\n{d}");
    assert_eq!(
        run.stderr.lines().last(),
        Some(errors[0]),
        "the error line comes last\n{d}"
    );
    for needle in needles {
        assert!(
            errors[0].contains(needle),
            "`{needle}` missing from the error line\n{d}"
        );
    }
    errors[0].to_string()
}

/// The transformers oracle the acceptance runs against: tests/fixtures/tiny-s0, or another
/// model made by the same recipe (`NEMO_ACCEPTANCE_FIXTURE=/tmp/tiny-s1`, made by
/// `scripts/fixtures/make_tiny_mistral.py --seed 1 --out /tmp/tiny-s1`).
pub fn oracle_dir() -> PathBuf {
    match std::env::var_os("NEMO_ACCEPTANCE_FIXTURE") {
        Some(dir) => PathBuf::from(dir),
        None => fixture_dir(),
    }
}

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-s0")
}

#[derive(Deserialize)]
pub struct Reference {
    pub prompts: Vec<Prompt>,
    pub greedy: Vec<Greedy>,
}

#[derive(Deserialize)]
pub struct Prompt {
    pub name: String,
    pub tokens: Vec<u32>,
}

#[derive(Deserialize)]
pub struct Greedy {
    pub prompt: String,
    pub tokens: Vec<u32>,
    pub logprobs: Vec<Step>,
    pub margins: Vec<f32>,
}

/// One step of logprobs, as in reference.json and as `nemo generate --json` prints it.
#[derive(Deserialize, Debug)]
pub struct Step {
    pub token: u32,
    pub logprob: f64,
    pub top: Vec<TopEntry>,
}

#[derive(Deserialize, Debug)]
pub struct TopEntry {
    pub token: u32,
    pub logprob: f64,
}

impl Reference {
    pub fn load(dir: &Path) -> Self {
        let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    pub fn prompt(&self, name: &str) -> &Prompt {
        self.prompts.iter().find(|p| p.name == name).unwrap()
    }

    pub fn greedy(&self, name: &str) -> &Greedy {
        self.greedy.iter().find(|g| g.prompt == name).unwrap()
    }
}

/// `nemo generate --json`'s output.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct GenerateJson {
    pub prompt_tokens: Vec<u32>,
    pub tokens: Vec<u32>,
    pub text: Option<String>,
    pub finish_reason: String,
    pub logprobs: Option<Vec<Step>>,
    /// With --tools only.
    pub tool_calls: Option<Vec<ToolCallJson>>,
    pub tool_calls_error: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ToolCallJson {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionJson,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct FunctionJson {
    pub name: String,
    pub arguments: String,
}

/// Parses stdout as exactly one JSON object on one line.
pub fn parse_json(run: &Run) -> GenerateJson {
    let d = run.describe();
    assert_eq!(run.code, Some(0), "{d}");
    assert_eq!(
        run.stdout.lines().count(),
        1,
        "one line of JSON on stdout\n{d}"
    );
    let value: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{d}"));
    assert!(value.is_object(), "{d}");
    serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}\n{d}"))
}

pub fn ids(tokens: &[u32]) -> String {
    tokens
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Copies the files of `src` (flat) into a new temporary directory.
pub fn copy_model(src: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}
