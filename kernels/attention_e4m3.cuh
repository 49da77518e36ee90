// The FP8 e4m3 cache's tiles for the tensor-core attention kernels (attention_prefill.cu,
// attention_decode_mma.cu; docs/fp8-kv.md): a tile's codes staged by cp.async at half the bf16
// bytes, converted exactly (every e4m3 value is a bf16 value) into the XOR-swizzled bf16 tile
// the mma loops read with ldmatrix; and each key's K and V scales, which the kernels apply to
// the score and probability columns. Also the swizzle both kernels' bf16 tiles use, and the
// decode kernels' fused write of a new token into the FP8 cache.
#pragma once
#include "attention_common.cuh"
#include "kv_e4m3.cuh"
#include "mma.cuh"

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile of HD bf16 per row, XOR-swizzled
// so that ldmatrix's 8 row reads at one logical chunk fall in 8 distinct bank groups.
template <int HD>
__device__ __forceinline__ uint32_t kv_tile_swz(int row, int chunk) {
    return row * (HD * 2) + ((chunk ^ (row & 7)) << 4);
}

// The codes of keys [first, first + KT) of sequence `seq` into the staging buffers sKc, sVc
// ([KT][HD] bytes each, unswizzled: the conversion reads them row by row); keys at or past `end`
// zero-filled.
template <int HD, int KT, int THREADS>
__device__ __forceinline__ void load_codes_tile(const AttentionParams& p, uint32_t sKc, uint32_t sVc, int seq, int kv_head,
                                                int first, int end) {
    constexpr int CH = HD / 16;  // 16-byte chunks of 16 codes per row
    const uint8_t* k_codes = reinterpret_cast<const uint8_t*>(p.k_cache);
    const uint8_t* v_codes = reinterpret_cast<const uint8_t*>(p.v_cache);
    for (int idx = threadIdx.x; idx < KT * CH; idx += THREADS) {
        const int r = idx / CH, c = idx % CH;
        const int pos = first + r;
        const bool valid = pos < end;
        const size_t off = valid ? kv_row_offset(p, seq, pos, kv_head, HD) + c * 16 : 0;
        cp_async16(sKc + r * HD + c * 16, k_codes + off, valid);
        cp_async16(sVc + r * HD + c * 16, v_codes + off, valid);
    }
}

// The K and V scales of key `pos` of sequence `seq`; 0 at or past `end` (such a key's probability
// is 0, and 0 x a free slot's NaN scale would not be).
__device__ __forceinline__ float2 key_scales(const AttentionParams& p, int seq, int kv_head, int pos, int end, int head_dim) {
    if (pos >= end) return make_float2(0.f, 0.f);
    const size_t at = kv_row_offset(p, seq, pos, kv_head, head_dim) / head_dim;
    return make_float2(p.k_scales[at], p.v_scales[at]);
}

// Staged codes ([KT][HD] bytes at `codes`) to the swizzled bf16 tile at `tile`.
template <int HD, int KT, int THREADS>
__device__ __forceinline__ void convert_codes_tile(const unsigned char* codes, unsigned char* tile) {
    constexpr int CH = HD / 16;
    for (int idx = threadIdx.x; idx < KT * CH; idx += THREADS) {
        const int r = idx / CH, c = idx % CH;
        const uint4 w = *reinterpret_cast<const uint4*>(codes + r * HD + c * 16);
        float x[16];
        e4m3x4_to_f32(w.x, x); e4m3x4_to_f32(w.y, x + 4); e4m3x4_to_f32(w.z, x + 8); e4m3x4_to_f32(w.w, x + 12);
        *reinterpret_cast<bf16x8*>(tile + kv_tile_swz<HD>(r, 2 * c)) = pack8(x);
        *reinterpret_cast<bf16x8*>(tile + kv_tile_swz<HD>(r, 2 * c + 1)) = pack8(x + 8);
    }
}

// write_new_kv for an FP8 cache: the new token's K and V rows of `kv_head` quantised by warp 0,
// head_dim / 8 lanes a row (K on the first, V on the next), as rope_write_kv_e4m3 does. The
// caller's __syncthreads orders the writes before the block reads them.
template <int HD>
__device__ __forceinline__ void write_new_kv_e4m3(const AttentionParams& p, const DecodeRope& r, int seq, int kv_head,
                                                  int token, int pos, const float2* cs) {
    constexpr int LANES = HD / 8;  // per row; 2 rows fit a warp for head_dim <= 128
    static_assert(2 * LANES <= 32, "a K and a V row in one warp");
    if (threadIdx.x >= 32) return;
    const bf16* k_row = p.q + (size_t)token * p.q_stride + p.n_heads * HD;  // [n_kv_heads][HD]
    const bf16* v_row = k_row + p.n_kv_heads * HD;
    const int which = threadIdx.x / LANES, lane = threadIdx.x % LANES;  // 0: K, 1: V, 2+: idle
    const bool active = which < 2;
    float x[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    const int row = which * p.n_kv_heads + kv_head;  // kv_lane_values's row numbering
    if (active) kv_lane_values(k_row, v_row, cs, row, p.n_kv_heads, HD, lane, r.rotate_half, x);
    const size_t at = kv_row_offset(p, seq, pos, kv_head, HD);  // in values; the scale's index is at / HD
    uint8_t* codes = reinterpret_cast<uint8_t*>(which == 0 ? r.k_cache : r.v_cache) + at;
    store_row_e4m3(x, lane, LANES, active, which == 0 && r.rotate_half, HD / 2, codes, (which == 0 ? r.k_scales : r.v_scales) + at / HD);
}
