//! The host side of a step: what `CudaModel` uploads before launching the kernels. Per token its
//! id, position and KV slot; per sequence the attention metadata; the rows whose logits are
//! wanted. Pure, so it is tested and timed (benches/engine_host.rs) without a GPU.

use super::forward::SeqChunk;
use crate::gpu::kernels::attention::AttentionMeta;

#[derive(Debug, Default)]
pub struct StepLayout {
    /// Rows of `block_tables` as wide as the step's longest sequence needs.
    pub meta: AttentionMeta,
    pub ids: Vec<i32>,
    pub positions: Vec<i32>,
    /// Position p of a sequence lives in slot `block_table[p / block_size] * block_size + p % block_size`.
    pub slots: Vec<i32>,
    /// Token rows whose logits are wanted (each wanting sequence's last), increasing.
    pub logit_rows: Vec<i32>,
}

/// Lays out `seqs` for a cache of `block_size`-slot blocks, each sequence at most `capacity`
/// tokens long. Errs naming the first sequence whose lengths or block table do not add up; the
/// block ids themselves are checked against the cache by `AttentionMeta::upload` / `refill`.
pub fn step_layout(seqs: &[SeqChunk<'_>], block_size: usize, capacity: usize) -> Result<StepLayout, String> {
    let max_blocks = seqs.iter().map(|s| s.ctx_len.div_ceil(block_size)).max().unwrap_or(1).max(1);
    let n_tokens: usize = seqs.iter().map(|s| s.ids.len()).sum();
    let mut out = StepLayout {
        meta: AttentionMeta {
            cu_seqlens_q: Vec::with_capacity(seqs.len() + 1),
            ctx_lens: Vec::with_capacity(seqs.len()),
            block_tables: Vec::with_capacity(seqs.len() * max_blocks),
            max_blocks,
            block_size,
        },
        ids: Vec::with_capacity(n_tokens),
        positions: Vec::with_capacity(n_tokens),
        slots: Vec::with_capacity(n_tokens),
        logit_rows: Vec::new(),
    };
    out.meta.cu_seqlens_q.push(0);
    for (i, s) in seqs.iter().enumerate() {
        let q_len = s.ids.len();
        if q_len == 0 || s.ctx_len < q_len || s.ctx_len > capacity {
            return Err(format!("sequence {i}: {q_len} new tokens for a context of {} (capacity {capacity})", s.ctx_len));
        }
        let blocks = s.ctx_len.div_ceil(block_size);
        if s.block_table.len() < blocks {
            return Err(format!("sequence {i}: {} blocks for a context of {}", s.block_table.len(), s.ctx_len));
        }
        let row_start = out.meta.block_tables.len();
        out.meta.block_tables.extend(s.block_table[..blocks].iter().map(|&b| b as i32));
        out.meta.block_tables.resize(row_start + max_blocks, 0);
        let row = &out.meta.block_tables[row_start..row_start + blocks];
        out.meta.ctx_lens.push(s.ctx_len as i32);
        for p in s.ctx_len - q_len..s.ctx_len {
            out.positions.push(p as i32);
            out.slots.push(row[p / block_size] * block_size as i32 + (p % block_size) as i32);
        }
        out.ids.extend_from_slice(s.ids);
        out.meta.cu_seqlens_q.push(out.ids.len() as i32);
        if s.want_logits {
            out.logit_rows.push(out.ids.len() as i32 - 1);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_slots_through_each_sequences_blocks() {
        // a: a 3-token chunk after 14 cached tokens (positions 14..17, crossing into its second
        // block); b: one decode token at position 4, wanting no logits; c: a fresh 1-token prompt.
        let seqs = [
            SeqChunk { ids: &[7, 8, 9], ctx_len: 17, block_table: &[5, 2, 99], want_logits: true },
            SeqChunk { ids: &[3], ctx_len: 5, block_table: &[4], want_logits: false },
            SeqChunk { ids: &[1], ctx_len: 1, block_table: &[0], want_logits: true },
        ];
        let l = step_layout(&seqs, 16, 64).unwrap();
        assert_eq!(l.ids, [7, 8, 9, 3, 1]);
        assert_eq!(l.positions, [14, 15, 16, 4, 0]);
        assert_eq!(l.slots, [5 * 16 + 14, 5 * 16 + 15, 2 * 16, 4 * 16 + 4, 0]);
        assert_eq!(l.logit_rows, [2, 4]);
        assert_eq!(l.meta.cu_seqlens_q, [0, 3, 4, 5]);
        assert_eq!(l.meta.ctx_lens, [17, 5, 1]);
        // Rows as wide as the longest context needs (2 blocks): a's third entry is not copied.
        assert_eq!(l.meta.max_blocks, 2);
        assert_eq!(l.meta.block_tables, [5, 2, 4, 0, 0, 0]);
        assert!(l.meta.validate(100).is_ok());
    }

    #[test]
    fn inconsistent_sequences_are_refused_by_index() {
        let ok = SeqChunk { ids: &[1], ctx_len: 20, block_table: &[0, 1], want_logits: true };
        let cases = [
            (SeqChunk { ids: &[], ..ok }, "sequence 1: 0 new tokens"),
            (SeqChunk { ids: &[1, 2], ctx_len: 1, ..ok }, "2 new tokens for a context of 1"),
            (SeqChunk { ctx_len: 65, block_table: &[0, 1, 2, 3, 4], ..ok }, "capacity 64"),
            (SeqChunk { ctx_len: 33, ..ok }, "2 blocks for a context of 33"),
        ];
        for (bad, want) in cases {
            let err = step_layout(&[ok, bad], 16, 64).unwrap_err();
            assert!(err.contains(want), "{err:?} should say {want:?}");
        }
    }
}
