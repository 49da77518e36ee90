// Shared by the attention kernels: the parameter block and paged-KV addressing.
#pragma once
#include "common.cuh"

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
    int32_t q_stride;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t max_blocks;
    int32_t block_size;
    int32_t n_seqs;
    int32_t n_splits;            // decode only
    float scale_log2;            // softmax scale * log2(e)
};
static_assert(sizeof(AttentionParams) == 104, "mirror of AttentionParams in attention.rs");

// The KV row of `kv_head` for position `pos` of sequence `seq`.
__device__ __forceinline__ size_t kv_row_offset(const AttentionParams& p, int seq, int pos, int kv_head,
                                                int head_dim) {
    const int block = p.block_tables[(size_t)seq * p.max_blocks + pos / p.block_size];
    const size_t slot = (size_t)block * p.block_size + pos % p.block_size;
    return (slot * p.n_kv_heads + kv_head) * head_dim;
}
