//! The bounded fuzz pass CI runs: each libFuzzer harness (`fuzz/harness.rs`) over its seed
//! corpus, then over deterministic mutations of it (bit flips, interesting integers over
//! length and count fields, cut / inserted / duplicated ranges, splices of two seeds, and
//! JSON-aware edits: numbers swapped for negative, huge or fractional ones, values for other
//! types). The inputs are a fixed sequence of fixed length, so a failure names a case that
//! reruns identically, whatever the machine's speed.
//!
//! Long sessions are libFuzzer's job (`scripts/fuzz`); this pass keeps every harness honest
//! on every commit without a nightly toolchain.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::alloc_cap::{CASE, TARGET};
use super::harness::TARGETS;
use super::seeds::seed_files;

/// Inputs per parser (seeds included): fixed, so every run tries the same inputs on any machine
/// and a failure reproduces by its case number. About 10 s in all on one core; the JSON
/// tokenizers cost the most per input (a regex compiled, a vocabulary built).
const CASES: [(&str, usize); 6] = [
    ("safetensors", 50_000),
    ("params_json", 100_000),
    ("hf_config_json", 100_000),
    ("tekken_json", 20_000),
    ("tokenizer_json", 30_000),
    ("gguf", 60_000),
];

/// xorshift64*: deterministic, seedable, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING_U64: [u64; 14] = [
    0,
    1,
    2,
    7,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    1 << 62,
    i64::MAX as u64,
    u64::MAX,
];

const INTERESTING_JSON: [&str; 18] = [
    "-1",
    "0",
    "1",
    "-0",
    "1.5",
    "1e400",
    "-1e400",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "null",
    "true",
    "\"\"",
    "\"x\"",
    "[]",
    "{}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
];

/// One to four edits of `seed`; `other` is another seed of the same parser, for splices.
pub fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        let at = rng.below(len + 1);
        match rng.below(11) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = rng.next() as u8;
            }
            2 => {
                // An integer field overwritten: counts, lengths, offsets, type ids.
                let v = INTERESTING_U64[rng.below(INTERESTING_U64.len())];
                let width = [1, 2, 4, 8][rng.below(4)];
                let bytes = &v.to_le_bytes()[..width];
                let end = (at + width).min(len);
                d.splice(at..end, bytes.iter().copied());
            }
            3 if len > 0 => {
                let end = (at + 1 + rng.below(64)).min(len);
                d.drain(at.min(end)..end);
            }
            4 => {
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                d.splice(at..at, bytes);
            }
            5 if len > 0 => {
                // Duplicate a range (repeated keys, entries, tensors).
                let start = rng.below(len);
                let end = (start + 1 + rng.below(256)).min(len);
                let chunk = d[start..end].to_vec();
                d.splice(at..at, chunk);
            }
            6 => d.truncate(at),
            7 if !other.is_empty() => {
                let from = rng.below(other.len());
                d.truncate(at);
                d.extend_from_slice(&other[from..]);
            }
            8 | 9 => json_number_or_value(rng, &mut d),
            _ => {
                // Rewrite the 8-byte little-endian length prefix most formats start with.
                let v = INTERESTING_U64[rng.below(INTERESTING_U64.len())];
                if len >= 8 {
                    d[..8].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    d
}

/// Replaces a number, or the value after a `:`, with one of [`INTERESTING_JSON`].
fn json_number_or_value(rng: &mut Rng, d: &mut Vec<u8>) {
    if d.is_empty() {
        return;
    }
    let replacement = INTERESTING_JSON[rng.below(INTERESTING_JSON.len())].as_bytes();
    let start = rng.below(d.len());
    let Some(pos) = d[start..]
        .iter()
        .position(|&b| b.is_ascii_digit() || b == b':')
        .map(|p| p + start)
    else {
        return;
    };
    let (from, to) = if d[pos] == b':' {
        // The value after the colon, up to the next `,` or `}` at the same line (rough on
        // purpose: a mismatched bracket is a fine mutation too).
        let from = pos + 1;
        let to = d[from..]
            .iter()
            .position(|&b| b == b',' || b == b'}')
            .map_or(d.len(), |p| p + from);
        (from, to)
    } else {
        let mut from = pos;
        while from > 0
            && (d[from - 1].is_ascii_digit() || d[from - 1] == b'-' || d[from - 1] == b'.')
        {
            from -= 1;
        }
        let to = d[pos..]
            .iter()
            .position(|&b| {
                !(b.is_ascii_digit()
                    || b == b'.'
                    || b == b'e'
                    || b == b'E'
                    || b == b'-'
                    || b == b'+')
            })
            .map_or(d.len(), |p| p + pos);
        (from, to)
    };
    d.splice(from..to, replacement.iter().copied());
}

/// Runs one input; on a panic, saves it under target/hostile-failures and fails naming it.
fn run_case(target: &str, harness: fn(&[u8]), case: usize, input: &[u8]) {
    CASE.store(case, Ordering::Relaxed);
    if catch_unwind(AssertUnwindSafe(|| harness(input))).is_err() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/hostile-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{target}-case-{case}"));
        std::fs::write(&file, input).unwrap();
        panic!(
            "{target}: case {case} panicked (see the message above); input saved to {} \
             (reproduce: cargo +nightly fuzz run {target} {})",
            file.display(),
            file.display()
        );
    }
}

#[test]
fn every_parser_survives_its_seeds_and_their_mutations() {
    let mut summary = Vec::new();
    for (index, (target, harness)) in TARGETS.iter().enumerate() {
        TARGET.store(index, Ordering::Relaxed);
        let seeds: Vec<Vec<u8>> = seed_files(target)
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        for (case, seed) in seeds.iter().enumerate() {
            run_case(target, *harness, case, seed);
        }
        let mut rng = Rng::new(0x5eed_0000 + index as u64);
        let start = Instant::now();
        let total = CASES
            .iter()
            .find(|(t, _)| t == target)
            .expect("a case count per target")
            .1;
        for case in seeds.len()..total {
            let seed = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, seed, other);
            run_case(target, *harness, case, &input);
        }
        let secs = start.elapsed().as_secs_f64();
        summary.push(format!(
            "{target}: {total} inputs ({} seeds) in {secs:.1} s",
            seeds.len()
        ));
    }
    TARGET.store(usize::MAX, Ordering::Relaxed);
    eprintln!("bounded fuzz pass:\n  {}", summary.join("\n  "));
}

#[test]
fn mutations_are_deterministic_and_varied() {
    let seed = b"{\"dim\": 5120, \"n_layers\": 40}".to_vec();
    let run = || {
        let mut rng = Rng::new(42);
        (0..200)
            .map(|_| mutate(&mut rng, &seed, b"[1,2]"))
            .collect::<Vec<_>>()
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b, "the same seed must give the same cases");
    let distinct: std::collections::BTreeSet<&Vec<u8>> = a.iter().collect();
    assert!(
        distinct.len() > 150,
        "only {} distinct mutations of 200",
        distinct.len()
    );
    assert!(
        a.iter()
            .any(|m| m != &seed && serde_json::from_slice::<serde_json::Value>(m).is_ok()),
        "no mutation kept the JSON well-formed"
    );
}
