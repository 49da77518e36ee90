//! The checks every [`BatchBackend`](super::BatchBackend) makes on a step before touching its
//! cache, so that a malformed batch (a scheduler bug, or a caller driving the backend directly)
//! is a typed error naming the entry, never a corrupted cache or an out-of-bounds write.

use super::StepEntry;
use crate::model::ModelConfig;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch entry {entry} has no tokens")]
    NoTokens { entry: usize },
    #[error("batch entry {entry}: ctx_len {ctx_len} is shorter than its {tokens} new tokens")]
    CtxShorterThanTokens { entry: usize, ctx_len: usize, tokens: usize },
    #[error("batch entry {entry}: ctx_len {ctx_len} exceeds the {max}-token context")]
    ContextFull { entry: usize, ctx_len: usize, max: usize },
    #[error("batch entry {entry}: token {token} at index {index} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange { entry: usize, index: usize, token: u32, vocab_size: usize },
    #[error(
        "batch entry {entry}: {blocks} blocks of {block_size} cannot hold its {ctx_len} positions"
    )]
    BlockTableTooShort { entry: usize, blocks: usize, block_size: usize, ctx_len: usize },
    #[error("batch entry {entry}: block {block} is outside the cache's {num_blocks} blocks")]
    BlockOutOfRange { entry: usize, block: u32, num_blocks: usize },
    #[error("batch entry {entry} lists block {block} twice in its block table")]
    RepeatedBlock { entry: usize, block: u32 },
    #[error("block {block} is written by batch entry {writer} and also used by entry {other}")]
    SharedWrittenBlock { block: u32, writer: usize, other: usize },
    #[error(
        "block {block} is read by batch entry {reader} as its block {index}, but entry {writer} does not fill \
         that block whole in this step"
    )]
    ReadUnfilledBlock { block: u32, writer: usize, reader: usize, index: usize },
    #[error(
        "block {block} is written by batch entry {writer} and read by entry {reader} in a step of single tokens \
         (such a step may write K/V inside its attention kernel)"
    )]
    ReadInSingleTokenStep { block: u32, writer: usize, reader: usize },
    #[error("the step carries {tokens} tokens, more than the backend's limit of {max}")]
    TooManyTokens { tokens: usize, max: usize },
}

/// The cache geometry a batch is checked against.
#[derive(Clone, Copy, Debug)]
pub struct CacheShape {
    pub block_size: usize,
    pub num_blocks: usize,
    pub max_step_tokens: usize,
}

/// Checks every entry of `batch`. Costs O(total tokens + total block-table length) with one
/// scratch array of `num_blocks`: small next to any forward pass.
pub fn check_batch(config: &ModelConfig, shape: CacheShape, batch: &[StepEntry<'_>]) -> Result<(), BatchError> {
    let total: usize = batch.iter().map(|e| e.tokens.len()).sum();
    if total > shape.max_step_tokens {
        return Err(BatchError::TooManyTokens { tokens: total, max: shape.max_step_tokens });
    }
    for (entry, e) in batch.iter().enumerate() {
        check_entry(config, shape, entry, e)?;
    }
    check_no_shared_written_block(shape, batch)
}

fn check_entry(config: &ModelConfig, shape: CacheShape, entry: usize, e: &StepEntry<'_>) -> Result<(), BatchError> {
    if e.tokens.is_empty() {
        return Err(BatchError::NoTokens { entry });
    }
    if e.ctx_len < e.tokens.len() {
        return Err(BatchError::CtxShorterThanTokens { entry, ctx_len: e.ctx_len, tokens: e.tokens.len() });
    }
    if e.ctx_len > config.max_context {
        return Err(BatchError::ContextFull { entry, ctx_len: e.ctx_len, max: config.max_context });
    }
    if let Some((index, &token)) = e.tokens.iter().enumerate().find(|(_, &t)| t as usize >= config.vocab_size) {
        return Err(BatchError::TokenOutOfRange { entry, index, token, vocab_size: config.vocab_size });
    }
    let used = e.ctx_len.div_ceil(shape.block_size);
    if e.block_table.len() < used {
        return Err(BatchError::BlockTableTooShort {
            entry,
            blocks: e.block_table.len(),
            block_size: shape.block_size,
            ctx_len: e.ctx_len,
        });
    }
    if let Some(&block) = e.block_table[..used].iter().find(|&&b| b as usize >= shape.num_blocks) {
        return Err(BatchError::BlockOutOfRange { entry, block, num_blocks: shape.num_blocks });
    }
    Ok(())
}

/// The blocks an entry writes: those holding its new positions `ctx_len - n .. ctx_len`.
fn written_blocks<'a>(e: &StepEntry<'a>, block_size: usize) -> &'a [u32] {
    let first = (e.ctx_len - e.tokens.len()) / block_size;
    &e.block_table[first..e.ctx_len.div_ceil(block_size)]
}

/// No two entries write one block, and no entry lists a block twice. An entry may read a block
/// another entry writes in the same step (prefix caching shares a block as the step completes
/// it) only when the writer fills that block whole at the same position in its table, and some
/// entry of the step has more than one token: backends write every entry's K/V of a layer before
/// any attention of that layer reads the cache, except that a step of single tokens may write
/// them inside its attention kernel (the CUDA backend does), where another entry's read races.
fn check_no_shared_written_block(shape: CacheShape, batch: &[StepEntry<'_>]) -> Result<(), BatchError> {
    const NONE: u32 = u32::MAX;
    // `[num_blocks]`: the entry writing each block and the block's index in that entry's table.
    let mut writer = vec![(NONE, 0u32); shape.num_blocks];
    for (entry, e) in batch.iter().enumerate() {
        let first = (e.ctx_len - e.tokens.len()) / shape.block_size;
        for (index, &b) in written_blocks(e, shape.block_size).iter().enumerate() {
            match writer[b as usize].0 {
                NONE => writer[b as usize] = (entry as u32, (first + index) as u32),
                w if w as usize == entry => return Err(BatchError::RepeatedBlock { entry, block: b }),
                w => return Err(BatchError::SharedWrittenBlock { block: b, writer: w as usize, other: entry }),
            }
        }
    }
    let multi_token = batch.iter().any(|e| e.tokens.len() > 1);
    // Reads: `seen` marks this entry's blocks so that a repeat within one table is caught too.
    let mut seen = vec![NONE; shape.num_blocks];
    for (reader, e) in batch.iter().enumerate() {
        for (index, &b) in e.block_table[..e.ctx_len.div_ceil(shape.block_size)].iter().enumerate() {
            if seen[b as usize] == reader as u32 {
                return Err(BatchError::RepeatedBlock { entry: reader, block: b });
            }
            seen[b as usize] = reader as u32;
            let (w, w_index) = writer[b as usize];
            if w == NONE || w as usize == reader {
                continue;
            }
            let writer = w as usize;
            if !multi_token {
                return Err(BatchError::ReadInSingleTokenStep { block: b, writer, reader });
            }
            if w_index as usize != index || batch[writer].ctx_len < (index + 1) * shape.block_size {
                return Err(BatchError::ReadUnfilledBlock { block: b, writer, reader, index });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ModelConfig {
        ModelConfig { vocab_size: 100, max_context: 64, ..ModelConfig::nemo_12b() }
    }

    const SHAPE: CacheShape = CacheShape { block_size: 4, num_blocks: 8, max_step_tokens: 16 };

    fn entry<'a>(tokens: &'a [u32], ctx_len: usize, block_table: &'a [u32]) -> StepEntry<'a> {
        StepEntry { tokens, ctx_len, block_table, want_logits: true }
    }

    #[test]
    fn a_well_formed_mixed_batch_passes_and_read_only_sharing_is_allowed() {
        // Entry 0 decodes position 5 (block 1 of [0, 1]); entry 1 prefills 0..6 in [2, 3];
        // entry 2 reads block 0 (shared, read-only) and writes block 4.
        let batch = [entry(&[1], 6, &[0, 1]), entry(&[1; 6], 6, &[2, 3, 7]), entry(&[2, 3], 6, &[0, 4])];
        assert_eq!(check_batch(&config(), SHAPE, &batch), Ok(()));
    }

    #[test]
    fn each_malformed_entry_is_named() {
        let c = config();
        let check = |batch: &[StepEntry<'_>]| check_batch(&c, SHAPE, batch).unwrap_err();
        assert_eq!(check(&[entry(&[], 1, &[0])]), BatchError::NoTokens { entry: 0 });
        assert_eq!(
            check(&[entry(&[1], 1, &[0]), entry(&[1, 2], 1, &[1])]),
            BatchError::CtxShorterThanTokens { entry: 1, ctx_len: 1, tokens: 2 }
        );
        assert_eq!(check(&[entry(&[1], 65, &[0; 17])]), BatchError::ContextFull { entry: 0, ctx_len: 65, max: 64 });
        assert_eq!(
            check(&[entry(&[1, 100], 2, &[0])]),
            BatchError::TokenOutOfRange { entry: 0, index: 1, token: 100, vocab_size: 100 }
        );
        assert_eq!(
            check(&[entry(&[1], 5, &[0])]),
            BatchError::BlockTableTooShort { entry: 0, blocks: 1, block_size: 4, ctx_len: 5 }
        );
        assert_eq!(check(&[entry(&[1], 5, &[0, 8])]), BatchError::BlockOutOfRange { entry: 0, block: 8, num_blocks: 8 });
        assert_eq!(check(&[entry(&[1; 17], 17, &[0, 1, 2, 3, 4])]), BatchError::TooManyTokens { tokens: 17, max: 16 });
    }

    #[test]
    fn written_blocks_may_not_be_shared_or_repeated() {
        let c = config();
        let check = |batch: &[StepEntry<'_>]| check_batch(&c, SHAPE, batch);
        // Two entries writing the same block.
        assert_eq!(
            check(&[entry(&[1], 1, &[3]), entry(&[1], 2, &[3])]),
            Err(BatchError::SharedWrittenBlock { block: 3, writer: 0, other: 1 })
        );
        // A reader writing the block too.
        assert_eq!(
            check(&[entry(&[1; 4], 4, &[0]), entry(&[1; 2], 2, &[0])]),
            Err(BatchError::SharedWrittenBlock { block: 0, writer: 0, other: 1 })
        );
        // One table naming a block twice, written or only read.
        assert_eq!(check(&[entry(&[1; 8], 8, &[2, 2])]), Err(BatchError::RepeatedBlock { entry: 0, block: 2 }));
        assert_eq!(check(&[entry(&[1], 9, &[2, 2, 5])]), Err(BatchError::RepeatedBlock { entry: 0, block: 2 }));
        // Blocks past ctx_len are ignored.
        assert_eq!(check(&[entry(&[1], 1, &[0, 0, 99])]), Ok(()));
    }

    #[test]
    fn a_block_the_step_fills_may_be_read_by_another_entry_of_a_multi_token_step() {
        let c = config();
        let check = |batch: &[StepEntry<'_>]| check_batch(&c, SHAPE, batch);
        // Entry 0 fills blocks 0 and 1 (positions 0..8); entry 1 reads both and writes block 2.
        assert_eq!(check(&[entry(&[1; 8], 8, &[0, 1]), entry(&[1], 9, &[0, 1, 2])]), Ok(()));
        // The reader may come first: the order of entries does not matter.
        assert_eq!(check(&[entry(&[1], 9, &[0, 1, 2]), entry(&[1; 8], 8, &[0, 1])]), Ok(()));
        // Entry 0 fills block 0 only part way (positions 0..3).
        assert_eq!(
            check(&[entry(&[1; 3], 3, &[0]), entry(&[1], 5, &[0, 2])]),
            Err(BatchError::ReadUnfilledBlock { block: 0, writer: 0, reader: 1, index: 0 })
        );
        // Entry 1 reads entry 0's block 1 as its block 0 (other positions).
        assert_eq!(
            check(&[entry(&[1; 8], 8, &[0, 1]), entry(&[1], 5, &[1, 2])]),
            Err(BatchError::ReadUnfilledBlock { block: 1, writer: 0, reader: 1, index: 0 })
        );
        // Entry 0 decodes position 3, completing block 0, and every entry has one token.
        assert_eq!(
            check(&[entry(&[1], 4, &[0]), entry(&[1], 5, &[0, 1])]),
            Err(BatchError::ReadInSingleTokenStep { block: 0, writer: 0, reader: 1 })
        );
        // With a third, multi-token entry in the step, the same read is allowed.
        assert_eq!(check(&[entry(&[1], 4, &[0]), entry(&[1], 5, &[0, 1]), entry(&[1; 2], 2, &[3])]), Ok(()));
    }
}
