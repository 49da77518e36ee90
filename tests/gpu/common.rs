//! Shared by the integration tests: GPU skip notices, seeded random inputs, error reports.
#![allow(dead_code)]

use std::io::Write;

use half::bf16;
use nemo_engine::gpu::Gpu;

/// The GPU, or `None` with a visible notice (written past the test harness's capture).
/// With `NEMO_REQUIRE_GPU=1` (set by scripts/gpu-check) a missing GPU is a failure instead.
pub fn gpu_or_skip(test: &str) -> Option<Gpu> {
    match Gpu::new() {
        Ok(gpu) => Some(gpu),
        Err(e) if std::env::var("NEMO_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("{test}: NEMO_REQUIRE_GPU=1 but {e}")
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED (no GPU) {test}: {e}");
            None
        }
    }
}

/// A small seeded generator (splitmix64): tests draw fresh inputs each run and print the seed.
pub struct Rng(u64);

impl Rng {
    /// Seeded from the clock unless `NEMO_TEST_SEED` is set; prints the seed to reproduce.
    pub fn fresh(test: &str) -> Rng {
        let seed = std::env::var("NEMO_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("{test}: NEMO_TEST_SEED={seed}");
        Rng(seed)
    }

    pub fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Approximately normal (sum of uniforms), scaled.
    pub fn normal(&mut self, std: f32) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum::<f32>() - 2.0;
        s * std * 1.732
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bf16_vec(&mut self, n: usize, std: f32) -> Vec<bf16> {
        (0..n).map(|_| bf16::from_f32(self.normal(std))).collect()
    }
}

/// Written into every output before a launch: an element the kernel fails to write stays NaN.
pub const POISON: bf16 = bf16::from_bits(0x7FC1);

pub fn to_f32(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// Fails with max abs / rel error and the first index beyond `atol + rtol * |want|` (NaN fails).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    // The same comparison the kernel lab reports (nemo bench kernels).
    let c = nemo_engine::lab::Check::compare(got, want, atol, rtol);
    let report = format!("{what}: max abs err {:.3e}, max rel err {:.3e} over {} values", c.max_abs, c.max_rel, c.compared);
    if let Some(i) = c.first_bad {
        panic!("{report}; first bad index {i}: got {}, want {}", got[i], want[i]);
    }
    eprintln!("{report}");
}

/// Uploads `host`, or fails the test with the driver's error.
pub fn dev<T: cudarc::driver::DeviceRepr>(gpu: &Gpu, host: &[T]) -> cudarc::driver::CudaSlice<T> {
    nemo_engine::gpu::upload(gpu, host).expect("upload")
}

/// A device buffer of `n` poisoned bf16 values.
pub fn poisoned(gpu: &Gpu, n: usize) -> cudarc::driver::CudaSlice<bf16> {
    dev(gpu, &vec![POISON; n])
}

pub fn fetch(gpu: &Gpu, buf: &cudarc::driver::CudaSlice<bf16>) -> Vec<f32> {
    to_f32(&nemo_engine::gpu::download(gpu, buf).expect("download"))
}

/// Root mean square of `v` (the scale against which bf16 results are judged).
pub fn rms(v: &[f32]) -> f32 {
    (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt() as f32
}

/// Poison for FP8 caches: the e4m3 NaN code, and a NaN scale.
pub const POISON_E4M3: u8 = 0x7f;

/// FP8 rows a kernel wrote (`codes: [n_slots, kv_width]`, `scales: [n_slots, kv_width /
/// head_dim]`) at `slots[t]` against `cpu::fp8::quantize_row_e4m3` of `want[t]` (`[n,
/// kv_width]` f32), per head row. `exact`: codes and scales bit for bit (V: the kernel quantises
/// the same f32 values). Otherwise (K: its rotation in f32 may round differently, e.g. by FMA
/// contraction) scales within 1e-6 relative, and at most 1 % of values (plus one) one e4m3 step
/// from the reference's. Slots not in `slots` must still hold the poison.
pub fn assert_e4m3_rows(what: &str, codes: &[u8], scales: &[f32], slots: &[usize], want: &[f32], head_dim: usize, exact: bool) {
    use nemo_engine::cpu::fp8::{e4m3_to_f32, quantize_row_e4m3};
    let kv_width = want.len() / slots.len();
    let heads = kv_width / head_dim;
    let (mut off_by_a_step, mut worst_scale) = (0usize, 0f32);
    for (t, &slot) in slots.iter().enumerate() {
        for h in 0..heads {
            let row = &want[t * kv_width + h * head_dim..t * kv_width + (h + 1) * head_dim];
            let mut want_codes = vec![0u8; head_dim];
            let want_scale = quantize_row_e4m3(row, &mut want_codes);
            let got_codes = &codes[slot * kv_width + h * head_dim..slot * kv_width + (h + 1) * head_dim];
            let got_scale = scales[slot * heads + h];
            let at = format!("{what}: token {t} (slot {slot}) head {h}");
            if exact {
                assert_eq!(got_scale.to_bits(), want_scale.to_bits(), "{at}: scale {got_scale} != {want_scale}");
                if let Some(i) = (0..head_dim).find(|&i| got_codes[i] != want_codes[i]) {
                    panic!("{at}: first bad index {i}: code {:#04x}, want {:#04x} (value {})", got_codes[i], want_codes[i], row[i]);
                }
                continue;
            }
            let rel = (got_scale - want_scale).abs() / want_scale.abs().max(f32::MIN_POSITIVE);
            worst_scale = worst_scale.max(rel);
            assert!(rel <= 1e-6, "{at}: scale {got_scale} != {want_scale}");
            for i in 0..head_dim {
                if got_codes[i] == want_codes[i] {
                    continue;
                }
                let (g, w) = (e4m3_to_f32(got_codes[i]) * want_scale, e4m3_to_f32(want_codes[i]) * want_scale);
                let step = (w.abs() / 8.0).max(want_scale * 2f32.powi(-9)) * 1.001;
                assert!((g - w).abs() <= step, "{at}: first bad index {i}: {g} (code {:#04x}), want {w} (code {:#04x})", got_codes[i], want_codes[i]);
                off_by_a_step += 1;
            }
        }
    }
    let n = want.len();
    assert!(off_by_a_step <= n / 100 + 1, "{what}: {off_by_a_step} of {n} codes a step off");
    for slot in (0..codes.len() / kv_width).filter(|s| !slots.contains(s)) {
        assert!(codes[slot * kv_width..(slot + 1) * kv_width].iter().all(|&c| c == POISON_E4M3), "{what}: slot {slot} written");
        assert!(scales[slot * heads..(slot + 1) * heads].iter().all(|s| s.is_nan()), "{what}: slot {slot}'s scales written");
    }
    eprintln!("{what}: {n} values, {off_by_a_step} a step off, scales within {worst_scale:.1e}");
}

/// qkv rows for `n` tokens with awkward rows: V of token 1's head 0 all zero (a zero scale), K of
/// token 2's head 0 x300 (past e4m3's 448 before scaling), V of token 3's last head tiny (1e-6).
pub fn awkward_qkv(rng: &mut Rng, n: usize, n_heads: usize, n_kv_heads: usize, head_dim: usize) -> Vec<bf16> {
    let (qd, kvd) = (n_heads * head_dim, n_kv_heads * head_dim);
    let width = qd + 2 * kvd;
    let mut qkv = rng.bf16_vec(n * width, 1.0);
    let mut edit = |t: usize, at: usize, f: &dyn Fn(f32) -> f32| {
        for x in &mut qkv[t * width + at..t * width + at + head_dim] {
            *x = bf16::from_f32(f(x.to_f32()));
        }
    };
    edit(1, qd + kvd, &|_| 0.0);
    edit(2, qd, &|x| x * 300.0);
    edit(3, qd + 2 * kvd - head_dim, &|x| x * 1e-6);
    qkv
}

/// Four prompts of random ids above the special tokens, `base + stride * i` long, each in its
/// own blocks of 16 and wanting its next token: one prefill step for comparing `step_sampled`
/// on the CUDA and CPU backends.
pub struct FourPrompts {
    pub prompts: Vec<Vec<u32>>,
    pub tables: Vec<Vec<u32>>,
}

impl FourPrompts {
    pub fn new(rng: &mut Rng, vocab: usize, base: usize, stride: usize) -> Self {
        let prompts = (0..4).map(|i| (0..base + stride * i).map(|_| 3 + rng.below(vocab - 3) as u32).collect()).collect();
        let tables = (0..4u32).map(|i| vec![2 * i, 2 * i + 1, 8 + i]).collect();
        FourPrompts { prompts, tables }
    }

    pub fn step(&self) -> Vec<nemo_engine::engine::StepEntry<'_>> {
        self.prompts
            .iter()
            .zip(&self.tables)
            .map(|(p, t)| nemo_engine::engine::StepEntry { tokens: p, ctx_len: p.len(), block_table: t, want_logits: true })
            .collect()
    }
}
