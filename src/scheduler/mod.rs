//! Continuous batching: requests join and leave the running batch at every step; each step
//! mixes decode tokens of running sequences with prefill chunks of new ones under a token
//! budget, over KV blocks from one preallocated pool. Pure logic, tested without a model
//! (docs/scheduler.md has the design, invariants and preemption policy).
//!
//! - [`BlockPool`]: the free list of KV blocks.
//! - [`Request`]: what a caller asks for, checked up front ([`RequestError`]).
//! - [`Scheduler`]: who runs next, block allocation, preemption; [`Admission`]: when a new
//!   request may join.
//! - [`Engine`]: a [`crate::engine::BatchBackend`] + the scheduler + sampling; emits [`Event`]s.
//! - [`fake_backend`]: a deterministic model stand-in for tests.
//! - [`no_model`]: a backend that runs no model, for the scheduler's own counts and costs.

mod admission;
mod block_pool;
mod free_list;
mod engine;
mod event;
pub mod fake_backend;
pub mod no_model;
mod request;
mod schedule;
mod sequence;

pub use admission::{Admission, ReserveRatio, EXPECTED_TOKENS_CLIP};
pub use block_pool::{BlockPool, ContentId, PoolError};
pub use engine::{Engine, EngineOptions, EngineOptionsError};
pub use event::{Event, FinishReason, Usage};
pub use request::{max_kv_positions, Limits, Request, RequestError, RequestId};
pub use schedule::{PrefixCacheStats, ScheduledChunk, Scheduler, SchedulerConfig, StepPlan};
pub use sequence::Sequence;
