// Flash-style causal GQA attention for prefill (and prefill chunks over a cached prefix), reading
// K and V from the paged cache: out = softmax(q k^T * scale, causal) v, per query head.
//
// Bound by arithmetic at long prompts: causal attention over L tokens costs 4 * L^2/2 * head_dim
// FLOPs per query head - at L = 8192, Nemo's 32 heads x 40 layers need 17.6 TFLOP, ~22 ms at the
// H100's ~800 TFLOP/s; memory traffic is only q, k, v and out (Flash: S never reaches memory).
// This version: mma.sync.m16n8k16 (bf16 in, f32 accumulate), online softmax in registers (exp2
// domain), 64 keys per tile, K/V tiles double-buffered with cp.async in XOR-swizzled shared memory.
// A block of 4 warps owns 64 rows = (64 / G) query positions x the G query heads of one KV head, so
// the G heads share every K/V tile load (G = 4 for Nemo, 3 for SmolLM2). FlashAttention-3-style
// wgmma/TMA with softmax overlapped is the [hopper] step.
//
// attention_prefill_e4m3_hd{128,64}: the same over an FP8 e4m3 cache (docs/fp8-kv.md). The
// codes come by cp.async at half the bytes into a double-buffered staging area; once a tile has
// landed the block converts it (exactly: every e4m3 value is a bf16 value) into the one bf16 K/V
// tile the mma loop reads, and keeps the tile's 64 K and V scales in shared memory. A score is
// multiplied by its key's K scale before the softmax, a probability by its V scale after the
// row sums are taken, where it becomes an mma operand. The scales of tile t + 1 are loaded into
// registers when its codes are requested, so their latency hides under tile t.
#include "attention_e4m3.cuh"

namespace {
constexpr int ROWS = 64, KT = 64, THREADS = 128;
}

template <int HD>
__device__ __forceinline__ void load_kv_tile(const AttentionParams& p, uint32_t sK, uint32_t sV, int seq,
                                             int kv_head, int tile, int n_keys) {
    constexpr int CH = HD / 8;
    for (int idx = threadIdx.x; idx < KT * CH; idx += THREADS) {
        const int r = idx / CH, c = idx % CH;
        const int pos = tile * KT + r;
        const bool valid = pos < n_keys;
        const size_t off = valid ? kv_row_offset(p, seq, pos, kv_head, HD) + c * 8 : 0;
        cp_async16(sK + kv_tile_swz<HD>(r, c), p.k_cache + off, valid);
        cp_async16(sV + kv_tile_swz<HD>(r, c), p.v_cache + off, valid);
    }
}

// Shared memory: Q (ROWS x HD bf16), then bf16: K and V tiles, 2 stages each; FP8: the staged
// codes (K and V, 2 stages each, KT x HD bytes) and one bf16 K and V tile. Equal sizes.
template <int HD, bool FP8 = false>
__device__ void attention_prefill(const AttentionParams& p) {
    constexpr int CH = HD / 8, TILE_BYTES = KT * HD * 2, CODES_BYTES = KT * HD;
    DYNAMIC_SHARED(unsigned char, smem);
    const uint32_t sQ = smem_addr(smem);
    // bf16: stage s of K at sK + s * TILE_BYTES. FP8: sK, sV single tiles after the staging.
    const uint32_t sKc = sQ + ROWS * HD * 2, sVc = sKc + 2 * CODES_BYTES;
    const uint32_t sK = FP8 ? sVc + 2 * CODES_BYTES : sQ + ROWS * HD * 2;
    const uint32_t sV = FP8 ? sK + TILE_BYTES : sK + 2 * TILE_BYTES;
    __shared__ float s_kscale[KT], s_vscale[KT];  // FP8: the current tile's scales

    const int seq = blockIdx.z, kv_head = blockIdx.y;
    const int q0 = p.cu_seqlens_q[seq], q_len = p.cu_seqlens_q[seq + 1] - q0;
    const int group = p.n_heads / p.n_kv_heads;
    const int pos_per_block = ROWS / group;
    const int local_begin = blockIdx.x * pos_per_block;
    if (local_begin >= q_len) return;
    const int first_pos = p.ctx_lens[seq] - q_len;  // absolute position of new token 0
    const int n_rows = min(pos_per_block, q_len - local_begin) * group;
    const int n_keys = first_pos + local_begin + n_rows / group;  // keys the last row sees
    const int n_tiles = (n_keys + KT - 1) / KT;

    // Q rows r = position-major, head-minor: (local_begin + r / group, kv_head * group + r % group).
    for (int idx = threadIdx.x; idx < ROWS * CH; idx += THREADS) {
        const int r = idx / CH, c = idx % CH;
        const bool valid = r < n_rows;
        const bf16* src = p.q;
        if (valid) {
            const int local = local_begin + r / group, head = kv_head * group + r % group;
            src = p.q + (size_t)(q0 + local) * p.q_stride + head * HD + c * 8;
        }
        cp_async16(sQ + kv_tile_swz<HD>(r, c), src, valid);
    }
    float2 scales = make_float2(0.f, 0.f);  // FP8: this thread's key's scales, one tile ahead
    if constexpr (FP8) {
        load_codes_tile<HD, KT, THREADS>(p, sKc, sVc, seq, kv_head, 0, n_keys);
        if (threadIdx.x < KT) scales = key_scales(p, seq, kv_head, threadIdx.x, n_keys, HD);
    } else {
        load_kv_tile<HD>(p, sK, sV, seq, kv_head, 0, n_keys);
    }
    cp_async_commit();

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t4 = lane & 3;
    // The absolute positions of this thread's two rows (g and g + 8 of the warp); -1 = padding.
    int row_pos[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int r = warp * 16 + g + h * 8;
        row_pos[h] = r < n_rows ? first_pos + local_begin + r / group : -1;
    }

    uint32_t qf[HD / 16][4];
    float o[HD / 8][4];
#pragma unroll
    for (int d = 0; d < HD / 8; ++d)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[d][e] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};

    for (int tile = 0; tile < n_tiles; ++tile) {
        const int stage = tile & 1;
        float2 next_scales = make_float2(0.f, 0.f);
        if (tile + 1 < n_tiles) {
            if constexpr (FP8) {
                load_codes_tile<HD, KT, THREADS>(p, sKc + (stage ^ 1) * CODES_BYTES, sVc + (stage ^ 1) * CODES_BYTES, seq,
                                                 kv_head, (tile + 1) * KT, n_keys);
                if (threadIdx.x < KT) next_scales = key_scales(p, seq, kv_head, (tile + 1) * KT + threadIdx.x, n_keys, HD);
            } else {
                load_kv_tile<HD>(p, sK + (stage ^ 1) * TILE_BYTES, sV + (stage ^ 1) * TILE_BYTES, seq, kv_head,
                                 tile + 1, n_keys);
            }
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if constexpr (FP8) {
            // The landed codes into the one bf16 tile (free: the last tile's loop ended in a
            // __syncthreads), and the tile's scales beside it.
            const unsigned char* staged = smem + (sKc - sQ) + stage * CODES_BYTES;
            convert_codes_tile<HD, KT, THREADS>(staged, smem + (sK - sQ));
            convert_codes_tile<HD, KT, THREADS>(staged + 2 * CODES_BYTES, smem + (sV - sQ));
            if (threadIdx.x < KT) {
                s_kscale[threadIdx.x] = scales.x;
                s_vscale[threadIdx.x] = scales.y;
            }
            scales = next_scales;
            __syncthreads();
        }
        if (tile == 0) {
#pragma unroll
            for (int kk = 0; kk < HD / 16; ++kk)
                ldmatrix_x4(qf[kk], sQ + kv_tile_swz<HD>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4)));
        }
        const uint32_t k_tile = FP8 ? sK : sK + stage * TILE_BYTES, v_tile = FP8 ? sV : sV + stage * TILE_BYTES;

        // S = Q K^T for this warp's 16 rows x 64 keys.
        float s[KT / 8][4];
#pragma unroll
        for (int j = 0; j < KT / 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[j][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk) {
#pragma unroll
            for (int j = 0; j < KT / 16; ++j) {
                uint32_t b[4];
                ldmatrix_x4(b, k_tile + kv_tile_swz<HD>(j * 16 + (lane & 7) + ((lane >> 4) << 3), kk * 2 + ((lane >> 3) & 1)));
                mma_bf16(s[2 * j], qf[kk], b[0], b[1]);
                mma_bf16(s[2 * j + 1], qf[kk], b[2], b[3]);
            }
        }

        // Causal mask and online softmax (log2 domain). s[j][e]: row g + 8*(e/2), key
        // tile*64 + 8j + 2*t4 + e%2.
        if constexpr (FP8) {  // key 8j + 2 t4 + e % 2 of the tile: its K scale
#pragma unroll
            for (int j = 0; j < KT / 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[j][e] *= s_kscale[8 * j + 2 * t4 + (e & 1)];
        }
        float alpha[2];
        causal_online_softmax(s, tile * KT, row_pos, p.scale_log2, row_max, row_sum, alpha);
        if constexpr (FP8) {  // the probabilities as V meets them (the row sums keep them plain)
#pragma unroll
            for (int j = 0; j < KT / 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[j][e] *= s_vscale[8 * j + 2 * t4 + (e & 1)];
        }
#pragma unroll
        for (int d = 0; d < HD / 8; ++d) {
            o[d][0] *= alpha[0];
            o[d][1] *= alpha[0];
            o[d][2] *= alpha[1];
            o[d][3] *= alpha[1];
        }

        // O += P V: P (16 x 64) from the S accumulators as A fragments, V via ldmatrix.trans.
#pragma unroll
        for (int kk = 0; kk < KT / 16; ++kk) {
            uint32_t pa[4];
            pa[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < HD / 16; ++dp) {
                uint32_t b[4];
                ldmatrix_x4_trans(b, v_tile + kv_tile_swz<HD>(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, dp * 2 + (lane >> 4)));
                mma_bf16(o[2 * dp], pa, b[0], b[1]);
                mma_bf16(o[2 * dp + 1], pa, b[2], b[3]);
            }
        }
        __syncthreads();  // every warp is done with this stage before it is refilled
    }

    // Normalise and store. o[d][e]: row g + 8*(e/2), column 8d + 2*t4 + e%2.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float sum = row_sum[h];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const int r = warp * 16 + g + h * 8;
        if (r >= n_rows) continue;
        const float inv = 1.f / sum;
        const int local = local_begin + r / group, head = kv_head * group + r % group;
        bf16* dst = p.out + (size_t)(q0 + local) * p.n_heads * HD + head * HD;
#pragma unroll
        for (int d = 0; d < HD / 8; ++d)
            *reinterpret_cast<__nv_bfloat162*>(dst + d * 8 + 2 * t4) =
                __floats2bfloat162_rn(o[d][h * 2] * inv, o[d][h * 2 + 1] * inv);
    }
}

// Grid: (ceil(max q_len / (64 / G)), n_kv_heads, n_seqs); 128 threads; dynamic shared memory
// (64 + 4 * 64) * head_dim * 2 bytes.
extern "C" __global__ void __launch_bounds__(THREADS)
attention_prefill_bf16_hd128(const __grid_constant__ AttentionParams p) {
    attention_prefill<128>(p);
}

extern "C" __global__ void __launch_bounds__(THREADS)
attention_prefill_bf16_hd64(const __grid_constant__ AttentionParams p) {
    attention_prefill<64>(p);
}

extern "C" __global__ void __launch_bounds__(THREADS)
attention_prefill_e4m3_hd128(const __grid_constant__ AttentionParams p) {
    attention_prefill<128, true>(p);
}

extern "C" __global__ void __launch_bounds__(THREADS)
attention_prefill_e4m3_hd64(const __grid_constant__ AttentionParams p) {
    attention_prefill<64, true>(p);
}
