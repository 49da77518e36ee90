//! The scheduler and engine end to end: property tests over the fake backend (random arrivals,
//! cancellations, lengths and pool sizes), and the CPU batch backend on the tiny fixture model
//! against solo runs of the CPU reference.
mod admission;
mod batched_equals_solo;
mod properties;
mod structured;
#[path = "../common/tiny_tekken.rs"]
mod tiny_tekken;
