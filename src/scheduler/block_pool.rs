//! The free list over the backend's KV blocks. Allocation is all-or-nothing; freeing checks every
//! block before releasing any, so a double free is an error that changes nothing.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("block {block} is outside the pool of {num_blocks} blocks")]
    OutOfRange { block: u32, num_blocks: usize },
    #[error("block {block} is freed but is not allocated (a double free)")]
    NotAllocated { block: u32 },
}

#[derive(Debug, Clone)]
pub struct BlockPool {
    /// Free block ids, popped from the end: the lowest ids are handed out first.
    free: Vec<u32>,
    allocated: Vec<bool>,
}

impl BlockPool {
    pub fn new(num_blocks: usize) -> Self {
        assert!(num_blocks <= u32::MAX as usize, "{num_blocks} blocks do not fit u32 ids");
        BlockPool { free: (0..num_blocks as u32).rev().collect(), allocated: vec![false; num_blocks] }
    }

    pub fn num_blocks(&self) -> usize {
        self.allocated.len()
    }

    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    pub fn num_used(&self) -> usize {
        self.num_blocks() - self.num_free()
    }

    pub fn is_allocated(&self, block: u32) -> bool {
        self.allocated.get(block as usize).copied().unwrap_or(false)
    }

    /// Appends `n` fresh blocks to `table`, or returns false and changes nothing when fewer than
    /// `n` are free.
    pub fn allocate_into(&mut self, n: usize, table: &mut Vec<u32>) -> bool {
        if n > self.free.len() {
            return false;
        }
        for block in self.free.drain(self.free.len() - n..).rev() {
            debug_assert!(!self.allocated[block as usize], "block {block} was on the free list twice");
            self.allocated[block as usize] = true;
            table.push(block);
        }
        true
    }

    /// Returns `blocks` to the pool. Every block must be allocated and listed once; otherwise
    /// nothing is freed.
    pub fn free(&mut self, blocks: &[u32]) -> Result<(), PoolError> {
        let num_blocks = self.num_blocks();
        for (i, &block) in blocks.iter().enumerate() {
            if block as usize >= num_blocks {
                return Err(PoolError::OutOfRange { block, num_blocks });
            }
            if !self.allocated[block as usize] || blocks[..i].contains(&block) {
                return Err(PoolError::NotAllocated { block });
            }
        }
        for &block in blocks.iter().rev() {
            self.allocated[block as usize] = false;
            self.free.push(block);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_ids_first_and_counts() {
        let mut pool = BlockPool::new(5);
        let mut table = Vec::new();
        assert!(pool.allocate_into(2, &mut table));
        assert!(pool.allocate_into(1, &mut table));
        assert_eq!(table, vec![0, 1, 2]);
        assert_eq!((pool.num_free(), pool.num_used(), pool.num_blocks()), (2, 3, 5));
        assert!(pool.is_allocated(1) && !pool.is_allocated(3) && !pool.is_allocated(99));
    }

    #[test]
    fn allocation_is_all_or_nothing() {
        let mut pool = BlockPool::new(3);
        let mut table = vec![7];
        assert!(!pool.allocate_into(4, &mut table));
        assert_eq!((table, pool.num_free()), (vec![7], 3));
        let mut all = Vec::new();
        assert!(pool.allocate_into(3, &mut all));
        assert!(!pool.allocate_into(1, &mut all));
        assert!(pool.allocate_into(0, &mut all), "zero blocks always fit");
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn freed_blocks_are_reused_and_the_pool_refills() {
        let mut pool = BlockPool::new(4);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert!(pool.allocate_into(2, &mut a));
        assert!(pool.allocate_into(2, &mut b));
        pool.free(&a).unwrap();
        let mut c = Vec::new();
        assert!(pool.allocate_into(2, &mut c));
        c.sort();
        assert_eq!(c, a);
        pool.free(&b).unwrap();
        pool.free(&c).unwrap();
        assert_eq!(pool.num_free(), 4);
    }

    #[test]
    fn double_free_and_foreign_blocks_are_refused_without_freeing_anything() {
        let mut pool = BlockPool::new(4);
        let mut t = Vec::new();
        assert!(pool.allocate_into(3, &mut t));
        pool.free(&t[..1]).unwrap();
        // Block 0 is free already: the whole call is refused, 1 and 2 stay allocated.
        assert_eq!(pool.free(&[1, 0, 2]), Err(PoolError::NotAllocated { block: 0 }));
        assert_eq!(pool.num_free(), 2);
        assert_eq!(pool.free(&[1, 1]), Err(PoolError::NotAllocated { block: 1 }));
        assert_eq!(pool.free(&[9]), Err(PoolError::OutOfRange { block: 9, num_blocks: 4 }));
        assert_eq!(pool.num_used(), 2);
        pool.free(&[1, 2]).unwrap();
        assert_eq!(pool.num_free(), 4);
    }
}
