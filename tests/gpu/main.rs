//! GPU tests: every kernel against its CPU reference (src/cpu) on fresh random inputs, outputs
//! poisoned before each run. One module per kernel file. Without a GPU each test prints a
//! SKIPPED notice and passes; scripts/gpu-check sets NEMO_REQUIRE_GPU=1 so that a skip fails.
//! `emulated` runs the kernels on the CPU emulator (kernels/emu/) everywhere, GPU or not.
mod common;
#[path = "../common/mod.rs"]
#[allow(dead_code)]
mod fixtures;

mod attention;
mod attention_e4m3;
mod demo;
mod embedding;
mod emulated;
mod engine;
mod fp8_cache;
mod gemm;
mod model;
mod rmsnorm;
mod rope;
mod sampling;
mod structured;
