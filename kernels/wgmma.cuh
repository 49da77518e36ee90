// Hopper (sm_90a) building blocks: mbarriers, TMA tensor loads, wgmma and its shared-memory
// descriptors. Used by gemm_wgmma.cu. Every helper is one PTX instruction (or a wait loop on one);
// the PTX ISA manual's sections "Asynchronous Warpgroup Level Matrix Multiply-Accumulate" and
// "Tensor Copy" describe them. Under NEMO_EMU each calls its emulation (kernels/emu/hopper.cpp).
#pragma once
#include "common.cuh"

// An opaque CUtensorMap (cuTensorMapEncodeTiled fills it on the host). Kernels take it inside a
// `__grid_constant__` parameter so that its address is a valid generic address for TMA.
struct alignas(64) TensorMap {
    uint64_t opaque[16];
};

__device__ __forceinline__ uint32_t shared_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- mbarrier ----

__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t arrivals) {
#ifdef NEMO_EMU
    emu::mbarrier_init(bar, arrivals);
#else
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals));
#endif
}

// Makes initialised barriers visible to the async proxy (TMA) and the other threads; follow with
// __syncthreads().
__device__ __forceinline__ void mbarrier_init_fence() {
#ifdef NEMO_EMU
    // The emulator has one proxy: nothing to fence.
#else
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

// One arrival that also announces `bytes` of TMA traffic the phase must wait for.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
#ifdef NEMO_EMU
    emu::mbarrier_arrive_expect_tx(bar, bytes);
#else
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#endif
}

__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
#ifdef NEMO_EMU
    emu::mbarrier_arrive(bar);
#else
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#endif
}

// Waits until the phase of parity `parity` has completed. A fresh barrier is in phase 0, and
// the phase "before" it (parity 1) counts as completed: waiting on parity 1 returns at once.
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
#ifdef NEMO_EMU
    emu::mbarrier_wait(bar, parity);
#else
    asm volatile(
        "{\n"
        ".reg .pred done;\n"
        "WAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT;\n"
        "}\n" ::"r"(bar), "r"(parity) : "memory");
#endif
}

// ---- named barriers ----

// Barrier `id` (1-15; 0 is __syncthreads') over `count` threads (whole warps): wait until all
// have arrived / arrive without waiting (the consumer warpgroups' ping-pong turns).
__device__ __forceinline__ void named_barrier_sync(int id, int count) {
#ifdef NEMO_EMU
    emu::named_barrier_sync(id, count);
#else
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
#endif
}

__device__ __forceinline__ void named_barrier_arrive(int id, int count) {
#ifdef NEMO_EMU
    emu::named_barrier_arrive(id, count);
#else
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
#endif
}

// ---- TMA ----

// Copies the box at (inner, outer) of the 2-D tensor `map` into shared memory at `dst`, counting
// its bytes on `bar`. Parts of the box outside the tensor are filled with zeros (and counted).
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const TensorMap* map, int inner, int outer, uint32_t bar) {
#ifdef NEMO_EMU
    emu::tma_load_2d(dst, map->opaque, inner, outer, bar);
#else
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
        ::"r"(dst), "l"(reinterpret_cast<uint64_t>(map)), "r"(inner), "r"(outer), "r"(bar) : "memory");
#endif
}

__device__ __forceinline__ void tma_prefetch_descriptor(const TensorMap* map) {
#ifdef NEMO_EMU
    (void)map;
#else
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
#endif
}

// ---- wgmma ----

// Descriptor of a K-major operand tile in shared memory written by TMA with the 128-byte swizzle:
// rows of 64 bf16 (128 bytes), 8-row groups 1024 bytes apart (the stride byte offset), the tile
// 1024-byte aligned. Advancing the start address by 32 bytes selects the next 16-wide k slice.
__device__ __forceinline__ uint64_t wgmma_desc_k_major_sw128(uint32_t tile) {
    const uint64_t start = (tile & 0x3FFFF) >> 4;
    const uint64_t leading = 16 >> 4;      // unused for swizzled K-major layouts; 1 by convention
    const uint64_t stride = 1024 >> 4;
    return start | (leading << 16) | (stride << 32) | (1ull << 62);  // bits 62-63: 1 = 128B swizzle
}

// A 128-byte-swizzle descriptor with explicit byte offsets: for an N-major (MN-major) operand the
// leading offset steps between 64-element groups of N and the stride offset between 8-row
// groups of K (PTX ISA, "Shared Memory Matrix Layout").
__device__ __forceinline__ uint64_t wgmma_desc_sw128(uint32_t tile, uint32_t leading_bytes, uint32_t stride_bytes) {
    return uint64_t((tile & 0x3FFFF) >> 4) | (uint64_t((leading_bytes & 0x3FFFF) >> 4) << 16) |
           (uint64_t((stride_bytes & 0x3FFFF) >> 4) << 32) | (1ull << 62);
}

// Makes this thread's generic-proxy writes to shared memory (st.shared) visible to the async
// proxy (wgmma, TMA) before they read them.
__device__ __forceinline__ void fence_proxy_async_shared() {
#ifdef NEMO_EMU
    emu::race::proxy_fence();  // the emulator's race check holds wgmma reads to this rule
#else
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Keeps the compiler from moving accesses to these registers across this point: wgmma reads and
// writes them asynchronously between wgmma_fence and wgmma_wait.
template <int N>
__device__ __forceinline__ void fence_registers(float (&r)[N]) {
#ifndef NEMO_EMU
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
#endif
}

// Orders this thread's register accesses before the next wgmma reads or writes them.
#ifdef NEMO_EMU
__device__ __forceinline__ void wgmma_fence() {}
__device__ __forceinline__ void wgmma_commit() { emu::wgmma_commit(); }
template <int N>
__device__ __forceinline__ void wgmma_wait() { emu::wgmma_wait(N); }
#else
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N committed wgmma groups of this warpgroup are still running.
template <int N>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
#endif

// Moves this warpgroup's register budget down (producers) or up (consumers); every warp of the
// warpgroup must execute it.
#ifdef NEMO_EMU
template <int REGS>
__device__ __forceinline__ void setmaxnreg_dec() {}
template <int REGS>
__device__ __forceinline__ void setmaxnreg_inc() {}
#else
template <int REGS>
__device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(REGS)); }
template <int REGS>
__device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(REGS)); }
#endif

// d[64 x 256] += A[64 x 16] . B[256 x 16]^T for one warpgroup, both operands K-major in shared
// memory, f32 accumulators in the mma.sync C layout: d[4 * j + r] is row
// 16 * warp + lane / 4 + 8 * (r / 2), column 8 * j + 2 * (lane % 4) + r % 2 (warp and lane within
// the warpgroup). The 128 operands are written out; this is what the instruction takes.
__device__ __forceinline__ void wgmma_m64n256k16(float (&d)[128], uint64_t desc_a, uint64_t desc_b) {
#ifdef NEMO_EMU
    emu::wgmma_m64n256k16_bf16(d, desc_a, desc_b);
#else
    asm volatile(
        "{\n"
        ".reg .pred scale_d;\n"
        "setp.ne.b32 scale_d, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
        "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
        "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
        "%128, %129, scale_d, 1, 1, 0, 0;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(desc_a), "l"(desc_b), "r"(1));
#endif
}

// ---- wgmma shapes for attention (kernels/attention_prefill_wgmma.cu) ----
// Accumulator layouts as wgmma_m64n256k16 (d[4j + r]: row 16 * warp + lane / 4 + 8 * (r / 2),
// column 8j + 2 * (lane % 4) + r % 2). "rs": A from registers in the mma.sync A layout of each
// warp's 16 rows (a[0] = (g, 2t..2t+1), a[1] = (g+8, ..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..));
// "_nb": B N-major (imm-trans-b = 1). Generated, one operand per accumulator.

// d[64 x 128] += A[64 x 16] . B[128 x 16]^T, both K-major in shared memory.
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
#ifdef NEMO_EMU
    emu::wgmma_bf16(d, 128, nullptr, desc_a, desc_b, false);
#else
    asm volatile(
        "{\n"
        ".reg .pred scale_d;\n"
        "setp.ne.b32 scale_d, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, %64, %65, scale_d, 1, 1, 0, 0;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(desc_a), "l"(desc_b), "r"(1));
#endif
}

// d[64 x 128] += A[64 x 16] (registers) . B[16 x 128] (N-major in shared memory).
__device__ __forceinline__ void wgmma_m64n128k16_rs_nb(float (&d)[64], const uint32_t a[4], uint64_t desc_b) {
#ifdef NEMO_EMU
    emu::wgmma_bf16(d, 128, a, 0, desc_b, true);
#else
    asm volatile(
        "{\n"
        ".reg .pred scale_d;\n"
        "setp.ne.b32 scale_d, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, {%64, %65, %66, %67}, %68, scale_d, 1, 1, 1;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
#endif
}

// d[64 x 64] += A[64 x 16] (registers) . B[16 x 64] (N-major in shared memory).
__device__ __forceinline__ void wgmma_m64n64k16_rs_nb(float (&d)[32], const uint32_t a[4], uint64_t desc_b) {
#ifdef NEMO_EMU
    emu::wgmma_bf16(d, 64, a, 0, desc_b, true);
#else
    asm volatile(
        "{\n"
        ".reg .pred scale_d;\n"
        "setp.ne.b32 scale_d, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
        "}, {%32, %33, %34, %35}, %36, scale_d, 1, 1, 1;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
#endif
}
