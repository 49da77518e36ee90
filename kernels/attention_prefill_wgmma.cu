// Causal GQA prefill attention on Hopper's wgmma, K/V tiles fed by TMA straight from the paged
// cache: the FlashAttention-3 structure (warp specialisation, TMA, wgmma with P from registers),
// without its ping-pong scheduling yet. Same AttentionParams, paged metadata and results as
// attention_prefill.cu.
//
// Bound by arithmetic: at L = 8192 Nemo's 32 heads x 40 layers need 17.6 TFLOP of causal
// attention, ~22 ms at the H100's ~800 TFLOP/s; attention_prefill.cu (mma.sync) measured 152
// TFLOP/s at 8k; FlashAttention-3 reaches ~600.
//
// Structure (one block = 128 query rows of one KV head = 128 / G positions x the G query heads
// sharing every K/V tile; 384 threads):
//   all threads: load the block's Q rows into shared memory, 128-byte swizzled (K-major for wgmma).
//   warpgroup 0 (producer): one thread walks the sequence's block table and issues, per 128-key
//     tile, 8 cache blocks x (K, V) x head_dim / 64 TMA boxes of [16 keys x 64 dims] into a
//     2-stage ring (full / empty mbarriers, as gemm_wgmma.cu).
//   warpgroups 1, 2 (consumers): rows 0-63 / 64-127. Per tile: S = Q K^T (wgmma m64n128k16, both
//     operands from shared memory), causal mask and online softmax on the accumulators (exp2
//     domain), O += P V (wgmma m64n{head_dim}k16 with P converted in registers to the A operand and
//     V read N-major), then the stage is released.
// The next steps of FA3 (two consumers in ping-pong, S of tile j+1 issued before the softmax of
// tile j) overlap the softmax with the tensor cores; docs/hopper.md.
#include "attention_common.cuh"
#include "wgmma.cuh"

namespace {
constexpr int ROWS = 128, KT = 128, STAGES = 2, BLOCK_KEYS = 16;
constexpr int CONSUMERS = 2, THREADS = 128 * (1 + CONSUMERS);
}  // namespace

// Mirrored by `PrefillWgmmaParams` in src/gpu/kernels/attention_wgmma.rs; sizes asserted on both sides.
struct PrefillWgmmaParams {
    TensorMap k_map;       // the layer's K cache as [n_slots, n_kv_heads * head_dim] bf16, box [16 x 64]
    TensorMap v_map;       // the layer's V cache, likewise
    AttentionParams attn;  // as attention_prefill.cu (block_size must be 16)
};
static_assert(sizeof(PrefillWgmmaParams) == 384, "mirror of PrefillWgmmaParams in attention_wgmma.rs");

// Shared-memory layout: [head_dim / 64 halves][rows][128 bytes], each 128-byte row swizzled by
// its row index (the TMA / wgmma 128-byte swizzle), every half 1024-byte aligned.
template <int HD>
struct Layout {
    static constexpr int HALVES = HD / 64;
    static constexpr int Q_BYTES = HALVES * ROWS * 128;
    static constexpr int TILE_BYTES = HALVES * KT * 128;  // one of K or V
    static constexpr int STAGE_BYTES = 2 * TILE_BYTES;
    static constexpr int SMEM_BYTES = 1024 + Q_BYTES + STAGES * STAGE_BYTES + 2 * STAGES * 8;
};

template <int HD>
__device__ void attention_prefill_wgmma(const PrefillWgmmaParams& params) {
    using L = Layout<HD>;
    const AttentionParams& p = params.attn;
    DYNAMIC_SHARED(unsigned char, smem_raw);
    const uint32_t base = (shared_addr(smem_raw) + 1023) & ~1023u;
    const uint32_t sQ = base, stages = base + L::Q_BYTES;
    const uint32_t full = stages + STAGES * L::STAGE_BYTES, empty = full + STAGES * 8;

    const int seq = blockIdx.z, kv_head = blockIdx.y;
    const int q0 = p.cu_seqlens_q[seq], q_len = p.cu_seqlens_q[seq + 1] - q0;
    const int group = p.n_heads / p.n_kv_heads;
    const int pos_per_block = ROWS / group;
    // Longest blocks (latest positions) first: causal work grows with the position.
    const int local_begin = (gridDim.x - 1 - blockIdx.x) * pos_per_block;
    if (local_begin >= q_len) return;
    const int first_pos = p.ctx_lens[seq] - q_len;
    const int n_rows = min(pos_per_block, q_len - local_begin) * group;
    const int n_keys = first_pos + local_begin + n_rows / group;  // keys the last row sees
    const int n_tiles = (n_keys + KT - 1) / KT;

    // Q rows r = position-major, head-minor, as attention_prefill.cu; padding rows zero.
    for (int idx = threadIdx.x; idx < ROWS * HD / 8; idx += THREADS) {
        const int r = idx / (HD / 8), c = idx % (HD / 8);
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < n_rows) {
            const int local = local_begin + r / group, head = kv_head * group + r % group;
            v = *reinterpret_cast<const uint4*>(p.q + (size_t)(q0 + local) * p.q_stride + head * HD + c * 8);
        }
        const uint32_t addr = sQ + (c / 8) * ROWS * 128 + r * 128 + (((c % 8) ^ (r % 8)) << 4);
        *reinterpret_cast<uint4*>(smem_raw + (addr - shared_addr(smem_raw))) = v;
    }
    fence_proxy_async_shared();  // the st.shared above are read by wgmma (the async proxy)
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbarrier_init(full + 8 * s, 1);                // the producer's arrive.expect_tx
            mbarrier_init(empty + 8 * s, CONSUMERS * 4);   // one arrival per consumer warp
        }
        mbarrier_init_fence();
    }
    __syncthreads();

    // Through a shuffle so that ptxas knows the role is warp-uniform: without it, the wgmmas of the
    // consumers sit on a "divergent path" and are serialised (ptxas C7520).
    const int warpgroup = __shfl_sync(0xffffffffu, threadIdx.x / 128, 0);
    if (warpgroup == 0) {
        if (threadIdx.x == 0) {
            const int32_t* table = p.block_tables + (size_t)seq * p.max_blocks;
            const int last_block = (n_keys - 1) / BLOCK_KEYS;  // blocks past it would be unused ids
            for (int t = 0; t < n_tiles; ++t) {
                const int s = t % STAGES;
                mbarrier_wait(empty + 8 * s, ((t / STAGES) & 1) ^ 1);  // round 0: returns at once
                mbarrier_arrive_expect_tx(full + 8 * s, L::STAGE_BYTES);
                const uint32_t k_tile = stages + s * L::STAGE_BYTES, v_tile = k_tile + L::TILE_BYTES;
                for (int b = 0; b < KT / BLOCK_KEYS; ++b) {
                    // Keys past the sequence's last block reread it: finite values the mask drops.
                    const int block = table[min(t * (KT / BLOCK_KEYS) + b, last_block)];
                    for (int h = 0; h < L::HALVES; ++h) {
                        const uint32_t off = h * KT * 128 + b * BLOCK_KEYS * 128;
                        tma_load_2d(k_tile + off, &params.k_map, kv_head * HD + h * 64, block * BLOCK_KEYS, full + 8 * s);
                        tma_load_2d(v_tile + off, &params.v_map, kv_head * HD + h * 64, block * BLOCK_KEYS, full + 8 * s);
                    }
                }
            }
        }
        return;
    }

    const int consumer = warpgroup - 1;
    const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32, t4 = lane % 4;
    // This thread's two rows (h = 0, 1) and their absolute positions; -1 = padding.
    int row_pos[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int r = 64 * consumer + 16 * warp + lane / 4 + 8 * h;
        row_pos[h] = r < n_rows ? first_pos + local_begin + r / group : -1;
    }
    float o[HD / 2];
#pragma unroll
    for (int i = 0; i < HD / 2; ++i) o[i] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};

    for (int t = 0; t < n_tiles; ++t) {
        const int s = t % STAGES;
        mbarrier_wait(full + 8 * s, (t / STAGES) & 1);
        const uint32_t k_tile = stages + s * L::STAGE_BYTES, v_tile = k_tile + L::TILE_BYTES;

        // S = Q K^T: 64 rows x 128 keys; s_acc[4j + r] is row 16*warp + lane/4 + 8*(r/2), key
        // t*KT + 8j + 2*t4 + r%2.
        float s_acc[KT / 2];
#pragma unroll
        for (int i = 0; i < KT / 2; ++i) s_acc[i] = 0.f;
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk) {
            // +32 bytes per 16-wide slice of head_dim inside a 64-wide half: +2 descriptor units.
            const uint64_t dq = wgmma_desc_k_major_sw128(sQ + (kk / 4) * ROWS * 128 + consumer * 64 * 128) + 2 * (kk % 4);
            const uint64_t dk = wgmma_desc_k_major_sw128(k_tile + (kk / 4) * KT * 128) + 2 * (kk % 4);
            wgmma_m64n128k16_ss(s_acc, dq, dk);
        }
        wgmma_commit();
        wgmma_wait<0>();
        fence_registers(s_acc);

        // Causal mask and online softmax (log2 domain), as attention_prefill.cu.
        float alpha[2];
        causal_online_softmax(reinterpret_cast<float (&)[KT / 8][4]>(s_acc), t * KT, row_pos, p.scale_log2, row_max, row_sum, alpha);
#pragma unroll
        for (int j = 0; j < HD / 8; ++j) {
            o[4 * j + 0] *= alpha[0];
            o[4 * j + 1] *= alpha[0];
            o[4 * j + 2] *= alpha[1];
            o[4 * j + 3] *= alpha[1];
        }

        // O += P V: P (bf16) as the register A operand, 16 keys per wgmma, all converted before the
        // first wgmma (else ptxas fences every one); V N-major: 128-byte rows of 64 dims per key,
        // 8-key groups 1024 bytes apart, the two 64-dim halves a tile-half apart.
        uint32_t pa[KT / 16][4];
#pragma unroll
        for (int kk = 0; kk < KT / 16; ++kk) {
            pa[kk][0] = pack_bf16(s_acc[8 * kk + 0], s_acc[8 * kk + 1]);
            pa[kk][1] = pack_bf16(s_acc[8 * kk + 2], s_acc[8 * kk + 3]);
            pa[kk][2] = pack_bf16(s_acc[8 * kk + 4], s_acc[8 * kk + 5]);
            pa[kk][3] = pack_bf16(s_acc[8 * kk + 6], s_acc[8 * kk + 7]);
        }
        fence_registers(o);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < KT / 16; ++kk) {
            const uint64_t dv = wgmma_desc_sw128(v_tile + kk * 16 * 128, KT * 128, 1024);
            if constexpr (HD == 128) wgmma_m64n128k16_rs_nb(o, pa[kk], dv);
            else wgmma_m64n64k16_rs_nb(o, pa[kk], dv);
        }
        wgmma_commit();
        wgmma_wait<0>();
        fence_registers(o);
        __syncwarp();
        if (lane == 0) mbarrier_arrive(empty + 8 * s);  // this warp is done with the stage
    }

    // Normalise and store. o[4j + 2h + e]: row h, dim 8j + 2*t4 + e.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float sum = row_sum[h];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const int r = 64 * consumer + 16 * warp + lane / 4 + 8 * h;
        if (r >= n_rows) continue;
        const float inv = 1.f / sum;
        const int local = local_begin + r / group, head = kv_head * group + r % group;
        bf16* dst = p.out + (size_t)(q0 + local) * p.n_heads * HD + head * HD;
#pragma unroll
        for (int j = 0; j < HD / 8; ++j)
            *reinterpret_cast<__nv_bfloat162*>(dst + 8 * j + 2 * t4) =
                __floats2bfloat162_rn(o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv);
    }
}

// Grid: (ceil(max q_len / (128 / G)), n_kv_heads, n_seqs); 384 threads; dynamic shared memory
// Layout<head_dim>::SMEM_BYTES (165,920 bytes at head_dim 128, 83,000 at 64).
extern "C" __global__ void __launch_bounds__(THREADS, 1)
attention_prefill_wgmma_bf16_hd128(const __grid_constant__ PrefillWgmmaParams p) {
    attention_prefill_wgmma<128>(p);
}

extern "C" __global__ void __launch_bounds__(THREADS, 1)
attention_prefill_wgmma_bf16_hd64(const __grid_constant__ PrefillWgmmaParams p) {
    attention_prefill_wgmma<64>(p);
}
