// Split-K flash-decoding on tensor cores, with K/V tiles streamed through a cp.async pipeline:
//   attention_decode_mma_bf16_hd{128,64}_g{G}: each block takes one (split of the context, KV
//     head, sequence) and the G query heads of that KV head, ending as attention_decode.cu
//     does (finish_split, attention_common.cuh: partials, merged by the last split block).
//
// Bound by memory: every K and V row of the context is read once per KV head (at 32k context
// Nemo reads 134 MB per layer, ~45 us at 3 TB/s). The CUDA-core kernel (attention_decode.cu)
// measured 37-43 % of the copy bandwidth on an H100: at batch 1 its 264 blocks give each SM
// 8 warps, and its P.V loop has one 8-byte load per lane in flight. Here each block keeps
// STAGES - 1 = 2 tiles of 64 keys (K and V: 64 KB at head_dim 128) in flight with cp.async, so
// two blocks per SM hold ~128 KB of loads against the ~23 KB per SM that Little's law asks at
// 3 TB/s; the arithmetic rides mma.sync: the G query heads are the rows of a 16-row A operand
// (rows >= G are zero), K tiles the B operand of S = Q K^T and V tiles (ldmatrix.trans) that of
// O += P V, exactly as in attention_prefill.cu. Each of the 4 warps owns 16 keys of a tile and
// its own online-softmax state; the warps merge through shared memory at the end. With a
// DecodeRope it does RoPE and the cache write of its new tokens, as attention_decode.cu does.
//
// attention_decode_mma_e4m3_hd{128,64}_g{G}: the same over an FP8 e4m3 cache (docs/fp8-kv.md),
// as attention_prefill_e4m3 reads it (attention_e4m3.cuh): the ring holds codes (16 KB a stage
// of 64 K and V rows at head_dim 128, half of bf16's 32 KB), each landed tile is converted into
// one bf16 K/V tile for the mma loop, and each key's scales (loaded into registers with its
// codes, two tiles ahead) go beside it: K's on the scores, V's on the probabilities.
#include "attention_e4m3.cuh"
#include "grid_dependency.cuh"

namespace {
constexpr int KT = 64, STAGES = 3, THREADS = 128, QROWS = 16;
}

// Issues the copies of keys [first, first + KT) of this split (rows past `end` zero-filled).
template <int HD>
__device__ __forceinline__ void load_kv(const AttentionParams& p, uint32_t sK, uint32_t sV, int seq, int kv_head,
                                        int first, int end) {
    constexpr int CH = HD / 8;
    for (int idx = threadIdx.x; idx < KT * CH; idx += THREADS) {
        const int r = idx / CH, c = idx % CH;
        const int pos = first + r;
        const bool valid = pos < end;
        const size_t off = valid ? kv_row_offset(p, seq, pos, kv_head, HD) + c * 8 : 0;
        cp_async16(sK + kv_tile_swz<HD>(r, c), p.k_cache + off, valid);
        cp_async16(sV + kv_tile_swz<HD>(r, c), p.v_cache + off, valid);
    }
}

// Shared memory: Q (16 rows), then bf16: STAGES K and V tiles; FP8: STAGES staged K and V code
// tiles and one bf16 K and V tile.
template <int HD, int G, bool FP8 = false>
__device__ void attention_decode_mma(const AttentionParams& p, const DecodeRope& r) {
    static_assert(G <= 8, "the G query rows are the A operand's rows 0..7 (one half of a fragment)");
    grid_dependents_may_launch();
    grid_dependency_wait();  // q and this step's K/V come from rope_write_kv or the QKV GEMV
    constexpr int CH = HD / 8, TILE_BYTES = KT * HD * 2, CODES_BYTES = KT * HD, Q_BYTES = QROWS * HD * 2;
    DYNAMIC_SHARED(unsigned char, smem);
    const uint32_t sQ = smem_addr(smem);
    const uint32_t sKc = sQ + Q_BYTES, sVc = sKc + STAGES * CODES_BYTES;  // FP8 only
    const uint32_t sK = FP8 ? sVc + STAGES * CODES_BYTES : sQ + Q_BYTES;
    const uint32_t sV = FP8 ? sK + TILE_BYTES : sK + STAGES * TILE_BYTES;
    __shared__ float s_kscale[KT], s_vscale[KT];  // FP8: the current tile's scales

    const int split = blockIdx.x, kv_head = blockIdx.y, seq = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t4 = lane & 3;
    const int token = p.cu_seqlens_q[seq];
    const int ctx = p.ctx_lens[seq];
    const int per_split = (ctx + p.n_splits - 1) / p.n_splits;
    const int key_begin = min(ctx, split * per_split), key_end = min(ctx, key_begin + per_split);
    const int n_tiles = (key_end - key_begin + KT - 1) / KT;

    // Q rows 0..G-1 = the G heads of this KV head; rows G..15 zero. Copied with tile 0, or with
    // a DecodeRope (as attention_decode.cu does), rotated here and stored; then the block that
    // owns the new key writes it to the cache before any cp.async of this block reads it.
    if (r.cos_sin != nullptr) {
        const int pos = ctx - 1;
        if (pos >= r.max_positions) __trap();
        constexpr int QUADS = HD / 8, HALF = HD / 2;
        const float2* cs = r.cos_sin + (size_t)pos * HALF;
        const bf16* q_row = p.q + (size_t)token * p.q_stride + kv_head * G * HD;
        for (int w = threadIdx.x; w < QROWS * QUADS; w += THREADS) {
            const int row = w / QUADS, i0 = (w % QUADS) * 4;
            bf16x8 v;
            *reinterpret_cast<uint4*>(&v) = make_uint4(0u, 0u, 0u, 0u);
            if (row < G) v = rope_quad_values(q_row + row * HD, cs, i0, HALF, r.rotate_half);
            if (r.rotate_half) {  // elements [i0, +4) and [i0 + HALF, +4): half chunks
                *reinterpret_cast<uint2*>(smem + kv_tile_swz<HD>(row, i0 / 8) + (i0 % 8) * 2) = reinterpret_cast<const uint2*>(&v)[0];
                *reinterpret_cast<uint2*>(smem + kv_tile_swz<HD>(row, (i0 + HALF) / 8) + ((i0 + HALF) % 8) * 2) =
                    reinterpret_cast<const uint2*>(&v)[1];
            } else {  // elements [2 i0, +8): chunk i0 / 4
                *reinterpret_cast<uint4*>(smem + kv_tile_swz<HD>(row, i0 / 4)) = *reinterpret_cast<const uint4*>(&v);
            }
        }
        if (key_begin <= pos && pos < key_end) {
            if constexpr (FP8) write_new_kv_e4m3<HD>(p, r, seq, kv_head, token, pos, cs);
            else write_new_kv<HD>(p, r, seq, kv_head, token, pos, cs);
        }
        __syncthreads();  // the new K/V row, before this block's cp.async reads it
    } else {
        for (int idx = threadIdx.x; idx < QROWS * CH; idx += THREADS) {
            const int row = idx / CH, c = idx % CH;
            const bool valid = row < G;
            const bf16* src = valid ? p.q + (size_t)token * p.q_stride + (kv_head * G + row) * HD + c * 8 : p.q;
            cp_async16(sQ + kv_tile_swz<HD>(row, c), src, valid);
        }
    }
    // FP8: this thread's key's scales (threads < KT) for the current tile and the two after it.
    float2 scales[STAGES] = {};
#pragma unroll
    for (int t = 0; t < STAGES - 1; ++t) {
        if (t < n_tiles) {
            if constexpr (FP8) {
                load_codes_tile<HD, KT, THREADS>(p, sKc + t * CODES_BYTES, sVc + t * CODES_BYTES, seq, kv_head, key_begin + t * KT, key_end);
                if (threadIdx.x < KT) scales[t] = key_scales(p, seq, kv_head, key_begin + t * KT + threadIdx.x, key_end, HD);
            } else {
                load_kv<HD>(p, sK + t * TILE_BYTES, sV + t * TILE_BYTES, seq, kv_head, key_begin + t * KT, key_end);
            }
        }
        cp_async_commit();  // possibly empty: group t always holds tile t
    }

    uint32_t qf[HD / 16][4];
    float o[HD / 8][4];
#pragma unroll
    for (int d = 0; d < HD / 8; ++d)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[d][e] = 0.f;
    // This thread's rows are g and g + 8; only g < G is real, so one softmax state suffices
    // (row g + 8 is padding, its scores are zeros and its results are never read).
    float row_max = -INFINITY, row_sum = 0.f;

    for (int tile = 0; tile < n_tiles; ++tile) {
        cp_async_wait<STAGES - 2>();  // tile `tile` (and Q) have landed for this thread...
        __syncthreads();              // ...and for every thread; stage (tile - 1) % STAGES is free
        const int next = tile + STAGES - 1;
        if (next < n_tiles) {
            const int st = next % STAGES;
            if constexpr (FP8) {
                load_codes_tile<HD, KT, THREADS>(p, sKc + st * CODES_BYTES, sVc + st * CODES_BYTES, seq, kv_head,
                                                 key_begin + next * KT, key_end);
                if (threadIdx.x < KT) scales[STAGES - 1] = key_scales(p, seq, kv_head, key_begin + next * KT + threadIdx.x, key_end, HD);
            } else {
                load_kv<HD>(p, sK + st * TILE_BYTES, sV + st * TILE_BYTES, seq, kv_head, key_begin + next * KT, key_end);
            }
        }
        cp_async_commit();
        const int st = tile % STAGES;
        if constexpr (FP8) {
            // The landed codes into the one bf16 tile (the last tile's mma reads of it ended
            // before the __syncthreads above), the tile's scales beside it; then the scales
            // move up a tile.
            const unsigned char* staged = smem + (sKc - sQ) + st * CODES_BYTES;
            convert_codes_tile<HD, KT, THREADS>(staged, smem + (sK - sQ));
            convert_codes_tile<HD, KT, THREADS>(staged + STAGES * CODES_BYTES, smem + (sV - sQ));
            if (threadIdx.x < KT) {
                s_kscale[threadIdx.x] = scales[0].x;
                s_vscale[threadIdx.x] = scales[0].y;
            }
#pragma unroll
            for (int t = 0; t < STAGES - 1; ++t) scales[t] = scales[t + 1];
            __syncthreads();
        }
        if (tile == 0) {
#pragma unroll
            for (int kk = 0; kk < HD / 16; ++kk) ldmatrix_x4(qf[kk], sQ + kv_tile_swz<HD>(lane & 15, kk * 2 + (lane >> 4)));
        }
        const uint32_t k_tile = FP8 ? sK : sK + st * TILE_BYTES, v_tile = FP8 ? sV : sV + st * TILE_BYTES;

        // S = Q K^T for this warp's 16 keys (tile rows warp*16 .. +15): s[j][e] is row
        // g + 8 * (e / 2), key warp*16 + 8j + 2*t4 + e % 2.
        float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk) {
            uint32_t b[4];
            ldmatrix_x4(b, k_tile + kv_tile_swz<HD>(warp * 16 + (lane & 7) + ((lane >> 4) << 3), kk * 2 + ((lane >> 3) & 1)));
            mma_bf16(s[0], qf[kk], b[0], b[1]);
            mma_bf16(s[1], qf[kk], b[2], b[3]);
        }

        // Online softmax of row g (log2 domain); keys past the split's end are masked. FP8: a
        // score times its key's K scale first.
        const int key0 = key_begin + tile * KT + warp * 16;
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                float& v = s[j][e];
                if constexpr (FP8) v *= s_kscale[warp * 16 + j * 8 + 2 * t4 + e];
                v = key0 + j * 8 + 2 * t4 + e < key_end ? v * p.scale_log2 : -INFINITY;
                tile_max = fmaxf(tile_max, v);
            }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
        const float new_max = fmaxf(row_max, tile_max);
        // No visible key yet (a warp whose keys all lie past the end): use 0 so exp2 gives 0.
        const float base = new_max == -INFINITY ? 0.f : new_max;
        const float alpha = exp2f(row_max - base);
        row_max = new_max;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                s[j][e] = exp2f(s[j][e] - base);
                sum += s[j][e];
            }
        row_sum = row_sum * alpha + sum;
        if constexpr (FP8) {  // the probabilities as V meets them (the row sum keeps them plain)
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int e = 0; e < 2; ++e) s[j][e] *= s_vscale[warp * 16 + j * 8 + 2 * t4 + e];
        }

        // O += P V: P (16 rows x this warp's 16 keys) as the A fragment (padding rows zero),
        // V rows of those keys via ldmatrix.trans.
        uint32_t pa[4];
        pa[0] = pack_bf16(s[0][0], s[0][1]);
        pa[1] = 0u;
        pa[2] = pack_bf16(s[1][0], s[1][1]);
        pa[3] = 0u;
#pragma unroll
        for (int dp = 0; dp < HD / 16; ++dp) {
            o[2 * dp][0] *= alpha;
            o[2 * dp][1] *= alpha;
            o[2 * dp + 1][0] *= alpha;
            o[2 * dp + 1][1] *= alpha;
            uint32_t b[4];
            ldmatrix_x4_trans(b, v_tile + kv_tile_swz<HD>(warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, dp * 2 + (lane >> 4)));
            mma_bf16(o[2 * dp], pa, b[0], b[1]);
            mma_bf16(o[2 * dp + 1], pa, b[2], b[3]);
        }
    }
    cp_async_wait<0>();
    __syncthreads();  // the stages are reused below

    // Merge the warps: each holds (max, sum, o) for rows 0..G-1 over its keys.
    float* s_o = reinterpret_cast<float*>(smem);           // [4][G][HD]
    float* s_max = s_o + 4 * G * HD;                         // [4][G]
    float* s_sum = s_max + 4 * G;                            // [4][G]
    row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 1);
    row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 2);
    if (g < G) {
        if (t4 == 0) {
            s_max[warp * G + g] = row_max;
            s_sum[warp * G + g] = row_sum;
        }
#pragma unroll
        for (int d = 0; d < HD / 8; ++d) {
            s_o[(warp * G + g) * HD + d * 8 + 2 * t4] = o[d][0];
            s_o[(warp * G + g) * HD + d * 8 + 2 * t4 + 1] = o[d][1];
        }
    }
    __syncthreads();
    finish_split<HD, G, 4>(p, s_max, s_sum, s_o, seq, kv_head, split);
}

// Grid: (n_splits, n_kv_heads, n_seqs); 128 threads; dynamic shared memory
// (16 + 2 * STAGES * 64) * head_dim * 2 bytes (100 KiB at head_dim 128: two blocks per SM).
#define DECODE_MMA_KERNEL(HD, G)                                                                   \
    extern "C" __global__ void __launch_bounds__(THREADS) attention_decode_mma_bf16_hd##HD##_g##G( \
        const __grid_constant__ AttentionParams p, const __grid_constant__ DecodeRope r) {         \
        attention_decode_mma<HD, G>(p, r);                                                         \
    }
FOR_EACH_DECODE_SHAPE(DECODE_MMA_KERNEL)

// Grid as above; dynamic shared memory (16 * 2 + 2 * STAGES * 64 + 2 * 64 * 2) * head_dim bytes
// (84 KiB at head_dim 128).
#define DECODE_MMA_KERNEL_E4M3(HD, G)                                                              \
    extern "C" __global__ void __launch_bounds__(THREADS) attention_decode_mma_e4m3_hd##HD##_g##G( \
        const __grid_constant__ AttentionParams p, const __grid_constant__ DecodeRope r) {         \
        attention_decode_mma<HD, G, true>(p, r);                                                   \
    }
FOR_EACH_DECODE_SHAPE(DECODE_MMA_KERNEL_E4M3)
