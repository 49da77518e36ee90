//! The kernel lab (`nemo bench kernels`): every variant of a kernel run on the same inputs,
//! checked against the CPU reference, timed with CUDA events, and reported beside the peers
//! (cuBLAS, PyTorch SDPA) at the same shapes on the same GPU.
//!
//! A family is a module here with a `VARIANTS` table: adding a variant is one new kernel file
//! (`kernels/*.cu` + its wrapper in `src/gpu/kernels/`) plus one line in that table. Decode
//! attention needs no wrapper: its variants are the kernels of `DECODE_KERNELS`
//! (src/gpu/kernels/decode_table.rs), so a new one is its `.cu` file plus one line there.

pub mod attention;
pub mod attention_e4m3;
pub mod gemm;
pub mod peers;

use cudarc::driver::CudaSlice;
use half::bf16;
use serde::Serialize;

use crate::gpu::{Gpu, GpuResult};

/// The kernel families, with their variants and default shapes (`nemo bench kernels --list`).
pub const FAMILIES: [&str; 3] = ["gemm", "attention_prefill", "attention_decode"];

/// What a family's `--shape` means, for `--list` and error messages.
pub fn shape_syntax(family: &str) -> &'static str {
    match family {
        "gemm" => "MxNxK[:store|:residual|:swiglu], e.g. 4096x28672x5120:swiglu (Nemo's gate/up)",
        "attention_prefill" => "TOKENS (one causal sequence, Nemo's 32 / 8 heads of 128), e.g. 8192",
        "attention_decode" => "BATCHxCONTEXT (one new token per sequence), e.g. 1x32768",
        _ => "",
    }
}

/// The variants of `family` (names as `--variant` takes them).
pub fn variants(family: &str) -> Vec<String> {
    match family {
        "gemm" => gemm::VARIANTS.iter().map(|v| v.0.to_string()).collect(),
        "attention_prefill" => attention::prefill_variants().into_iter().map(|(name, _)| name).chain(attention_e4m3::prefill_variants().into_iter().map(|(name, _)| name)).collect(),
        "attention_decode" => attention::decode_variants().into_iter().chain(attention_e4m3::decode_variants()).map(|(name, _)| name).collect(),
        _ => Vec::new(),
    }
}

/// The shapes a family runs without `--shape`: Nemo's.
pub fn default_shapes(family: &str) -> Vec<&'static str> {
    match family {
        "gemm" => gemm::DEFAULT_SHAPES.to_vec(),
        "attention_prefill" => attention::PREFILL_SHAPES.to_vec(),
        "attention_decode" => attention::DECODE_SHAPES.to_vec(),
        _ => Vec::new(),
    }
}

/// Checks every shape of `family` parses, so a typo fails before any GPU work.
pub fn parse_shapes(family: &str, shapes: &[String]) -> Result<(), String> {
    for s in shapes {
        match family {
            "gemm" => gemm::parse_shape(s).map(|_| ())?,
            "attention_prefill" => attention::parse_prefill(s).map(|_| ())?,
            "attention_decode" => attention::parse_decode(s).map(|_| ())?,
            _ => return Err(format!("unknown kernel family `{family}` (one of {FAMILIES:?})")),
        }
    }
    Ok(())
}

/// One measured row: a variant (or a peer) at one shape.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub family: String,
    pub variant: String,
    pub shape: String,
    pub ms: f64,
    /// TFLOP/s (compute-bound families) or GB/s (memory-bound ones), per `unit`.
    pub rate: f64,
    pub unit: &'static str,
    /// `rate` against the ceiling measured in this run (cuBLAS at the shape, or copy bandwidth).
    pub of_ceiling: Option<f64>,
    /// None for peers (they are the reference, not checked).
    pub check: Option<Check>,
}

/// Error of a variant's output against the CPU reference on sampled rows.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub max_abs: f32,
    pub max_rel: f32,
    /// Index (into the compared values) of the first value outside `atol + rtol * |want|`.
    pub first_bad: Option<usize>,
    pub compared: usize,
    pub passed: bool,
}

impl Check {
    pub fn compare(got: &[f32], want: &[f32], atol: f32, rtol: f32) -> Check {
        let (mut max_abs, mut max_rel, mut first_bad) = (0f32, 0f32, None);
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = (g - w).abs();
            // NaN (e.g. a poisoned value never written) fails the comparison.
            if !(err <= atol + rtol * w.abs()) && first_bad.is_none() {
                first_bad = Some(i);
            }
            if err.is_finite() {
                max_abs = max_abs.max(err);
                max_rel = max_rel.max(err / w.abs().max(1e-6));
            }
        }
        let passed = first_bad.is_none() && got.len() == want.len();
        Check { max_abs, max_rel, first_bad, compared: want.len(), passed }
    }
}

/// The GPU and the ceilings measured once per run.
pub struct Lab {
    pub gpu: Gpu,
    pub copy_gbs: f64,
    pub warmup: usize,
    pub iters: usize,
}

impl Lab {
    pub fn new(gpu: Gpu, iters: usize) -> GpuResult<Lab> {
        let copy_gbs = crate::gpu::timing::copy_bandwidth_gbs(&gpu, 1 << 30)?;
        Ok(Lab { gpu, copy_gbs, warmup: 3, iters: iters.max(1) })
    }
}

/// Runs `variant` (None: all) of `family` at each shape (empty: the defaults) and the family's
/// peers; a variant that fails is reported as a row with no rate, the others still run.
pub fn run(lab: &Lab, family: &str, variant: Option<&str>, shapes: &[String]) -> Result<Vec<Row>, String> {
    let known = variants(family);
    if known.is_empty() {
        return Err(format!("unknown kernel family `{family}` (one of {FAMILIES:?})"));
    }
    if let Some(v) = variant {
        if !known.iter().any(|k| k == v) {
            return Err(format!("`{family}` has no variant `{v}` (one of {known:?})"));
        }
    }
    let shapes: Vec<String> = if shapes.is_empty() { default_shapes(family).iter().map(|s| s.to_string()).collect() } else { shapes.to_vec() };
    parse_shapes(family, &shapes)?;
    let mut rows = Vec::new();
    for shape in &shapes {
        let result = match family {
            "gemm" => gemm::run(lab, variant, shape, &mut rows),
            "attention_prefill" => attention::run_prefill(lab, variant, shape, &mut rows),
            _ => attention::run_decode(lab, variant, shape, &mut rows),
        };
        if let Err(e) = result {
            rows.push(Row {
                family: family.into(),
                variant: format!("(setup failed: {e})"),
                shape: shape.clone(),
                ms: f64::NAN,
                rate: f64::NAN,
                unit: "",
                of_ceiling: None,
                check: None,
            });
        }
    }
    Ok(rows)
}

/// What one variant is checked against: rows `rows` (each `row_len` wide) of its output,
/// compared with `want` within `atol + rtol * |want|`.
pub(crate) struct Expected<'a> {
    pub rows: &'a [usize],
    pub row_len: usize,
    pub want: &'a [f32],
    pub atol: f32,
    pub rtol: f32,
}

/// Runs one variant once into `out` and checks it, then times it; pushes its row, built by
/// `row(label, median ms, check)`. A launch failure becomes a row saying so.
pub(crate) fn check_and_time(
    lab: &Lab,
    name: &str,
    out: &mut CudaSlice<bf16>,
    run: &mut dyn FnMut(&mut CudaSlice<bf16>) -> GpuResult<()>,
    expected: &Expected,
    row: &dyn Fn(String, f64, Option<Check>) -> Row,
    rows: &mut Vec<Row>,
) {
    let checked = run(out).and_then(|_| crate::gpu::download(&lab.gpu, out)).map(|all| {
        let w = expected.row_len;
        let got: Vec<f32> = expected.rows.iter().flat_map(|&r| all[r * w..(r + 1) * w].iter().map(|v| v.to_f32())).collect();
        Check::compare(&got, expected.want, expected.atol, expected.rtol)
    });
    let check = match checked {
        Ok(c) => c,
        Err(e) => return rows.push(row(format!("{name} (failed: {e})"), f64::NAN, None)),
    };
    match crate::gpu::timing::time_ms(&lab.gpu, lab.warmup, lab.iters, |_| run(out)) {
        Ok(t) => rows.push(row(name.to_string(), t.median_ms, Some(check))),
        Err(e) => rows.push(row(format!("{name} (failed: {e})"), f64::NAN, Some(check))),
    }
}

/// Deterministic inputs: uniform in (-scale, scale), a function of (seed, index).
pub(crate) fn random_bf16(n: usize, seed: u64, scale: f32) -> Vec<bf16> {
    use rayon::prelude::*;
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            bf16::from_f32(((z >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale)
        })
        .collect()
}

/// Rows of a `[rows, _]` output that the check compares: the first, the last and a spread
/// between (at most `n`), so tails and tile edges are covered without a full CPU product.
pub(crate) fn sample_rows(rows: usize, n: usize) -> Vec<usize> {
    let mut picked: Vec<usize> = (0..n).map(|i| i * rows.saturating_sub(1) / (n - 1).max(1)).collect();
    picked.push(rows / 2 + 1);
    picked.retain(|&r| r < rows);
    picked.sort_unstable();
    picked.dedup();
    picked
}

/// Poison for outputs: a value never written shows up as a failed check, not as a stale pass.
pub(crate) const POISON: bf16 = bf16::NAN;
