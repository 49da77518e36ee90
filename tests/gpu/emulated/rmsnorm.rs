//! rmsnorm_bf16 and fused_add_rmsnorm_bf16 on the emulator against cpu::ops::rmsnorm: one block
//! per token, block-wide sums through shared memory, rows wider than the 512 threads (Nemo's 5120)
//! and narrower than a warp's 8-element chunks (8).

use super::{addr, load, PrimaryOutputs};
use crate::common::*;
use half::bf16;
use nemo_engine::cpu::ops;
use nemo_engine::gpu::kernels::rmsnorm::launch_config;

type Rmsnorm = unsafe extern "C" fn(u64, u64, u64, i32, f32);
type FusedAddRmsnorm = unsafe extern "C" fn(u64, u64, u64, u64, i32, f32);

#[test]
fn emulated_rmsnorm_and_fused_add_rmsnorm_match_cpu() {
    let mut rng = Rng::fresh("emulated_rmsnorm");
    let emu = load("rmsnorm");
    for (n, dim) in [(1, 5120), (3, 576), (5, 8), (2, 4104)] {
        let x = rng.bf16_vec(n * dim, 2.0);
        let w: Vec<bf16> = (0..dim).map(|_| bf16::from_f32(1.0 + rng.normal(0.3))).collect();
        let cfg = launch_config("rmsnorm_bf16", n, dim).unwrap();
        let mut out = vec![POISON; n * dim];
        let out_addr = out.as_mut_ptr() as u64;
        // SAFETY (both launches): the buffers hold n * dim (w: dim) elements and outlive the call.
        emu.launch_args("rmsnorm_bf16", cfg, |k: Rmsnorm| unsafe { k(addr(&x), addr(&w), out_addr, dim as i32, 1e-5) })
            .unwrap();
        assert_close(&format!("emulated rmsnorm [{n}, {dim}]"), &to_f32(&out), &ops::rmsnorm(&to_f32(&x), &w, 1e-5), 1e-3, 8e-3);
        // Behind the GEMV that wrote x (NEMO_PDL=1): x is poison until the kernel's wait.
        let mut out = vec![POISON; n * dim];
        let out_addr = out.as_mut_ptr() as u64;
        let gemv_output = PrimaryOutputs::of(&[&x[..]]);
        emu.launch_args_after("rmsnorm_bf16", cfg, Some(&gemv_output), |k: Rmsnorm| unsafe { k(addr(&x), addr(&w), out_addr, dim as i32, 1e-5) })
            .unwrap();
        drop(gemv_output);
        assert_close(&format!("emulated rmsnorm [{n}, {dim}], dependent launch"), &to_f32(&out), &ops::rmsnorm(&to_f32(&x), &w, 1e-5), 1e-3, 8e-3);

        let mut res = rng.bf16_vec(n * dim, 2.0);
        let sum: Vec<f32> = res.iter().zip(&x).map(|(a, b)| bf16::from_f32(a.to_f32() + b.to_f32()).to_f32()).collect();
        let res_addr = res.as_mut_ptr() as u64;
        let mut out = vec![POISON; n * dim];
        let out_addr = out.as_mut_ptr() as u64;
        emu.launch_args("fused_add_rmsnorm_bf16", cfg, |k: FusedAddRmsnorm| unsafe {
            k(res_addr, addr(&x), addr(&w), out_addr, dim as i32, 1e-5)
        })
        .unwrap();
        assert_close(&format!("emulated fused residual [{n}, {dim}]"), &to_f32(&res), &sum, 0.0, 0.0);
        assert_close(&format!("emulated fused rmsnorm [{n}, {dim}]"), &to_f32(&out), &ops::rmsnorm(&sum, &w, 1e-5), 1e-3, 8e-3);
    }
}
