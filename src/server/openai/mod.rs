//! OpenAI's API shapes: [`request`] bodies, [`parse`] with errors that name the field,
//! [`response`] bodies and stream chunks.

pub mod parse;
pub mod request;
pub mod response;

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// A response id: `prefix` + 24 hex digits, unique per process and unpredictable across runs.
pub fn response_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let n = COUNTER.load(Ordering::Relaxed);
    format!("{prefix}{:016x}{:08x}", h.finish(), n as u32)
}

/// Seconds since the epoch, for `created`.
pub fn unix_time() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
