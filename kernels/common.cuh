// Shared device helpers: bf16 vector access and reductions.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

// The launch's dynamic shared memory as `type name[]` (the emulator, kernels/emu/emu.h, has its own).
#ifndef DYNAMIC_SHARED
#define DYNAMIC_SHARED(type, name) extern __shared__ __align__(128) type name[]
#endif

// 8 bf16 = 16 bytes: the widest single load/store a thread can issue.
struct __align__(16) bf16x8 {
    __nv_bfloat162 h[4];
};

__device__ __forceinline__ void unpack8(const bf16x8& v, float out[8]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        float2 f = __bfloat1622float2(v.h[i]);
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
    }
}

__device__ __forceinline__ bf16x8 pack8(const float in[8]) {
    bf16x8 v;
#pragma unroll
    for (int i = 0; i < 4; ++i) v.h[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
    return v;
}

// Two floats as the bf16 pair of one 32-bit register (lo in the low half): an mma A fragment.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

// Sum over the whole block; every thread gets the result. `scratch` holds >= 32 floats.
__device__ __forceinline__ float block_sum(float x, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n_warps = (blockDim.x + 31) >> 5;
    x = warp_sum(x);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    x = lane < n_warps ? scratch[lane] : 0.f;
    return warp_sum(x);
}

// 16-byte load of 8 bf16 at `p` (16-byte aligned) through the coherent path, for data an
// earlier kernel wrote. (Reading a bf16x8 through a pointer instead lets nvcc split it into four
// 4-byte loads: the GEMV's activation reads did, 4x the load instructions.)
__device__ __forceinline__ bf16x8 ld8(const bf16* p) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    bf16x8 v;
    *reinterpret_cast<uint4*>(&v) = u;
    return v;
}

// 16-byte store of 8 bf16 at `p` (16-byte aligned), one instruction (see ld8).
__device__ __forceinline__ void st8(bf16* p, const bf16x8& v) {
    *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(&v);
}

// 16-byte read-only load (ld.global.nc) of 8 bf16 at `p` (16-byte aligned).
__device__ __forceinline__ bf16x8 ldg8(const bf16* p) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    bf16x8 v;
    *reinterpret_cast<uint4*>(&v) = u;
    return v;
}
