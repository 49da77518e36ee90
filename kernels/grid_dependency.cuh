// Programmatic dependent launch (PDL, sm_90): lets a kernel start while the kernel before it in
// the stream is still finishing, so the gap between two short kernels (launch latency, the
// first wave's ramp, the previous kernel's tail) is spent fetching what does not depend on it.
//
// The protocol (CUDA programming guide, "Programmatic Dependent Launch"; PTX `griddepcontrol`):
//   - the secondary is launched with CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
//     (src/gpu/launch.rs); without it both instructions below are no-ops;
//   - the primary's `grid_dependents_may_launch` lets the secondary's blocks be scheduled once
//     every block of the primary has issued it or exited (all of the primary's blocks are then
//     resident, so the secondary cannot starve it);
//   - the secondary may read only what the primary does not write (here: weights) and write
//     nothing before `grid_dependency_wait`, which returns once the primary has completed and its
//     memory is visible. Every thread of a secondary calls it before its first such access, and
//     before any early exit, so no block of it can finish before the primary has;
//   - the primary's outputs are read through the coherent path (ld8, plain loads), never
//     ld.global.nc (ldg8, or `const __restrict__` pointers nvcc may turn into it): the
//     non-coherent path is only for data no grid writes while this one runs.
// Under NEMO_EMU the wait is where the emulator's dependency check swaps the primary's outputs
// in (kernels/emu/emu.h): a read of them before the wait sees poison. It also reports a global
// write before the wait, and a block that ends with none of its threads at the wait (a grid's
// completion must imply its primary's: kernels read outputs of kernels two or more launches
// back, safe only through that chain).
#pragma once
#include "common.cuh"

__device__ __forceinline__ void grid_dependents_may_launch() {
#ifndef NEMO_EMU
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void grid_dependency_wait() {
#ifdef NEMO_EMU
    emu::grid_dependency_wait();
#else
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Asks L2 to fetch `bytes` (a multiple of 16) at `p` (16-byte aligned), without waiting: weights
// a secondary will read right after its wait come from DRAM while the primary finishes.
__device__ __forceinline__ void prefetch_l2(const void* p, uint32_t bytes) {
#ifndef NEMO_EMU
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#else
    (void)p;
    (void)bytes;
#endif
}
