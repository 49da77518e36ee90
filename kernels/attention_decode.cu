// Split-K flash-decoding: one new token per sequence attends to its whole cached context.
//   attention_decode_bf16_hd{128,64}: each block takes one (split of the context, KV head,
//     sequence) and the G query heads of that KV head, writing an unnormalised partial
//     (max, sum, o[head_dim]) per head;
//   attention_decode_combine: merges the splits of each (sequence, head) into out.
//
// Bound by memory: every K and V row of the context is read once per KV head - at 32k context
// Nemo reads 32768 x 8 x 128 x 2 x 2 = 134 MB per layer, ~45 us at 3 TB/s - so the G query
// heads share each load, and the context is split across enough blocks to fill the GPU even for
// one sequence. Scores: each lane owns one key of a 32-key step and reads its whole K row (16 x
// 16-byte loads in flight), with q in shared memory (broadcast reads). P.V: the warp walks the 32
// keys, each lane owning head_dim/32 output dims, V rows read coalesced.
// Tensor-core decode (4 query heads together on mma) is the [hopper] step.
#include "attention_common.cuh"
#include "grid_dependency.cuh"

namespace {
constexpr int WARPS = 4;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

template <int HD, int G>
__device__ void attention_decode(const AttentionParams& p) {
    grid_dependents_may_launch();
    grid_dependency_wait();  // q and this step's K/V come from rope_write_kv (grid_dependency.cuh)
    constexpr int DPL = HD / 32;  // output dims per lane
    __shared__ float sq[G][HD];
    __shared__ float s_max[WARPS][G], s_sum[WARPS][G];
    __shared__ float s_o[WARPS][G][HD];

    const int split = blockIdx.x, kv_head = blockIdx.y, seq = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int token = p.cu_seqlens_q[seq];
    const int ctx = p.ctx_lens[seq];
    const int per_split = (ctx + p.n_splits - 1) / p.n_splits;
    const int key_begin = split * per_split, key_end = min(ctx, key_begin + per_split);

    for (int i = threadIdx.x; i < G * HD; i += WARPS * 32) {
        const int h = i / HD, d = i % HD;
        sq[h][d] = __bfloat162float(p.q[(size_t)token * p.q_stride + (kv_head * G + h) * HD + d]) * p.scale_log2;
    }
    __syncthreads();

    float m[G], l[G], o[G][DPL];
#pragma unroll
    for (int h = 0; h < G; ++h) {
        m[h] = -INFINITY;
        l[h] = 0.f;
#pragma unroll
        for (int d = 0; d < DPL; ++d) o[h][d] = 0.f;
    }

    for (int base = key_begin + warp * 32; base < key_end; base += WARPS * 32) {
        const int key = base + lane;
        const bool valid = key < key_end;
        const long long row = valid ? (long long)kv_row_offset(p, seq, key, kv_head, HD) : 0;
        float s[G];
#pragma unroll
        for (int h = 0; h < G; ++h) s[h] = 0.f;
        if (valid) {
            const bf16* k_row = p.k_cache + row;
#pragma unroll
            for (int c = 0; c < HD / 8; ++c) {
                float kf[8];
                unpack8(ld8(k_row + c * 8), kf);  // coherent: rope_write_kv just wrote this step's K
#pragma unroll
                for (int h = 0; h < G; ++h)
#pragma unroll
                    for (int e = 0; e < 8; ++e) s[h] += sq[h][c * 8 + e] * kf[e];
            }
        }
        float pr[G];
#pragma unroll
        for (int h = 0; h < G; ++h) {
            const float v = valid ? s[h] : -INFINITY;
            const float new_max = fmaxf(m[h], warp_max(v));  // finite: key `base` is valid
            const float alpha = exp2f(m[h] - new_max);
            pr[h] = valid ? exp2f(v - new_max) : 0.f;
            l[h] = l[h] * alpha + pr[h];
            m[h] = new_max;
#pragma unroll
            for (int d = 0; d < DPL; ++d) o[h][d] *= alpha;
        }
        const int n_valid = min(32, key_end - base);
        for (int j = 0; j < n_valid; ++j) {
            const long long vrow = __shfl_sync(0xffffffffu, row, j);
            const bf16* v_row = p.v_cache + vrow + lane * DPL;
            float vf[DPL];
            if constexpr (DPL == 4) {
                const uint2 u = *reinterpret_cast<const uint2*>(v_row);
                const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
                const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
                vf[0] = a.x; vf[1] = a.y; vf[2] = b.x; vf[3] = b.y;
            } else {
                const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(v_row));
                vf[0] = a.x; vf[1] = a.y;
            }
#pragma unroll
            for (int h = 0; h < G; ++h) {
                const float ph = __shfl_sync(0xffffffffu, pr[h], j);
#pragma unroll
                for (int d = 0; d < DPL; ++d) o[h][d] += ph * vf[d];
            }
        }
    }

    // Merge the warps: each holds (max, per-lane sums, o) per head.
#pragma unroll
    for (int h = 0; h < G; ++h) {
        const float sum = warp_sum(l[h]);
        if (lane == 0) {
            s_max[warp][h] = m[h];
            s_sum[warp][h] = sum;
        }
#pragma unroll
        for (int d = 0; d < DPL; ++d) s_o[warp][h][lane * DPL + d] = o[h][d];
    }
    __syncthreads();
    write_split_partials<HD, G, WARPS>(p, &s_max[0][0], &s_sum[0][0], &s_o[0][0][0], seq, kv_head, split);
}

// Grid: (n_splits, n_kv_heads, n_seqs); 128 threads. One kernel per (head_dim, G) so the
// per-head registers stay in registers.
#define DECODE_KERNEL(HD, G)                                                                       \
    extern "C" __global__ void __launch_bounds__(WARPS * 32)                                      \
        attention_decode_bf16_hd##HD##_g##G(const __grid_constant__ AttentionParams p) {           \
        attention_decode<HD, G>(p);                                                                \
    }
DECODE_KERNEL(128, 1)
DECODE_KERNEL(128, 2)
DECODE_KERNEL(128, 3)
DECODE_KERNEL(128, 4)
DECODE_KERNEL(128, 8)
DECODE_KERNEL(64, 1)
DECODE_KERNEL(64, 2)
DECODE_KERNEL(64, 3)
DECODE_KERNEL(64, 4)
DECODE_KERNEL(64, 8)

// out[token of seq, head] = sum_s o_s * 2^(m_s - M) / sum_s l_s * 2^(m_s - M).
// Grid: (n_heads, n_seqs); head_dim threads. The o projection's GEMV may launch behind it
// (grid_dependency.cuh).
extern "C" __global__ void attention_decode_combine(const __grid_constant__ AttentionParams p, int head_dim) {
    grid_dependents_may_launch();
    grid_dependency_wait();  // the partials of the decode kernel just before
    const int head = blockIdx.x, seq = blockIdx.y, d = threadIdx.x;
    const size_t part0 = ((size_t)seq * p.n_heads + head) * p.n_splits;
    float mx = -INFINITY;
    for (int s = 0; s < p.n_splits; ++s) mx = fmaxf(mx, p.partial_ml[(part0 + s) * 2]);
    float sum = 0.f, acc = 0.f;
    for (int s = 0; s < p.n_splits; ++s) {
        const float ms = p.partial_ml[(part0 + s) * 2];
        if (ms == -INFINITY) continue;  // an empty split
        const float scale = exp2f(ms - mx);
        sum += p.partial_ml[(part0 + s) * 2 + 1] * scale;
        acc += p.partial_o[(part0 + s) * head_dim + d] * scale;
    }
    const int token = p.cu_seqlens_q[seq];
    p.out[(size_t)token * p.n_heads * head_dim + head * head_dim + d] = __float2bfloat16(acc / sum);
}
