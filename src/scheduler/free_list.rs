//! The free KV blocks in the order they are handed out: an intrusive doubly linked list over
//! block ids, so a cached block that a new request reuses leaves the middle of the list in O(1)
//! (vLLM v1 keeps its free blocks the same way).

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub struct FreeList {
    /// `[num_blocks]`: neighbours of a listed block (NIL at the ends); meaningless when unlisted.
    prev: Vec<u32>,
    next: Vec<u32>,
    listed: Vec<bool>,
    head: u32,
    tail: u32,
    len: usize,
}

impl FreeList {
    /// Every block listed, lowest ids at the front.
    pub fn full(num_blocks: usize) -> Self {
        assert!(num_blocks < NIL as usize, "{num_blocks} blocks do not fit u32 ids");
        let n = num_blocks as u32;
        let prev = (0..n).map(|b| if b == 0 { NIL } else { b - 1 }).collect();
        let next = (0..n).map(|b| if b + 1 == n { NIL } else { b + 1 }).collect();
        let (head, tail) = if n == 0 { (NIL, NIL) } else { (0, n - 1) };
        FreeList { prev, next, listed: vec![true; num_blocks], head, tail, len: num_blocks }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn contains(&self, block: u32) -> bool {
        self.listed.get(block as usize).copied().unwrap_or(false)
    }

    pub fn pop_front(&mut self) -> Option<u32> {
        let block = self.head;
        (block != NIL).then(|| {
            self.remove(block);
            block
        })
    }

    /// Lists `block` to be handed out before every listed block.
    pub fn push_front(&mut self, block: u32) {
        self.link(block, NIL, self.head);
    }

    /// Lists `block` to be handed out after every listed block.
    pub fn push_back(&mut self, block: u32) {
        self.link(block, self.tail, NIL);
    }

    fn link(&mut self, block: u32, prev: u32, next: u32) {
        assert!(!self.listed[block as usize], "block {block} is on the free list already");
        self.listed[block as usize] = true;
        self.join(prev, block);
        self.join(block, next);
        self.len += 1;
    }

    /// Unlists `block` wherever it is.
    pub fn remove(&mut self, block: u32) {
        let b = block as usize;
        assert!(self.listed[b], "block {block} is not on the free list");
        self.join(self.prev[b], self.next[b]);
        self.listed[b] = false;
        self.len -= 1;
    }

    /// Makes `next` follow `prev` (either may be NIL: the list's ends).
    fn join(&mut self, prev: u32, next: u32) {
        match prev {
            NIL => self.head = next,
            p => self.next[p as usize] = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.prev[n as usize] = prev,
        }
    }

    /// Front to back.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors((self.head != NIL).then_some(self.head), |&b| {
            let n = self.next[b as usize];
            (n != NIL).then_some(n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(list: &FreeList) -> Vec<u32> {
        list.iter().collect()
    }

    #[test]
    fn pops_in_order_and_links_at_both_ends() {
        let mut list = FreeList::full(4);
        assert_eq!(order(&list), [0, 1, 2, 3]);
        assert_eq!((list.pop_front(), list.pop_front()), (Some(0), Some(1)));
        list.push_back(0);
        list.push_front(1);
        assert_eq!(order(&list), [1, 2, 3, 0]);
        assert_eq!(list.len(), 4);
    }

    #[test]
    fn removes_from_the_middle_and_the_ends() {
        let mut list = FreeList::full(5);
        list.remove(2);
        list.remove(0);
        list.remove(4);
        assert_eq!(order(&list), [1, 3]);
        assert!(!list.contains(2) && list.contains(3) && !list.contains(99));
        list.remove(1);
        list.remove(3);
        assert!(list.len() == 0 && list.pop_front().is_none() && order(&list).is_empty());
        list.push_back(4);
        assert_eq!((order(&list), list.pop_front()), (vec![4], Some(4)));
    }

    #[test]
    #[should_panic(expected = "already")]
    fn listing_a_block_twice_is_a_bug() {
        FreeList::full(2).push_back(1);
    }
}
