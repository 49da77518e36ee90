//! The reference points measured beside our kernels in the same run: cuBLAS through cudarc, and
//! PyTorch's scaled_dot_product_attention through `python3` (the GPU machines ship PyTorch).

use std::process::Command;

use cudarc::driver::CudaSlice;
use half::bf16;

use crate::gpu::kernels::gemm::GemmShape;
use crate::gpu::timing::time_ms;
use crate::gpu::{upload, Gpu, GpuError};

/// cuBLAS's median time for `C = A . W^T` (bf16 in and out, f32 compute) at `shape`: row-major C
/// is column-major C^T = W . A^T. None when libcublas cannot be loaded.
pub fn cublas_ms(gpu: &Gpu, a: &CudaSlice<bf16>, w: &CudaSlice<bf16>, shape: GemmShape, warmup: usize, iters: usize) -> Option<f64> {
    use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
    use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
    let GemmShape { m, n, k } = shape;
    // SAFETY: only tries to dlopen libcublas.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return None;
    }
    let blas = CudaBlas::new(gpu.stream.clone()).ok()?;
    let mut c = upload(gpu, &vec![bf16::ZERO; m * n]).ok()?;
    let cfg = GemmConfig {
        transa: CUBLAS_OP_T,
        transb: CUBLAS_OP_N,
        m: n as i32,
        n: m as i32,
        k: k as i32,
        alpha: bf16::ONE,
        lda: k as i32,
        ldb: k as i32,
        beta: bf16::ZERO,
        ldc: n as i32,
    };
    let t = time_ms(gpu, warmup, iters, |_| {
        // SAFETY: w is [n, k], a is [m, k] and c is [m, n], as the config says.
        unsafe { blas.gemm(cfg, w, a, &mut c) }.map_err(|e| GpuError::BadArgument { kernel: "cublas", what: e.to_string() })
    })
    .ok()?;
    Some(t.median_ms)
}

/// Times causal GQA attention (32 / 8 heads of 128, bf16) with PyTorch's SDPA; prints TFLOP/s.
const SDPA_SCRIPT: &str = r#"
import sys, torch
import torch.nn.functional as F
t = int(sys.argv[1])
q = torch.randn(1, 32, t, 128, device="cuda", dtype=torch.bfloat16)
k = torch.randn(1, 8, t, 128, device="cuda", dtype=torch.bfloat16)
v = torch.randn(1, 8, t, 128, device="cuda", dtype=torch.bfloat16)
run = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
for _ in range(3):
    run()
times = []
for _ in range(10):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record(); run(); b.record(); torch.cuda.synchronize()
    times.append(a.elapsed_time(b))
ms = sorted(times)[len(times) // 2]
print(4.0 * t * (t + 1) / 2 * 32 * 128 / (ms * 1e-3) / 1e12)
"#;

/// PyTorch SDPA's TFLOP/s for one causal sequence of `tokens`, or why it could not be measured.
pub fn sdpa_tflops(tokens: usize) -> Result<f64, String> {
    let out = Command::new("python3")
        .args(["-c", SDPA_SCRIPT, &tokens.to_string()])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("python3 failed").to_string());
    }
    String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().map_err(|e| format!("unexpected output: {e}"))
}
