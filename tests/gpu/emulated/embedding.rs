//! embedding_gather_bf16 on the emulator: rows copied whole with 16-byte accesses, rows wider
//! than the block (Nemo's 5120 = 640 chunks over 256 threads) and narrower than a warp (8).

use super::{addr, load};
use crate::common::*;
use half::bf16;
use nemo_engine::gpu::kernels::embedding::launch_config;

type Gather = unsafe extern "C" fn(u64, u64, u64, i32, i32);

#[test]
fn emulated_embedding_gather_copies_the_rows() {
    let mut rng = Rng::fresh("emulated_embedding");
    let emu = load("embedding");
    for (vocab, dim, ids) in [(7, 5120, vec![6, 0, 6, 3]), (3, 8, vec![2]), (50, 136, vec![49, 1, 0, 17, 17])] {
        let table = rng.bf16_vec(vocab * dim, 1.0);
        let ids: Vec<i32> = ids;
        let mut out = vec![POISON; ids.len() * dim];
        let out_addr = out.as_mut_ptr() as u64;
        // SAFETY: table holds vocab * dim, out ids.len() * dim elements; every id is in range.
        emu.launch_args("embedding_gather_bf16", launch_config(ids.len(), dim), |k: Gather| unsafe {
            k(addr(&ids), addr(&table), out_addr, dim as i32, vocab as i32)
        })
        .unwrap();
        let want: Vec<bf16> = ids.iter().flat_map(|&id| table[id as usize * dim..][..dim].iter().copied()).collect();
        assert_close(&format!("emulated embedding vocab {vocab} dim {dim}"), &to_f32(&out), &to_f32(&want), 0.0, 0.0);
    }
}
