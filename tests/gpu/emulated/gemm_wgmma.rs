//! gemm_wgmma_bf16 on the emulator (TMA, mbarriers and wgmma emulated, kernels/emu/hopper.cpp)
//! against cpu::matmul: every epilogue, both tile orders, shapes that leave partial tiles in M, N
//! and K and more k-steps than pipeline stages (so the ring of barriers wraps).

use super::{addr, load};
use crate::common::*;
use half::bf16;
use nemo_engine::cpu::matmul::matmul;
use nemo_engine::cpu::ops::swiglu;
use nemo_engine::gpu::kernels::gemm::{Epilogue, GemmShape, LinearParams, TILE_GROUP};
use nemo_engine::gpu::kernels::gemm_wgmma::{launch_config, tensor_map_spec, TensorMap, TensorMapSpec, WgmmaParams, BOX_ROWS};
use nemo_engine::gpu::model::interleave_gate_up;

/// A tensor map in the emulator's encoding (kernels/emu/hopper.cpp), from the spec the wrapper
/// hands the driver.
pub fn emu_tensor_map(s: TensorMapSpec) -> TensorMap {
    let mut w = [0u64; 16];
    w[0] = 0x50414d54554d45; // "EMUTMAP"
    w[1] = s.addr;
    w[2] = s.dims[0];
    w[3] = s.dims[1];
    w[4] = s.row_stride_bytes;
    w[5] = s.box_dims[0] as u64;
    w[6] = s.box_dims[1] as u64;
    w[7] = s.swizzle_bytes as u64;
    TensorMap(w)
}

fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

fn run<T>(a: &[bf16], w: &[bf16], out: &mut [T], shape: GemmShape, epilogue: Epilogue, f32_out: bool, tile_group: i32) {
    let out_cols = if f32_out { shape.n } else { epilogue.out_cols(shape.n) };
    assert_eq!(out.len(), shape.m * out_cols);
    let out_addr = out.as_mut_ptr() as u64;
    let p = LinearParams {
        a: addr(a),
        w: addr(w),
        out: out_addr,
        residual: if epilogue == Epilogue::AddInPlace && !f32_out { out_addr } else { 0 },
        m: shape.m as i32,
        n: shape.n as i32,
        k: shape.k as i32,
        lda: shape.k as i32,
        ldo: out_cols as i32,
        epilogue: if f32_out { Epilogue::F32_CODE } else { epilogue.code() },
        tile_group,
        k_splits: 1,
    };
    let a_map = emu_tensor_map(tensor_map_spec(p.a, shape.m, shape.k, BOX_ROWS.0));
    let w_map = emu_tensor_map(tensor_map_spec(p.w, shape.n, shape.k, BOX_ROWS.1));
    let params = WgmmaParams::new(&p, a_map, w_map);
    load("gemm_wgmma").launch("gemm_wgmma_bf16", launch_config(shape).unwrap(), params).unwrap();
}

#[test]
fn emulated_gemm_wgmma_matches_cpu_for_every_epilogue_and_tile_order() {
    let mut rng = Rng::fresh("emulated_gemm_wgmma");
    // (M, N, K, tile group): one tile with K < one k-step; partial tiles in M and N with K past
    // the 4-stage ring (K = 328: 6 k-steps, the last partial); two M-tiles x two N-tiles in the
    // old order.
    for (m, n, k, group) in [(1, 16, 8, TILE_GROUP), (130, 272, 328, TILE_GROUP), (200, 264, 72, 1)] {
        let shape = GemmShape { m, n, k };
        let what = format!("emulated gemm_wgmma M {m} N {n} K {k} tile group {group}");
        let a = rng.bf16_vec(m * k, 1.0);
        let w = rng.bf16_vec(n * k, 1.0 / (k as f32).sqrt());
        let want = matmul(&to_f32(&a), &w, k);
        let tol = 2e-2 * rms(&want);

        let mut out = vec![POISON; m * n];
        run(&a, &w, &mut out, shape, Epilogue::Store, false, group);
        assert_close(&format!("{what} store"), &to_f32(&out), &want, tol, 8e-3);

        let mut out32 = vec![f32::NAN; m * n];
        run(&a, &w, &mut out32, shape, Epilogue::Store, true, group);
        assert_close(&format!("{what} f32"), &out32, &want, 1e-3 * rms(&want), 1e-3);

        let mut res = rng.bf16_vec(m * n, 1.0);
        let want_res: Vec<f32> = res.iter().zip(round_bf16(&want)).map(|(r, a)| r.to_f32() + a).collect();
        run(&a, &w, &mut res, shape, Epilogue::AddInPlace, false, group);
        assert_close(&format!("{what} residual"), &to_f32(&res), &want_res, tol, 8e-3);

        let up = rng.bf16_vec(n * k, 1.0 / (k as f32).sqrt());
        let want_swiglu = swiglu(&round_bf16(&want), &round_bf16(&matmul(&to_f32(&a), &up, k)));
        let fused = interleave_gate_up(&w, &up, k);
        let mut out = vec![POISON; m * n];
        run(&a, &fused, &mut out, GemmShape { m, n: 2 * n, k }, Epilogue::SwiGlu, false, group);
        assert_close(&format!("{what} swiglu"), &to_f32(&out), &want_swiglu, 2e-2 * rms(&want_swiglu), 1e-2);
    }
}
