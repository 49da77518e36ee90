//! embedding_gather_bf16 against cpu::ops::embedding.

use crate::common::*;
use nemo_engine::cpu::ops;
use nemo_engine::gpu::kernels::embedding::embedding_gather;

#[test]
fn embedding_gather_matches_cpu() {
    let Some(gpu) = gpu_or_skip("embedding_gather_matches_cpu") else { return };
    let mut rng = Rng::fresh("embedding");
    // Nemo's (vocab 131072, dim 5120), the demo model's dim 576, and an awkward one.
    for (vocab, dim, n) in [(131_072, 5120, 7), (49_152, 576, 300), (1000, 8, 1)] {
        let table = rng.bf16_vec(vocab * dim, 1.0);
        let mut ids: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
        ids[0] = vocab as u32 - 1; // the last row
        let want = ops::embedding(&table, dim, &ids);
        let ids_dev = dev(&gpu, &ids.iter().map(|&i| i as i32).collect::<Vec<_>>());
        let table_dev = dev(&gpu, &table);
        let mut out = poisoned(&gpu, n * dim);
        embedding_gather(&gpu, &ids_dev.as_view(), &table_dev.as_view(), &mut out.as_view_mut(), vocab, dim).unwrap();
        assert_close(&format!("embedding vocab {vocab} dim {dim}"), &fetch(&gpu, &out), &want, 0.0, 0.0);
    }
}

#[test]
fn embedding_gather_refuses_bad_shapes() {
    let Some(gpu) = gpu_or_skip("embedding_gather_refuses_bad_shapes") else { return };
    let ids = dev(&gpu, &[0i32, 1]);
    let table = dev(&gpu, &vec![half::bf16::ZERO; 10 * 12]);
    let mut out = poisoned(&gpu, 2 * 12);
    // dim 12 is not a multiple of 8
    assert!(embedding_gather(&gpu, &ids.as_view(), &table.as_view(), &mut out.as_view_mut(), 10, 12).is_err());
}
