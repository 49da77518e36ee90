//! rmsnorm_bf16 and fused_add_rmsnorm_bf16 against cpu::ops::rmsnorm.

use crate::common::*;
use half::bf16;
use nemo_engine::cpu::ops;
use nemo_engine::gpu::kernels::rmsnorm::{fused_add_rmsnorm, rmsnorm};

const SHAPES: [(usize, usize); 5] = [(1, 5120), (7, 5120), (4099, 5120), (3, 576), (5, 8)];

#[test]
fn rmsnorm_matches_cpu() {
    let Some(gpu) = gpu_or_skip("rmsnorm_matches_cpu") else { return };
    let mut rng = Rng::fresh("rmsnorm");
    for (n, dim) in SHAPES {
        let x = rng.bf16_vec(n * dim, 2.0);
        let w: Vec<bf16> = (0..dim).map(|_| bf16::from_f32(1.0 + rng.normal(0.3))).collect();
        let want = ops::rmsnorm(&to_f32(&x), &w, 1e-5);
        let (x_dev, w_dev) = (dev(&gpu, &x), dev(&gpu, &w));
        let mut out = poisoned(&gpu, n * dim);
        rmsnorm(&gpu, &x_dev.as_view(), &w_dev.as_view(), &mut out.as_view_mut(), dim, 1e-5).unwrap();
        assert_close(&format!("rmsnorm [{n}, {dim}]"), &fetch(&gpu, &out), &want, 1e-3, 8e-3);
    }
}

#[test]
fn fused_add_rmsnorm_matches_cpu() {
    let Some(gpu) = gpu_or_skip("fused_add_rmsnorm_matches_cpu") else { return };
    let mut rng = Rng::fresh("fused_add_rmsnorm");
    for (n, dim) in SHAPES {
        let (res, x) = (rng.bf16_vec(n * dim, 2.0), rng.bf16_vec(n * dim, 1.0));
        let w: Vec<bf16> = (0..dim).map(|_| bf16::from_f32(1.0 + rng.normal(0.3))).collect();
        // The residual stream is stored in bf16: the reference rounds the sum the same way.
        let sum: Vec<f32> =
            res.iter().zip(&x).map(|(a, b)| bf16::from_f32(a.to_f32() + b.to_f32()).to_f32()).collect();
        let want = ops::rmsnorm(&sum, &w, 1e-5);
        let (mut res_dev, x_dev, w_dev) = (dev(&gpu, &res), dev(&gpu, &x), dev(&gpu, &w));
        let mut out = poisoned(&gpu, n * dim);
        fused_add_rmsnorm(&gpu, &mut res_dev.as_view_mut(), &x_dev.as_view(), &w_dev.as_view(), &mut out.as_view_mut(), dim, 1e-5)
            .unwrap();
        assert_close(&format!("fused residual [{n}, {dim}]"), &fetch(&gpu, &res_dev), &sum, 0.0, 0.0);
        assert_close(&format!("fused rmsnorm [{n}, {dim}]"), &fetch(&gpu, &out), &want, 1e-3, 8e-3);
    }
}
