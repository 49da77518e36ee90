// Writing one token's K or V row into an FP8 e4m3 cache (docs/fp8-kv.md), shared by
// rope_write_kv_e4m3 (rope.cu) and the decode kernel's fused write (attention_decode.cu), so
// both quantise bit for bit alike.
#pragma once
#include "fp8.cuh"
#include "rope_common.cuh"

// One KV head row held 8 values a lane by `lanes` consecutive lanes (a power of two up to 32,
// aligned to it): the row's amax by shuffles among them, then each lane's 8 codes and lane 0's
// f32 scale. `split_halves`: x[0..4) belongs at values [4 lane, +4) and x[4..8) half a row
// further (K in the rotate-half layout, as rope_quad_f32 orders it); else x is values
// [8 lane, +8). Every lane of the warp must call it (the shuffles take the whole warp); a lane
// with no row passes active = false and zeros.
__device__ __forceinline__ void store_row_e4m3(float (&x)[8], int lane, int lanes, bool active, bool split_halves,
                                               int half, uint8_t* codes_row, float* scale) {
    float amax = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) amax = fmaxf(amax, fabsf(x[j]));
    for (int offset = lanes / 2; offset > 0; offset >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
    if (!active) return;
    const float inv = amax > 0.f ? E4M3_MAX / amax : 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) x[j] *= inv;
    const uint32_t lo = e4m3x4_from_f32(x), hi = e4m3x4_from_f32(x + 4);
    if (split_halves) {
        *reinterpret_cast<uint32_t*>(codes_row + lane * 4) = lo;
        *reinterpret_cast<uint32_t*>(codes_row + lane * 4 + half) = hi;
    } else {
        *reinterpret_cast<uint2*>(codes_row + 8 * lane) = make_uint2(lo, hi);
    }
    if (lane == 0) *scale = amax / E4M3_MAX;
}

// This lane's 8 values of row `r` of a token's 2 * n_kv_heads K and V rows (K first): K rotated
// in f32 by the position's cos/sin row `cs`, V as read; `k_row`, `v_row`: the token's K and V
// (n_kv_heads x head_dim each, bf16) in the qkv buffer.
__device__ __forceinline__ void kv_lane_values(const bf16* k_row, const bf16* v_row, const float2* cs, int r, int n_kv_heads,
                                               int hd, int lane, bool rotate_half, float (&x)[8]) {
    if (r < n_kv_heads) rope_quad_f32(k_row + r * hd, cs, lane * 4, hd / 2, rotate_half, x);
    else unpack8(ld8(v_row + (r - n_kv_heads) * hd + 8 * lane), x);
}
