//! rope_cos_sin_table_f32 and rope_write_kv_bf16 against cpu::rope, both layouts, positions
//! up to 128k, tokens scattered over a paged cache; rope_write_kv_e4m3 against cpu::fp8 of the
//! same rotation (awkward rows: all zero, past 448, tiny).

use crate::common::*;
use half::bf16;
use nemo_engine::cpu::rope::{rope, rope_cos_sin, rope_inv_freq};
use nemo_engine::gpu::kernels::rope::{rope_cos_sin_table, rope_write_kv, rope_write_kv_e4m3, E4m3KvViews, RopeShape};
use nemo_engine::gpu::download;
use nemo_engine::model::RopeLayout;

const MAX_POS: usize = 131_072;

#[test]
fn rope_table_matches_f64_angles() {
    let Some(gpu) = gpu_or_skip("rope_table_matches_f64_angles") else { return };
    for (head_dim, theta) in [(128, 1e6), (64, 1e5)] {
        let table = rope_cos_sin_table(&gpu, MAX_POS, head_dim, theta).unwrap();
        let got = download(&gpu, &table.cos_sin).unwrap();
        let inv_freq = rope_inv_freq(head_dim, theta);
        for pos in [0, 1, 4095, 77_777, MAX_POS - 1] {
            let want: Vec<f32> = rope_cos_sin(pos, &inv_freq).iter().flat_map(|&(c, s)| [c, s]).collect();
            let row = &got[pos * head_dim..(pos + 1) * head_dim];
            assert_close(&format!("cos/sin hd {head_dim} pos {pos}"), row, &want, 2e-7, 0.0);
        }
    }
}

#[test]
fn rope_write_kv_matches_cpu() {
    let Some(gpu) = gpu_or_skip("rope_write_kv_matches_cpu") else { return };
    let mut rng = Rng::fresh("rope_write_kv");
    // Nemo (32/8 heads of 128), the demo model (9/3 of 64).
    for (n_heads, n_kv_heads, head_dim, theta) in [(32, 8, 128, 1e6), (9, 3, 64, 1e5)] {
        let table = rope_cos_sin_table(&gpu, MAX_POS, head_dim, theta).unwrap();
        for layout in [RopeLayout::Interleaved, RopeLayout::RotateHalf] {
            for n in [1, 37, 1024] {
                let (qd, kvd) = (n_heads * head_dim, n_kv_heads * head_dim);
                let width = qd + 2 * kvd;
                let qkv = rng.bf16_vec(n * width, 1.0);
                let mut positions: Vec<usize> = (0..n).map(|_| rng.below(MAX_POS)).collect();
                positions[0] = MAX_POS - 1;
                let n_slots = 2 * n + 3;
                let mut slots: Vec<usize> = (0..n_slots).collect();
                for i in (1..n_slots).rev() {
                    slots.swap(i, rng.below(i + 1));
                }
                slots.truncate(n);

                let col = |lo: usize, hi: usize| -> Vec<f32> {
                    (0..n).flat_map(|t| qkv[t * width + lo..t * width + hi].iter().map(|x| x.to_f32())).collect()
                };
                let (mut q, mut k, v) = (col(0, qd), col(qd, qd + kvd), col(qd + kvd, width));
                rope(&mut q, head_dim, &positions, theta, layout);
                rope(&mut k, head_dim, &positions, theta, layout);

                let mut qkv_dev = dev(&gpu, &qkv);
                let pos_dev = dev(&gpu, &positions.iter().map(|&p| p as i32).collect::<Vec<_>>());
                let slots_dev = dev(&gpu, &slots.iter().map(|&s| s as i32).collect::<Vec<_>>());
                let mut k_cache = poisoned(&gpu, n_slots * kvd);
                let mut v_cache = poisoned(&gpu, n_slots * kvd);
                let shape = RopeShape { n_heads, n_kv_heads, head_dim, layout };
                rope_write_kv(
                    &gpu, shape, &table, &mut qkv_dev.as_view_mut(), &pos_dev.as_view(), &slots_dev.as_view(),
                    &mut k_cache.as_view_mut(), &mut v_cache.as_view_mut(),
                )
                .unwrap();

                let what = format!("{layout:?} heads {n_heads}/{n_kv_heads}x{head_dim} n {n}");
                let got_qkv = fetch(&gpu, &qkv_dev);
                let got_q: Vec<f32> = (0..n).flat_map(|t| got_qkv[t * width..t * width + qd].to_vec()).collect();
                assert_close(&format!("q {what}"), &got_q, &q, 1e-2, 8e-3);
                let (kc, vc) = (download(&gpu, &k_cache).unwrap(), download(&gpu, &v_cache).unwrap());
                let rows = |c: &[bf16]| -> Vec<f32> {
                    slots.iter().flat_map(|&s| c[s * kvd..(s + 1) * kvd].iter().map(|x| x.to_f32())).collect()
                };
                assert_close(&format!("k cache {what}"), &rows(&kc), &k, 1e-2, 8e-3);
                assert_close(&format!("v cache {what}"), &rows(&vc), &v, 0.0, 0.0);
                // Slots no token maps to stay untouched.
                let untouched = (0..n_slots).filter(|s| !slots.contains(s));
                for s in untouched {
                    assert!(kc[s * kvd..(s + 1) * kvd].iter().all(|x| x.to_bits() == POISON.to_bits()), "slot {s} written");
                }
            }
        }
    }
}

#[test]
fn rope_write_kv_e4m3_matches_cpu() {
    let Some(gpu) = gpu_or_skip("rope_write_kv_e4m3_matches_cpu") else { return };
    let mut rng = Rng::fresh("rope_write_kv_e4m3");
    for (n_heads, n_kv_heads, head_dim, theta) in [(32, 8, 128, 1e6), (9, 3, 64, 1e5)] {
        let table = rope_cos_sin_table(&gpu, MAX_POS, head_dim, theta).unwrap();
        for layout in [RopeLayout::Interleaved, RopeLayout::RotateHalf] {
            for n in [4, 37, 1024] {
                let (qd, kvd) = (n_heads * head_dim, n_kv_heads * head_dim);
                let width = qd + 2 * kvd;
                let qkv = awkward_qkv(&mut rng, n, n_heads, n_kv_heads, head_dim);
                let mut positions: Vec<usize> = (0..n).map(|_| rng.below(MAX_POS)).collect();
                positions[0] = MAX_POS - 1;
                let n_slots = 2 * n + 3;
                let mut slots: Vec<usize> = (0..n_slots).collect();
                for i in (1..n_slots).rev() {
                    slots.swap(i, rng.below(i + 1));
                }
                slots.truncate(n);
                let col = |lo: usize, hi: usize| -> Vec<f32> {
                    (0..n).flat_map(|t| qkv[t * width + lo..t * width + hi].iter().map(|x| x.to_f32())).collect()
                };
                let (mut q, mut k, v) = (col(0, qd), col(qd, qd + kvd), col(qd + kvd, width));
                rope(&mut q, head_dim, &positions, theta, layout);
                rope(&mut k, head_dim, &positions, theta, layout);

                let mut qkv_dev = dev(&gpu, &qkv);
                let pos_dev = dev(&gpu, &positions.iter().map(|&p| p as i32).collect::<Vec<_>>());
                let slots_dev = dev(&gpu, &slots.iter().map(|&s| s as i32).collect::<Vec<_>>());
                let mut k_codes = dev(&gpu, &vec![POISON_E4M3; n_slots * kvd]);
                let mut v_codes = dev(&gpu, &vec![POISON_E4M3; n_slots * kvd]);
                let mut k_scales = dev(&gpu, &vec![f32::NAN; n_slots * n_kv_heads]);
                let mut v_scales = dev(&gpu, &vec![f32::NAN; n_slots * n_kv_heads]);
                let shape = RopeShape { n_heads, n_kv_heads, head_dim, layout };
                let cache = E4m3KvViews {
                    k_codes: &mut k_codes.as_view_mut(),
                    v_codes: &mut v_codes.as_view_mut(),
                    k_scales: &mut k_scales.as_view_mut(),
                    v_scales: &mut v_scales.as_view_mut(),
                };
                rope_write_kv_e4m3(&gpu, shape, &table, &mut qkv_dev.as_view_mut(), &pos_dev.as_view(), &slots_dev.as_view(), cache).unwrap();

                let what = format!("e4m3 {layout:?} heads {n_heads}/{n_kv_heads}x{head_dim} n {n}");
                let got_qkv = fetch(&gpu, &qkv_dev);
                let got_q: Vec<f32> = (0..n).flat_map(|t| got_qkv[t * width..t * width + qd].to_vec()).collect();
                assert_close(&format!("q {what}"), &got_q, &q, 1e-2, 8e-3);
                let get_u8 = |b| download(&gpu, b).unwrap();
                let get_f32 = |b| download(&gpu, b).unwrap();
                assert_e4m3_rows(&format!("k {what}"), &get_u8(&k_codes), &get_f32(&k_scales), &slots, &k, head_dim, false);
                assert_e4m3_rows(&format!("v {what}"), &get_u8(&v_codes), &get_f32(&v_scales), &slots, &v, head_dim, true);
            }
        }
    }
}
