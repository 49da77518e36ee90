// RoPE's rotation of one head, shared by rope_write_kv (rope.cu) and the decode attention that
// rotates its own new token (attention_decode.cu, DecodeRope). Both layouts: interleaved pairs
// (2i, 2i+1) or rotate-half pairs (i, i + head_dim/2); cos_sin[i] = (cos, sin) of pair i's angle.
#pragma once
#include "common.cuh"

// Rotates 4 consecutive pairs [i0, i0 + 4) of one head in `src`, writing them to `dst`
// (which may alias `src`).
__device__ __forceinline__ void rope_quad(const bf16* src, bf16* dst, const float2* cs, int i0,
                                          int half, bool rotate_half) {
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
        float x[8];
        unpack8(ld8(src + 2 * i0), x);
#pragma unroll
        for (int j = 0; j < 4; ++j) { a[j] = x[2 * j]; b[j] = x[2 * j + 1]; }
    }
    float ra[4], rb[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const float2 c = cs[i0 + j];
        ra[j] = a[j] * c.x - b[j] * c.y;
        rb[j] = b[j] * c.x + a[j] * c.y;
    }
    if (rotate_half) {
        __nv_bfloat162 l[2], h[2];
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            l[j] = __floats2bfloat162_rn(ra[2 * j], ra[2 * j + 1]);
            h[j] = __floats2bfloat162_rn(rb[2 * j], rb[2 * j + 1]);
        }
        *reinterpret_cast<uint2*>(dst + i0) = *reinterpret_cast<uint2*>(l);
        *reinterpret_cast<uint2*>(dst + i0 + half) = *reinterpret_cast<uint2*>(h);
    } else {
        float x[8];
#pragma unroll
        for (int j = 0; j < 4; ++j) { x[2 * j] = ra[j]; x[2 * j + 1] = rb[j]; }
        st8(dst + 2 * i0, pack8(x));
    }
}

