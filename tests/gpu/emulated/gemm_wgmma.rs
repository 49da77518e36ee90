//! gemm_wgmma_bf16 on the emulator (TMA, mbarriers and wgmma emulated, kernels/emu/hopper.cpp)
//! against cpu::matmul: every epilogue, both tile orders, shapes that leave partial tiles in M, N
//! and K and more k-steps than pipeline stages (so the ring of barriers wraps); split over K.

use super::gemm::{check_every_epilogue, Linear};
use super::load;
use crate::common::*;
use nemo_engine::gpu::kernels::gemm::{GemmShape, LinearParams, TILE_GROUP};
use nemo_engine::gpu::kernels::gemm_wgmma::{split_launch_config, tensor_map_spec, TensorMap, TensorMapSpec, WgmmaParams, BOX_ROWS};

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

/// gemm_wgmma_bf16 with the parameters `p` over host buffers (`k_splits` blocks per tile), with
/// tensor maps in the emulator's encoding.
pub fn run_wgmma(p: LinearParams, shape: GemmShape, k_splits: usize) {
    let a_map = emu_tensor_map(tensor_map_spec(p.a, shape.m, shape.k, BOX_ROWS.0));
    let w_map = emu_tensor_map(tensor_map_spec(p.w, shape.n, shape.k, BOX_ROWS.1));
    let params = WgmmaParams::new(&p, a_map, w_map);
    load("gemm_wgmma").launch("gemm_wgmma_bf16", split_launch_config(shape, k_splits).unwrap(), params).unwrap();
}

#[test]
fn emulated_gemm_wgmma_matches_cpu_for_every_epilogue_and_tile_order() {
    let mut rng = Rng::fresh("emulated_gemm_wgmma");
    // (M, N, K, tile group): one tile with K < one k-step; partial tiles in M and N with K past
    // the 4-stage ring (K = 328: 6 k-steps, the last partial); two M-tiles x two N-tiles in the
    // old order.
    for (m, n, k, group) in [(1, 16, 8, TILE_GROUP), (130, 272, 328, TILE_GROUP), (200, 264, 72, 1)] {
        check_every_epilogue(&mut rng, m, n, k, Linear::Wgmma { group, splits: 1 });
    }
}

/// Split-K on wgmma: K = 328 over 4 splits (2, 2, 2 k-steps and an empty range that stores
/// zeros), 3 splits of a partial tile in M and N, the partials summed by gemm.cu's reduce kernel
/// through every epilogue.
#[test]
fn emulated_gemm_wgmma_split_k_matches_cpu_for_every_epilogue() {
    let mut rng = Rng::fresh("emulated_gemm_wgmma_split_k");
    for (m, n, k, splits) in [(9, 264, 328, 4), (130, 272, 200, 3)] {
        check_every_epilogue(&mut rng, m, n, k, Linear::Wgmma { group: TILE_GROUP, splits });
    }
}
