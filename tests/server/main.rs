//! The HTTP server in process, over stand-in backends (the scheduler's fake model, a scripted
//! model) with Nemo's real tokenizer and chat template, driven by a raw HTTP client: request
//! and response shapes, streaming, tool calls, bad requests, faults, disconnects, shutdown.
//! The real binary with real models is driven by the official `openai` client in
//! tests/server_openai.rs.
mod bad_requests;
mod basic;
mod disconnect;
mod faults;
mod harness;
mod http_client;
mod shutdown;
mod structured;
