// Shared by the attention kernels: the parameter block and paged-KV addressing.
#pragma once
#include "common.cuh"
#include "rope_common.cuh"

// Mirrored by `AttentionParams` in src/gpu/kernels/attention.rs; sizes asserted on both sides.
// A batch of sequences; sequence s contributes q_len = cu_seqlens_q[s+1] - cu_seqlens_q[s] new
// tokens, the last q_len of its ctx_lens[s] tokens (the rest is its cached prefix). New token i
// sits at position ctx_lens[s] - q_len + i and attends causally to positions 0..that position.
struct AttentionParams {
    const bf16* q;               // [n_tokens, q_stride]; head h at column h * head_dim
    const bf16* k_cache;         // [n_slots, n_kv_heads, head_dim]
    const bf16* v_cache;         // [n_slots, n_kv_heads, head_dim]
    bf16* out;                   // [n_tokens, n_heads * head_dim]
    const int32_t* cu_seqlens_q; // [n_seqs + 1]
    const int32_t* ctx_lens;     // [n_seqs]
    const int32_t* block_tables; // [n_seqs, max_blocks]: KV block ids; position j -> slot
                                 //   block_tables[s, j / block_size] * block_size + j % block_size
    float* partial_o;            // decode only: [n_seqs, n_heads, n_splits, head_dim]
    float* partial_ml;           // decode only: [n_seqs, n_heads, n_splits, 2] (max, sum)
    int32_t* split_counters;     // decode only: [n_seqs, n_kv_heads] split blocks done; 0 between
                                 //   launches (the last block of each resets its count)
    int32_t q_stride;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t max_blocks;
    int32_t block_size;
    int32_t n_seqs;
    int32_t n_splits;            // decode only
    float scale_log2;            // softmax scale * log2(e)
    // An FP8 e4m3 cache (docs/fp8-kv.md; the *_e4m3 decode kernels only): k_cache and v_cache
    // then hold codes, one byte a value, and a value is its code times its row's scale.
    const float* k_scales;       // [n_slots, n_kv_heads], or null for a bf16 cache
    const float* v_scales;       // [n_slots, n_kv_heads]
};
static_assert(sizeof(AttentionParams) == 128, "mirror of AttentionParams in attention.rs");

// The decode kernels' second parameter: with its table set, a decode kernel does rope_write_kv's
// work for its new tokens (attention_decode.cu says how).
// Mirrored by `DecodeRope` in src/gpu/kernels/attention.rs; sizes asserted on both sides.
// cos_sin null: q and the cache already hold the new token, rotated (rope_write_kv ran).
struct DecodeRope {
    const float2* cos_sin;  // [max_positions, head_dim / 2]: (cos, sin)
    bf16* k_cache;          // p.k_cache, writable: the new token's rotated K goes to its slot
    bf16* v_cache;          // p.v_cache, writable: and its V
    int32_t max_positions;  // positions (ctx_len - 1) at or past it trap
    int32_t rotate_half;    // 0: interleaved pairs, 1: rotate-half pairs
    // An FP8 cache (the *_e4m3 kernels): k_cache and v_cache hold codes, and the new rows'
    // scales go here (p.k_scales and p.v_scales, writable); null for bf16.
    float* k_scales;        // [n_slots, n_kv_heads]
    float* v_scales;        // [n_slots, n_kv_heads]
};
static_assert(sizeof(DecodeRope) == 48, "mirror of DecodeRope in attention.rs");


// Every (head_dim, G = query heads per KV head) the decode kernels are instantiated for, each
// kernel as `<name>_hd<HD>_g<G>`; src/gpu/kernels/decode_table.rs loads them by that name from
// the same list (DECODE_HEAD_DIMS, DECODE_GROUPS), and tests/ptx_resources.rs checks the two agree.
#define FOR_EACH_DECODE_SHAPE(X) \
    X(128, 1) X(128, 2) X(128, 3) X(128, 4) X(128, 8) X(64, 1) X(64, 2) X(64, 3) X(64, 4) X(64, 8)

// The KV row of `kv_head` for position `pos` of sequence `seq`.
__device__ __forceinline__ size_t kv_row_offset(const AttentionParams& p, int seq, int pos, int kv_head,
                                                int head_dim) {
    const int block = p.block_tables[(size_t)seq * p.max_blocks + pos / p.block_size];
    const size_t slot = (size_t)block * p.block_size + pos % p.block_size;
    return (slot * p.n_kv_heads + kv_head) * head_dim;
}

// Writes the new token at `pos` of sequence `seq` (qkv row `token`, read through p.q: k and v of
// each KV head follow the n_heads q heads) into the cache for one KV head: K rotated with `cs`
// (the position's cos/sin row), V as is. Every thread of the block takes part; the caller's
// __syncthreads orders the writes before the block reads them.
template <int HD>
__device__ __forceinline__ void write_new_kv(const AttentionParams& p, const DecodeRope& r, int seq, int kv_head, int token,
                                             int pos, const float2* cs) {
    constexpr int QUADS = HD / 8;
    const bf16* k_new = p.q + (size_t)token * p.q_stride + (p.n_heads + kv_head) * HD;
    const bf16* v_new = k_new + p.n_kv_heads * HD;
    const size_t row = kv_row_offset(p, seq, pos, kv_head, HD);
    for (int w = threadIdx.x; w < 2 * QUADS; w += blockDim.x) {
        if (w < QUADS) rope_quad(k_new, r.k_cache + row, cs, w * 4, HD / 2, r.rotate_half);
        else st8(r.v_cache + row + 8 * (w - QUADS), ld8(v_new + 8 * (w - QUADS)));
    }
}

// Causal mask and online-softmax update of one tile of scores held in the mma accumulator layout
// (s[j][r]: row g + 8 * (r / 2) of this thread's group, key key0 + 8j + 2 * (lane % 4) + r % 2):
// scales by scale_log2 (exp2 domain), drops keys past row_pos[h] (-1 marks a padding row), turns
// s into the unnormalised weights exp2(s - max), updates row_max / row_sum, and returns in
// alpha[h] the factor by which row h's output accumulators must be rescaled. MASK = false skips
// the mask, for tiles every row sees whole (keys below the block's first position).
template <bool MASK = true, int NJ>
__device__ __forceinline__ void causal_online_softmax(float (&s)[NJ][4], int key0, const int (&row_pos)[2], float scale_log2,
                                                      float (&row_max)[2], float (&row_sum)[2], float (&alpha)[2]) {
    const int t4 = threadIdx.x & 3;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        // Key 8j + e of this thread's columns is visible while 8j + e <= last: one register per
        // row, the left side an immediate (not 64 hoisted key indices eating registers).
        const int last = row_pos[h] - key0 - 2 * t4;
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < NJ; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                float& v = s[j][h * 2 + e];
                v = !MASK || 8 * j + e <= last ? v * scale_log2 : -INFINITY;
                tile_max = fmaxf(tile_max, v);
            }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
        const float new_max = fmaxf(row_max[h], tile_max);
        // A row with nothing visible yet keeps max -inf: use 0 so exp2 gives 0, not NaN.
        const float base = new_max == -INFINITY ? 0.f : new_max;
        alpha[h] = exp2f(row_max[h] - base);
        row_max[h] = new_max;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < NJ; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                float& v = s[j][h * 2 + e];
                v = exp2f(v - base);
                sum += v;
            }
        row_sum[h] = row_sum[h] * alpha[h] + sum;
    }
}

// The end of a split-K decode block: merges the WARPS per-warp online-softmax states of its G
// heads (s_max, s_sum: [WARPS][G]; s_o: [WARPS][G][HD] unnormalised outputs, in shared memory).
// With one split that is the answer, written to out. Otherwise the block writes its split's
// partial (max, sum, o[HD]) per head, and the last of the (sequence, KV head)'s split blocks to
// finish merges them all into out: CUDA's "last block" pattern (each block's writes, a fence, an
// atomic arrival; the last arrival fences again and reads every partial through L2), so no
// separate combine launch: 40 fewer launches a token, and no kernel boundary between the splits
// and their merge. The last block also puts the arrival count back to 0 for the next launch.
// An empty split (every max -inf) writes max -inf, sum 0, o 0, which the merge skips.
template <int HD, int G, int WARPS>
__device__ __forceinline__ void finish_split(const AttentionParams& p, const float* s_max, const float* s_sum,
                                             const float* s_o, int seq, int kv_head, int split) {
    const int token = p.cu_seqlens_q[seq];
    bf16* out = p.out + (size_t)token * p.n_heads * HD + kv_head * G * HD;  // [G][HD] of this KV head
    for (int i = threadIdx.x; i < G * HD; i += blockDim.x) {
        const int h = i / HD, d = i % HD;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) mx = fmaxf(mx, s_max[w * G + h]);
        float sum = 0.f, acc = 0.f;
        if (mx != -INFINITY) {
#pragma unroll
            for (int w = 0; w < WARPS; ++w) {
                const float scale = exp2f(s_max[w * G + h] - mx);
                sum += s_sum[w * G + h] * scale;
                acc += s_o[(w * G + h) * HD + d] * scale;
            }
        }
        if (p.n_splits == 1) {
            out[i] = __float2bfloat16(acc / sum);  // the whole context: sum > 0
            continue;
        }
        const size_t part = ((size_t)seq * p.n_heads + kv_head * G + h) * p.n_splits + split;
        p.partial_o[part * HD + d] = acc;
        if (d == 0) {
            p.partial_ml[part * 2] = mx;
            p.partial_ml[part * 2 + 1] = sum;
        }
    }
    if (p.n_splits == 1) return;

    __shared__ int is_last;
    __threadfence();  // this thread's partials, before the block's arrival
    __syncthreads();
    if (threadIdx.x == 0) {
        int* arrivals = p.split_counters + (size_t)seq * p.n_kv_heads + kv_head;
        is_last = atomicAdd(arrivals, 1) == p.n_splits - 1;
        if (is_last) *arrivals = 0;  // every split has arrived: ready for the next launch
        __threadfence();  // the other blocks' partials, before this block reads them
    }
    __syncthreads();
    if (!is_last) return;
    for (int i = threadIdx.x; i < G * HD; i += blockDim.x) {
        const int h = i / HD, d = i % HD;
        const size_t part0 = ((size_t)seq * p.n_heads + kv_head * G + h) * p.n_splits;
        float mx = -INFINITY;
        for (int s = 0; s < p.n_splits; ++s) mx = fmaxf(mx, __ldcg(&p.partial_ml[(part0 + s) * 2]));
        float sum = 0.f, acc = 0.f;
        for (int s = 0; s < p.n_splits; ++s) {
            const float ms = __ldcg(&p.partial_ml[(part0 + s) * 2]);
            if (ms == -INFINITY) continue;  // an empty split
            const float scale = exp2f(ms - mx);
            sum += __ldcg(&p.partial_ml[(part0 + s) * 2 + 1]) * scale;
            acc += __ldcg(&p.partial_o[(part0 + s) * HD + d]) * scale;
        }
        out[i] = __float2bfloat16(acc / sum);
    }
}
