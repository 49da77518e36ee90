//! The last constraints compiled, each in its start state, so that a request repeating one
//! (a server's clients send the same schema with every call) gets a deep copy in microseconds
//! instead of a compile in milliseconds (docs/structured.md, "Cost").

use std::collections::VecDeque;
use std::sync::Arc;

/// Constraints kept.
pub const GRAMMAR_CACHE_ENTRIES: usize = 64;

/// Largest source kept (a schema as compact JSON, a regex, a grammar): a compiled grammar grows
/// with its source and its lexer's states, so the cache holds at most 64 x 64 KiB of sources.
pub const GRAMMAR_CACHE_MAX_SOURCE: usize = 64 << 10;

/// Least recently used first out; a lookup scans at most [`GRAMMAR_CACHE_ENTRIES`] keys.
pub(super) struct GrammarCache<T> {
    /// Most recently used first.
    entries: VecDeque<(String, Arc<T>)>,
    capacity: usize,
    max_key_bytes: usize,
    pub hits: u64,
    pub misses: u64,
}

impl<T> GrammarCache<T> {
    pub fn new(capacity: usize, max_key_bytes: usize) -> Self {
        GrammarCache { entries: VecDeque::with_capacity(capacity), capacity, max_key_bytes, hits: 0, misses: 0 }
    }

    /// The start state compiled for `key`, now the most recently used.
    pub fn get(&mut self, key: &str) -> Option<Arc<T>> {
        let Some(i) = self.entries.iter().position(|(k, _)| k == key) else {
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
        if self.capacity == 0 || key.len() > self.max_key_bytes || self.entries.iter().any(|(k, _)| *k == key) {
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_back();
        }
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
    fn large_sources_are_not_kept() {
        let mut cache = GrammarCache::new(4, 100);
        cache.insert("x".repeat(101), Arc::new(0));
        assert_eq!(cache.get(&"x".repeat(101)), None);
        cache.insert("y".repeat(100), Arc::new(1));
        assert_eq!(cache.get(&"y".repeat(100)).as_deref(), Some(&1));
    }
}
