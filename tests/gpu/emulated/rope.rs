//! rope_cos_sin_table_f32 and rope_write_kv_bf16 on the emulator against cpu::rope: the table
//! in double precision, both layouts, Nemo's and the demo model's heads, positions up to 128k,
//! tokens scattered over cache slots (slots no token maps to stay poisoned); rope_write_kv_e4m3
//! against cpu::fp8 on the same rotation.

use super::{addr, load, PrimaryOutputs};
use crate::common::*;
use cudarc::driver::LaunchConfig;
use half::bf16;
use nemo_engine::cpu::rope::{rope, rope_cos_sin, rope_inv_freq};
use nemo_engine::gpu::kernels::rope::{RopeDims, RopeKvE4m3Params, RopeKvParams, RopeShape};
use nemo_engine::model::RopeLayout;

const MAX_POS: usize = 131_072;

/// The cos/sin table as the kernel builds it: [MAX_POS, head_dim / 2] (cos, sin) pairs.
fn table(head_dim: usize, theta: f64) -> Vec<f32> {
    let mut cos_sin = vec![f32::NAN; MAX_POS * head_dim];
    let out = cos_sin.as_mut_ptr() as u64;
    let cfg = LaunchConfig { grid_dim: (64, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    type Table = unsafe extern "C" fn(u64, i32, i32, f64);
    // SAFETY: cos_sin holds MAX_POS * head_dim floats and outlives the launch.
    load("rope")
        .launch_args("rope_cos_sin_table_f32", cfg, |k: Table| unsafe { k(out, MAX_POS as i32, head_dim as i32, theta) })
        .unwrap();
    cos_sin
}

#[test]
fn emulated_rope_write_kv_matches_cpu() {
    let mut rng = Rng::fresh("emulated_rope_write_kv");
    for (n_heads, n_kv_heads, head_dim, theta) in [(32, 8, 128, 1e6), (9, 3, 64, 1e5)] {
        let cos_sin = table(head_dim, theta);
        let inv_freq = rope_inv_freq(head_dim, theta);
        for pos in [0, 4095, MAX_POS - 1] {
            let want: Vec<f32> = rope_cos_sin(pos, &inv_freq).iter().flat_map(|&(c, s)| [c, s]).collect();
            assert_close(&format!("emulated cos/sin hd {head_dim} pos {pos}"), &cos_sin[pos * head_dim..(pos + 1) * head_dim], &want, 2e-7, 0.0);
        }
        // `dependent`: launched behind the QKV GEMV (NEMO_PDL=1), qkv poison until its wait.
        let cases = [(RopeLayout::Interleaved, false), (RopeLayout::RotateHalf, false), (RopeLayout::RotateHalf, true)];
        for (layout, dependent) in cases {
            let n = 5;
            let (qd, kvd) = (n_heads * head_dim, n_kv_heads * head_dim);
            let width = qd + 2 * kvd;
            let mut qkv = rng.bf16_vec(n * width, 1.0);
            let mut positions: Vec<i32> = (0..n).map(|_| rng.below(MAX_POS) as i32).collect();
            positions[0] = MAX_POS as i32 - 1;
            let n_slots = 2 * n + 3;
            let slots: Vec<i32> = vec![7, 0, 12, 3, 9];
            let col = |lo: usize, hi: usize| -> Vec<f32> {
                (0..n).flat_map(|t| qkv[t * width + lo..t * width + hi].iter().map(|x| x.to_f32())).collect()
            };
            let (mut q, mut k, v) = (col(0, qd), col(qd, qd + kvd), col(qd + kvd, width));
            let pos_usize: Vec<usize> = positions.iter().map(|&p| p as usize).collect();
            rope(&mut q, head_dim, &pos_usize, theta, layout);
            rope(&mut k, head_dim, &pos_usize, theta, layout);

            let mut k_cache = vec![POISON; n_slots * kvd];
            let mut v_cache = vec![POISON; n_slots * kvd];
            let p = RopeKvParams {
                qkv: qkv.as_mut_ptr() as u64,
                k_cache: k_cache.as_mut_ptr() as u64,
                v_cache: v_cache.as_mut_ptr() as u64,
                cos_sin: addr(&cos_sin),
                positions: addr(&positions),
                slots: addr(&slots),
                d: RopeDims::new("emulated", RopeShape { n_heads, n_kv_heads, head_dim, layout }, MAX_POS, n_slots).unwrap(),
            };
            let cfg = LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            let gemv_output = PrimaryOutputs::of(&[&qkv[..]]);
            // SAFETY: the parameter block's buffers are live host buffers of the kernel's sizes.
            load("rope")
                .launch_args_after("rope_write_kv_bf16", cfg, dependent.then_some(&gemv_output), |k: unsafe extern "C" fn(RopeKvParams)| unsafe { k(p) })
                .unwrap();
            drop(gemv_output);

            let what = format!("emulated {layout:?} heads {n_heads}/{n_kv_heads}x{head_dim} (dependent launch: {dependent})");
            let got_q: Vec<f32> = (0..n).flat_map(|t| to_f32(&qkv[t * width..t * width + qd])).collect();
            assert_close(&format!("q {what}"), &got_q, &q, 1e-2, 8e-3);
            let rows = |c: &[bf16]| -> Vec<f32> { slots.iter().flat_map(|&s| to_f32(&c[s as usize * kvd..(s as usize + 1) * kvd])).collect() };
            assert_close(&format!("k cache {what}"), &rows(&k_cache), &k, 1e-2, 8e-3);
            assert_close(&format!("v cache {what}"), &rows(&v_cache), &v, 0.0, 0.0);
            for s in (0..n_slots as i32).filter(|s| !slots.contains(s)) {
                let row = &k_cache[s as usize * kvd..(s as usize + 1) * kvd];
                assert!(row.iter().all(|x| x.to_bits() == POISON.to_bits()), "slot {s} written");
            }
        }
    }
}

#[test]
fn emulated_rope_write_kv_e4m3_matches_cpu() {
    let mut rng = Rng::fresh("emulated_rope_write_kv_e4m3");
    for (n_heads, n_kv_heads, head_dim, theta) in [(32, 8, 128, 1e6), (9, 3, 64, 1e5)] {
        let cos_sin = table(head_dim, theta);
        let cases = [(RopeLayout::Interleaved, false), (RopeLayout::RotateHalf, false), (RopeLayout::RotateHalf, true)];
        for (layout, dependent) in cases {
            let n = 5;
            let (qd, kvd) = (n_heads * head_dim, n_kv_heads * head_dim);
            let width = qd + 2 * kvd;
            let mut qkv = awkward_qkv(&mut rng, n, n_heads, n_kv_heads, head_dim);
            let mut positions: Vec<i32> = (0..n).map(|_| rng.below(MAX_POS) as i32).collect();
            positions[0] = MAX_POS as i32 - 1;
            let n_slots = 2 * n + 3;
            let slots: Vec<usize> = vec![7, 0, 12, 3, 9];
            let slots_i32: Vec<i32> = slots.iter().map(|&s| s as i32).collect();
            let col = |lo: usize, hi: usize| -> Vec<f32> {
                (0..n).flat_map(|t| qkv[t * width + lo..t * width + hi].iter().map(|x| x.to_f32())).collect()
            };
            let (mut q, mut k, v) = (col(0, qd), col(qd, qd + kvd), col(qd + kvd, width));
            let pos_usize: Vec<usize> = positions.iter().map(|&p| p as usize).collect();
            rope(&mut q, head_dim, &pos_usize, theta, layout);
            rope(&mut k, head_dim, &pos_usize, theta, layout);

            let mut k_codes = vec![POISON_E4M3; n_slots * kvd];
            let mut v_codes = vec![POISON_E4M3; n_slots * kvd];
            let mut k_scales = vec![f32::NAN; n_slots * n_kv_heads];
            let mut v_scales = vec![f32::NAN; n_slots * n_kv_heads];
            let p = RopeKvE4m3Params {
                qkv: qkv.as_mut_ptr() as u64,
                k_codes: k_codes.as_mut_ptr() as u64,
                v_codes: v_codes.as_mut_ptr() as u64,
                k_scales: k_scales.as_mut_ptr() as u64,
                v_scales: v_scales.as_mut_ptr() as u64,
                cos_sin: addr(&cos_sin),
                positions: addr(&positions),
                slots: addr(&slots_i32),
                d: RopeDims::new("emulated", RopeShape { n_heads, n_kv_heads, head_dim, layout }, MAX_POS, n_slots).unwrap(),
            };
            let cfg = LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            let gemv_output = PrimaryOutputs::of(&[&qkv[..]]);
            // SAFETY: the parameter block's buffers are live host buffers of the kernel's sizes.
            load("rope")
                .launch_args_after("rope_write_kv_e4m3", cfg, dependent.then_some(&gemv_output), |k: unsafe extern "C" fn(RopeKvE4m3Params)| unsafe { k(p) })
                .unwrap();
            drop(gemv_output);

            let what = format!("emulated e4m3 {layout:?} heads {n_heads}/{n_kv_heads}x{head_dim} (dependent launch: {dependent})");
            let got_q: Vec<f32> = (0..n).flat_map(|t| to_f32(&qkv[t * width..t * width + qd])).collect();
            assert_close(&format!("q {what}"), &got_q, &q, 1e-2, 8e-3);
            assert_e4m3_rows(&format!("k {what}"), &k_codes, &k_scales, &slots, &k, head_dim, false);
            assert_e4m3_rows(&format!("v {what}"), &v_codes, &v_scales, &slots, &v, head_dim, true);
        }
    }
}
