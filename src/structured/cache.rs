//! The last constraints compiled, each in its start state, so that a request repeating one
//! (a server's clients send the same schema with every call) gets a deep copy in microseconds
//! instead of a compile in milliseconds (docs/structured.md, "Cost").

use std::collections::VecDeque;
use std::sync::Arc;

/// Constraints kept.
pub const GRAMMAR_CACHE_ENTRIES: usize = 64;

/// Source bytes kept, all entries together: a compiled grammar grows with its source (and its
/// lexer's states), so a client sending large distinct schemas cannot pin much memory. A
/// source over a sixteenth of this is never kept.
pub const GRAMMAR_CACHE_BYTES: usize = 4 << 20;

/// Least recently used first out; a lookup scans at most [`GRAMMAR_CACHE_ENTRIES`] keys.
pub(super) struct GrammarCache<T> {
    /// Most recently used first.
    entries: VecDeque<(String, Arc<T>)>,
    capacity: usize,
    max_bytes: usize,
    /// Key bytes held.
    bytes: usize,
    pub hits: u64,
    pub misses: u64,
}

impl<T> GrammarCache<T> {
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        GrammarCache { entries: VecDeque::with_capacity(capacity), capacity, max_bytes, bytes: 0, hits: 0, misses: 0 }
    }

    /// The start state compiled for `key`, now the most recently used.
    pub fn get(&mut self, key: &str) -> Option<Arc<T>> {
        let Some(i) = self.entries.iter().position(|(k, _)| k.len() == key.len() && k == key) else {
            self.misses += 1;
            return None;
        };
        self.hits += 1;
        let entry = self.entries.remove(i).expect("found above");
        let grammar = entry.1.clone();
        self.entries.push_front(entry);
        Some(grammar)
    }

    /// Keeps `grammar` (in its start state) under `key`, dropping the least recently used.
    pub fn insert(&mut self, key: String, grammar: Arc<T>) {
        // (Two requests may have compiled the same constraint at once.)
        if self.capacity == 0 || key.len() > self.max_bytes / 16 || self.entries.iter().any(|(k, _)| *k == key) {
            return;
        }
        while self.entries.len() == self.capacity || self.bytes + key.len() > self.max_bytes {
            let (old, _) = self.entries.pop_back().expect("a full cache has entries");
            self.bytes -= old.len();
        }
        self.bytes += key.len();
        self.entries.push_front((key, grammar));
    }

}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_goes_first_and_hits_are_counted() {
        let mut cache = GrammarCache::new(2, 1 << 20);
        cache.insert("a".into(), Arc::new(1));
        cache.insert("b".into(), Arc::new(2));
        assert_eq!(cache.get("a").as_deref(), Some(&1)); // "a" is now the most recent
        cache.insert("c".into(), Arc::new(3)); // so "b" goes
        assert_eq!(cache.get("b"), None);
        assert_eq!((cache.get("a").as_deref(), cache.get("c").as_deref()), (Some(&1), Some(&3)));
        cache.insert("a".into(), Arc::new(9)); // already there: kept as it was
        assert_eq!(cache.get("a").as_deref(), Some(&1));
        assert_eq!((cache.hits, cache.misses), (4, 1));
        let mut none = GrammarCache::new(0, 1 << 20);
        none.insert("a".into(), Arc::new(1));
        assert_eq!(none.get("a"), None);
    }

    #[test]
    fn large_sources_are_bounded_in_bytes() {
        let mut cache = GrammarCache::new(64, 1600);
        let key = |c: char, n: usize| c.to_string().repeat(n);
        cache.insert(key('x', 101), Arc::new(0)); // over a sixteenth of the bytes: never kept
        assert_eq!(cache.get(&key('x', 101)), None);
        for c in ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q'] {
            cache.insert(key(c, 100), Arc::new(1));
        }
        assert!(cache.bytes <= 1600 && cache.entries.len() == 16, "{} bytes, {} entries", cache.bytes, cache.entries.len());
        assert_eq!(cache.get(&key('a', 100)), None, "the oldest went first");
        assert!(cache.get(&key('q', 100)).is_some());
    }
}
