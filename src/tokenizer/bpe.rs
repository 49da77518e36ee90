//! Byte-level BPE by rank, the tiktoken algorithm: start from single bytes and repeatedly merge
//! the adjacent pair whose concatenation has the lowest rank, the leftmost one on ties, until no
//! adjacent pair is in the vocabulary.
//!
//! tiktoken rescans the whole piece after every merge (quadratic); here a min-heap keyed by
//! (rank, start byte) picks the same pair at every step, so the result is identical while a
//! 5,000-space or 100 kB piece stays fast. Stale heap entries are skipped by a per-part
//! generation counter.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash (rustc's hasher): the rank map is hit once per candidate pair, and SipHash's
/// DoS resistance buys nothing for a fixed vocabulary.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(K);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Token bytes -> rank.
pub type RankMap = HashMap<Vec<u8>, u32, BuildHasherDefault<FxHasher>>;

const NONE: usize = usize::MAX;

/// Appends the ranks of `piece` to `out`. Every single byte must have a rank (byte-level BPE).
pub fn encode_piece(piece: &[u8], ranks: &RankMap, out: &mut Vec<u32>) {
    // An empty piece (a split pattern's empty match) has no tokens; the caller's coverage check
    // refuses a pattern that matches nothing else.
    if piece.is_empty() {
        return;
    }
    if let Some(&r) = ranks.get(piece) {
        out.push(r);
        return;
    }
    let n = piece.len();
    // Parts are a linked list over byte offsets: part k spans start[k]..start[next[k]] (or n).
    let mut next: Vec<usize> = (1..=n).map(|k| if k == n { NONE } else { k }).collect();
    let mut prev: Vec<usize> = (0..n).map(|k| if k == 0 { NONE } else { k - 1 }).collect();
    let mut generation = vec![0u32; n];
    let end_of = |next: &[usize], k: usize| if next[k] == NONE { n } else { next[k] };
    let pair_rank = |next: &[usize], k: usize| -> Option<u32> {
        let j = next[k];
        if j == NONE {
            return None;
        }
        ranks.get(&piece[k..end_of(next, j)]).copied()
    };
    let mut heap: BinaryHeap<Reverse<(u32, usize, u32)>> = BinaryHeap::with_capacity(n);
    for k in 0..n.saturating_sub(1) {
        if let Some(r) = pair_rank(&next, k) {
            heap.push(Reverse((r, k, 0)));
        }
    }
    while let Some(Reverse((_, k, g))) = heap.pop() {
        if generation[k] != g || next[k] == NONE {
            continue; // part k changed (or was absorbed) since this entry was pushed
        }
        // Merge part k with its right neighbour j.
        let j = next[k];
        next[k] = next[j];
        if next[j] != NONE {
            prev[next[j]] = k;
        }
        generation[j] = u32::MAX; // absorbed: any entry keyed on j is stale
        generation[k] += 1;
        if let Some(r) = pair_rank(&next, k) {
            heap.push(Reverse((r, k, generation[k])));
        }
        let p = prev[k];
        if p != NONE {
            generation[p] += 1;
            if let Some(r) = pair_rank(&next, p) {
                heap.push(Reverse((r, p, generation[p])));
            }
        }
    }
    let mut k = 0;
    while k != NONE {
        let part = &piece[k..end_of(&next, k)];
        out.push(*ranks.get(part).expect("every BPE part is a vocabulary entry"));
        k = next[k];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranks(entries: &[&[u8]]) -> RankMap {
        let mut m = RankMap::default();
        for b in 0..=255u8 {
            m.insert(vec![b], b as u32);
        }
        for (i, e) in entries.iter().enumerate() {
            m.insert(e.to_vec(), 256 + i as u32);
        }
        m
    }

    #[test]
    fn merges_lowest_rank_first_leftmost_on_ties() {
        let m = ranks(&[b"aa", b"ab", b"aaa"]);
        let mut out = vec![];
        encode_piece(b"aaaa", &m, &mut out);
        // "aa" (256) merges leftmost first: [aa][a][a] -> [aa][aa]; "aaa" is never formed
        // because "aa"+"aa" is not in the vocabulary.
        assert_eq!(out, vec![256, 256]);
        out.clear();
        encode_piece(b"aab", &m, &mut out);
        // (a,a)=256 beats (a,b)=257; then [aa][b] has no merge.
        assert_eq!(out, vec![256, b'b' as u32]);
        out.clear();
        encode_piece(b"aaa", &m, &mut out);
        assert_eq!(out, vec![258]); // whole piece is a token
    }
}
