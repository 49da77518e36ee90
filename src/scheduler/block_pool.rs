//! The KV blocks: how many sequences hold each one, the free list, and the prefix cache.
//!
//! A block whose positions were all computed can be *registered* under the exact tokens it
//! holds and the content of the blocks before it; a later request whose prompt starts with the
//! same tokens *shares* it (reference count + 1) instead of recomputing it. A registered block
//! stays findable after its last holder lets go, until the free list hands it out again.
//! Lookups compare tokens exactly (a hash only picks the bucket), and a child is keyed by its
//! parent's [`ContentId`], which is never reused, so a match is never a collision or a stale
//! chain. Free blocks are handed out unregistered ones first, then registered ones least
//! recently freed first, a sequence's last block before its first.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use super::free_list::FreeList;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("block {block} is outside the pool of {num_blocks} blocks")]
    OutOfRange { block: u32, num_blocks: usize },
    #[error("block {block} is freed but is not allocated (a double free)")]
    NotAllocated { block: u32 },
}

/// Names the exact token prefix a registered block ends: blocks with the same id hold the K/V
/// of the same tokens at the same positions. Ids are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentId(u64);

impl ContentId {
    /// The empty prefix: the parent of every sequence's first block.
    pub const ROOT: ContentId = ContentId(0);
}

#[derive(Debug, Clone)]
struct Registered {
    content: ContentId,
    parent: ContentId,
    tokens: Box<[u32]>,
    bucket: u64,
}

#[derive(Debug, Clone)]
pub struct BlockPool {
    /// `[num_blocks]`: sequences holding each block; 0 exactly for the blocks on `free`.
    refs: Vec<u32>,
    free: FreeList,
    /// `[num_blocks]`: what a registered block holds (free or not).
    registered: Vec<Option<Registered>>,
    /// Bucket hash of (parent, tokens) -> registered blocks in that bucket.
    index: HashMap<u64, Vec<u32>>,
    num_registered: usize,
    /// Seeded per process, so crafted prompts cannot pile into one bucket.
    hasher: RandomState,
    next_content: u64,
}

impl BlockPool {
    pub fn new(num_blocks: usize) -> Self {
        BlockPool {
            refs: vec![0; num_blocks],
            free: FreeList::full(num_blocks),
            registered: vec![None; num_blocks],
            index: HashMap::new(),
            num_registered: 0,
            hasher: RandomState::new(),
            next_content: 1,
        }
    }

    pub fn num_blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks no sequence holds, registered ones included (they are handed out when needed).
    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    pub fn num_used(&self) -> usize {
        self.num_blocks() - self.num_free()
    }

    /// Registered blocks, held or free.
    pub fn num_registered(&self) -> usize {
        self.num_registered
    }

    pub fn is_allocated(&self, block: u32) -> bool {
        self.refcount(block) > 0
    }

    /// Sequences holding `block` (0 when free or out of range).
    pub fn refcount(&self, block: u32) -> u32 {
        self.refs.get(block as usize).copied().unwrap_or(0)
    }

    /// What `block` holds, if it is registered.
    pub fn content(&self, block: u32) -> Option<ContentId> {
        self.registered.get(block as usize)?.as_ref().map(|r| r.content)
    }

    /// Appends `n` blocks held once to `table`, unregistering those that were cached, or
    /// returns false and changes nothing when fewer than `n` are free.
    pub fn allocate_into(&mut self, n: usize, table: &mut Vec<u32>) -> bool {
        if n > self.free.len() {
            return false;
        }
        for _ in 0..n {
            let block = self.free.pop_front().expect("counted above");
            self.unregister(block);
            self.refs[block as usize] = 1;
            table.push(block);
        }
        true
    }

    /// Lets go of a sequence's `blocks` (its block table). Every block must be held and listed
    /// once; otherwise nothing changes. A block nobody holds any more becomes free: registered
    /// ones at the back (kept longest, the table's last block handed out first), others at the
    /// front.
    pub fn free(&mut self, blocks: &[u32]) -> Result<(), PoolError> {
        let num_blocks = self.num_blocks();
        if let Some(&block) = blocks.iter().find(|&&b| b as usize >= num_blocks) {
            return Err(PoolError::OutOfRange { block, num_blocks });
        }
        if let Some(&block) = blocks.iter().find(|&&b| self.refs[b as usize] == 0) {
            return Err(PoolError::NotAllocated { block });
        }
        let mut sorted = blocks.to_vec();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(PoolError::NotAllocated { block: w[0] });
        }
        for &block in blocks.iter().rev() {
            let refs = &mut self.refs[block as usize];
            *refs -= 1;
            if *refs == 0 {
                match self.registered[block as usize] {
                    Some(_) => self.free.push_back(block),
                    None => self.free.push_front(block),
                }
            }
        }
        Ok(())
    }

    /// The registered block holding `tokens` right after the prefix `parent`, if any.
    pub fn lookup(&self, parent: ContentId, tokens: &[u32]) -> Option<u32> {
        let bucket = self.index.get(&self.bucket(parent, tokens))?;
        bucket.iter().copied().find(|&b| {
            let r = self.registered[b as usize].as_ref().expect("indexed blocks are registered");
            r.parent == parent && *r.tokens == *tokens
        })
    }

    /// One more sequence holds `block` (found by [`Self::lookup`]); a free one leaves the free list.
    pub fn share(&mut self, block: u32) {
        assert!(self.registered[block as usize].is_some(), "only registered blocks are shared");
        if self.refs[block as usize] == 0 {
            self.free.remove(block);
        }
        self.refs[block as usize] += 1;
    }

    /// Records that held `block` holds the K/V of `tokens` right after the prefix `parent`, and
    /// returns its content id. Registering a block twice returns the id it has; a block with the
    /// same content as another gets that block's id (either is then found).
    pub fn register(&mut self, block: u32, parent: ContentId, tokens: &[u32]) -> ContentId {
        assert!(self.refs[block as usize] > 0, "block {block} is registered while free");
        if let Some(content) = self.content(block) {
            return content;
        }
        let content = match self.lookup(parent, tokens) {
            Some(twin) => self.content(twin).expect("found blocks are registered"),
            None => {
                self.next_content += 1;
                ContentId(self.next_content - 1)
            }
        };
        let bucket = self.bucket(parent, tokens);
        self.index.entry(bucket).or_default().push(block);
        self.registered[block as usize] = Some(Registered { content, parent, tokens: tokens.into(), bucket });
        self.num_registered += 1;
        content
    }

    /// Unregisters every block (after a failed step, whose kernels may have written anywhere).
    pub fn forget_registered(&mut self) {
        self.index.clear();
        self.registered.iter_mut().for_each(|r| *r = None);
        self.num_registered = 0;
    }

    fn unregister(&mut self, block: u32) {
        let Some(r) = self.registered[block as usize].take() else { return };
        self.num_registered -= 1;
        let bucket = self.index.get_mut(&r.bucket).expect("registered blocks are indexed");
        bucket.retain(|&b| b != block);
        if bucket.is_empty() {
            self.index.remove(&r.bucket);
        }
    }

    fn bucket(&self, parent: ContentId, tokens: &[u32]) -> u64 {
        self.hasher.hash_one((parent, tokens))
    }

    /// Checks the pool's own bookkeeping (tests and debugging): the free list holds exactly the
    /// blocks nobody holds, and the index exactly the registered blocks.
    pub fn check(&self) -> Result<(), String> {
        let unheld = self.refs.iter().filter(|&&r| r == 0).count();
        if unheld != self.free.len() || self.free.iter().count() != self.free.len() {
            return Err(format!("{unheld} blocks unheld, the free list has {}", self.free.len()));
        }
        if let Some(b) = (0..self.num_blocks() as u32).find(|&b| (self.refs[b as usize] == 0) != self.free.contains(b)) {
            return Err(format!("block {b} held by {} but listed free: {}", self.refs[b as usize], self.free.contains(b)));
        }
        for (b, r) in self.registered.iter().enumerate() {
            if let Some(r) = r {
                if !self.index.get(&r.bucket).is_some_and(|v| v.contains(&(b as u32))) {
                    return Err(format!("registered block {b} is missing from the index"));
                }
            }
        }
        let registered = self.registered.iter().filter(|r| r.is_some()).count();
        let indexed: usize = self.index.values().map(Vec::len).sum();
        if registered != indexed || registered != self.num_registered {
            return Err(format!("{registered} blocks registered, {indexed} indexed, {} counted", self.num_registered));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "block_pool_tests.rs"]
mod tests;
