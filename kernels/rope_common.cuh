// RoPE's rotation of one head, shared by rope_write_kv (rope.cu) and the decode attention that
// rotates its own new token (attention_decode.cu, DecodeRope). Both layouts: interleaved pairs
// (2i, 2i+1) or rotate-half pairs (i, i + head_dim/2); cos_sin[i] = (cos, sin) of pair i's angle.
#pragma once
#include "common.cuh"

// The 4 consecutive pairs [i0, i0 + 4) of one head in `src`, rotated, in f32, in the order the
// layout stores them: rotate-half, x[0..4) = elements [i0, i0 + 4) and x[4..8) = [i0 + half,
// i0 + half + 4); interleaved, elements [2 i0, 2 i0 + 8).
__device__ __forceinline__ void rope_quad_f32(const bf16* src, const float2* cs, int i0, int half, bool rotate_half, float x[8]) {
    float a[4], b[4];  // pair members
    if (rotate_half) {
        const uint2 lo = *reinterpret_cast<const uint2*>(src + i0);
        const uint2 hi = *reinterpret_cast<const uint2*>(src + i0 + half);
        const __nv_bfloat162* l = reinterpret_cast<const __nv_bfloat162*>(&lo);
        const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&hi);
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            float2 fl = __bfloat1622float2(l[j]), fh = __bfloat1622float2(h[j]);
            a[2 * j] = fl.x; a[2 * j + 1] = fl.y;
            b[2 * j] = fh.x; b[2 * j + 1] = fh.y;
        }
    } else {
        float in[8];
        unpack8(ld8(src + 2 * i0), in);
#pragma unroll
        for (int j = 0; j < 4; ++j) { a[j] = in[2 * j]; b[j] = in[2 * j + 1]; }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const float2 c = cs[i0 + j];
        const float ra = a[j] * c.x - b[j] * c.y, rb = b[j] * c.x + a[j] * c.y;
        if (rotate_half) {
            x[j] = ra;
            x[4 + j] = rb;
        } else {
            x[2 * j] = ra;
            x[2 * j + 1] = rb;
        }
    }
}

// rope_quad_f32 rounded to bf16: bytes 0-7 and 8-15 as the layout stores them (see there).
__device__ __forceinline__ bf16x8 rope_quad_values(const bf16* src, const float2* cs, int i0, int half, bool rotate_half) {
    float x[8];
    rope_quad_f32(src, cs, i0, half, rotate_half, x);
    return pack8(x);
}

// Rotates 4 consecutive pairs [i0, i0 + 4) of one head in `src`, writing them to `dst`
// (which may alias `src`).
__device__ __forceinline__ void rope_quad(const bf16* src, bf16* dst, const float2* cs, int i0,
                                          int half, bool rotate_half) {
    const bf16x8 v = rope_quad_values(src, cs, i0, half, rotate_half);
    if (rotate_half) {
        *reinterpret_cast<uint2*>(dst + i0) = reinterpret_cast<const uint2*>(&v)[0];
        *reinterpret_cast<uint2*>(dst + i0 + half) = reinterpret_cast<const uint2*>(&v)[1];
    } else {
        st8(dst + 2 * i0, v);
    }
}
