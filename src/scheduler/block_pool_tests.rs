use super::*;

/// `n` blocks from `pool`, which must have them.
fn take(pool: &mut BlockPool, n: usize) -> Vec<u32> {
    let mut table = Vec::new();
    assert!(pool.allocate_into(n, &mut table), "{n} blocks should be free");
    table
}

#[test]
fn allocates_lowest_ids_first_and_counts() {
    let mut pool = BlockPool::new(5);
    let mut table = take(&mut pool, 2);
    assert!(pool.allocate_into(1, &mut table));
    assert_eq!(table, vec![0, 1, 2]);
    assert_eq!((pool.num_free(), pool.num_used(), pool.num_blocks()), (2, 3, 5));
    assert!(pool.is_allocated(1) && !pool.is_allocated(3) && !pool.is_allocated(99));
    pool.check().unwrap();
}

#[test]
fn allocation_is_all_or_nothing() {
    let mut pool = BlockPool::new(3);
    let mut table = vec![7];
    assert!(!pool.allocate_into(4, &mut table));
    assert_eq!((table, pool.num_free()), (vec![7], 3));
    let mut all = take(&mut pool, 3);
    assert!(!pool.allocate_into(1, &mut all));
    assert!(pool.allocate_into(0, &mut all), "zero blocks always fit");
    assert_eq!(all.len(), 3);
}

#[test]
fn freed_blocks_are_reused_and_the_pool_refills() {
    let mut pool = BlockPool::new(4);
    let (a, b) = (take(&mut pool, 2), take(&mut pool, 2));
    pool.free(&a).unwrap();
    let mut c = take(&mut pool, 2);
    c.sort();
    assert_eq!(c, a);
    pool.free(&b).unwrap();
    pool.free(&c).unwrap();
    assert_eq!(pool.num_free(), 4);
    pool.check().unwrap();
}

#[test]
fn double_free_and_foreign_blocks_are_refused_without_freeing_anything() {
    let mut pool = BlockPool::new(4);
    let t = take(&mut pool, 3);
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

/// Registers `table`'s blocks as the chain of `tokens` (2 per block), as a sequence would.
fn register_chain(pool: &mut BlockPool, table: &[u32], tokens: &[u32]) -> Vec<ContentId> {
    let mut parent = ContentId::ROOT;
    table
        .iter()
        .zip(tokens.chunks(2))
        .map(|(&b, t)| {
            parent = pool.register(b, parent, t);
            parent
        })
        .collect()
}

#[test]
fn a_registered_chain_is_found_exactly_and_shared() {
    let mut pool = BlockPool::new(6);
    let a = take(&mut pool, 2);
    let ids = register_chain(&mut pool, &a, &[1, 2, 3, 4]);
    assert_eq!(pool.lookup(ContentId::ROOT, &[1, 2]), Some(a[0]));
    assert_eq!(pool.lookup(ids[0], &[3, 4]), Some(a[1]));
    // Same tokens after another prefix, or other tokens: no match.
    assert_eq!(pool.lookup(ContentId::ROOT, &[3, 4]), None);
    assert_eq!(pool.lookup(ids[0], &[3, 5]), None);
    assert_eq!(pool.lookup(ids[0], &[3]), None);
    // A second holder; the blocks stay held until both let go, and stay registered after.
    pool.share(a[0]);
    assert_eq!((pool.refcount(a[0]), pool.num_used()), (2, 2));
    pool.free(&a).unwrap();
    assert_eq!((pool.refcount(a[0]), pool.refcount(a[1]), pool.num_free()), (1, 0, 5));
    pool.free(&a[..1]).unwrap();
    assert_eq!((pool.num_free(), pool.num_registered()), (6, 2));
    // A free registered block is shared straight off the free list.
    pool.share(a[1]);
    assert_eq!((pool.num_free(), pool.refcount(a[1])), (5, 1));
    pool.check().unwrap();
}

#[test]
fn unregistered_blocks_are_handed_out_first_and_registered_ones_tail_first() {
    let mut pool = BlockPool::new(5);
    let a = take(&mut pool, 3); // 0 1 2
    register_chain(&mut pool, &a, &[1, 2, 3, 4, 5, 6]);
    pool.free(&a).unwrap();
    let b = take(&mut pool, 3);
    // 3 and 4 were never registered; then the chain's last block goes first.
    assert_eq!(b, vec![3, 4, 2]);
    assert_eq!(pool.content(2), None, "a block handed out again is unregistered");
    assert!(pool.lookup(ContentId::ROOT, &[1, 2]).is_some());
    pool.free(&b).unwrap();
    // Unregistered blocks 3 and 4 (and now 2) go to the front again.
    let mut c = take(&mut pool, 3);
    c.sort();
    assert_eq!(c, vec![2, 3, 4]);
    pool.check().unwrap();
}

#[test]
fn twins_share_a_content_id_and_a_reused_parent_never_revives_old_children() {
    let mut pool = BlockPool::new(4);
    let (a, b) = (take(&mut pool, 2), take(&mut pool, 2));
    let ids_a = register_chain(&mut pool, &a, &[1, 2, 3, 4]);
    let ids_b = register_chain(&mut pool, &b, &[1, 2, 3, 4]);
    assert_eq!(ids_a, ids_b, "the same tokens computed twice have one content id");
    assert_eq!(pool.register(a[0], ContentId::ROOT, &[1, 2]), ids_a[0], "registering again changes nothing");
    // Drop every block of the chain's first level, then register [1, 2] afresh: its children
    // from before name a content id that no longer exists.
    pool.free(&a).unwrap();
    pool.free(&b).unwrap();
    let fresh = take(&mut pool, 4);
    pool.free(&fresh).unwrap();
    assert_eq!(pool.num_registered(), 0);
    let c = take(&mut pool, 1);
    let new_root = pool.register(c[0], ContentId::ROOT, &[1, 2]);
    assert_ne!(new_root, ids_a[0]);
    assert_eq!(pool.lookup(new_root, &[3, 4]), None);
    pool.check().unwrap();
}

#[test]
fn forgetting_unregisters_everything() {
    let mut pool = BlockPool::new(3);
    let a = take(&mut pool, 2);
    register_chain(&mut pool, &a, &[1, 2, 3, 4]);
    pool.forget_registered();
    assert_eq!((pool.num_registered(), pool.lookup(ContentId::ROOT, &[1, 2]), pool.content(a[0])), (0, None, None));
    pool.free(&a).unwrap();
    pool.check().unwrap();
}

#[test]
#[should_panic(expected = "only registered blocks are shared")]
fn sharing_an_unregistered_block_is_a_bug() {
    let mut pool = BlockPool::new(2);
    let a = take(&mut pool, 1);
    pool.share(a[0]);
}
