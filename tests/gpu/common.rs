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
