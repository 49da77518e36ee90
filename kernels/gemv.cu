// The small-batch (decode) path of the linear layers: C[M, N] = A[M, K] . W[N, K]^T for M <= 8,
// with the same epilogues and fused gate/up layout as gemm.cu.
//
// Bound by memory: every weight is read exactly once per step, so at batch 1 Nemo's 40 layers
// (11.6 G parameters without the embedding = 23.3 GB with the LM head) take ~7.8 ms at 3 TB/s:
// the 128 tokens/s batch-1 roofline. Each warp owns 1-4 output columns and streams their weight
// rows with 16-byte loads, several in flight (UNROLL per warp); the M activation rows are read
// through L1 (they are tiny and shared by every warp), each chunk once for all the warp's rows.
// Rows of W are reduced across the warp with shuffles. The swiglu epilogue makes a warp compute
// gate rows and their up partners (8 rows apart in the interleaved layout) so silu(gate) * up is
// formed in registers.
//
// An RMSNorm can ride along (GemvNorm: the decode layer's two norms, the final one before the LM
// head): every warp reads all of A's rows anyway, so it also sums their squares and multiplies
// each element by the norm's gain as it goes, and scales its dot products by 1/rms at the end.
// That saves the norm's own launch and its write and re-read of A: 81 kernels a token at batch 1.
//
// Launched as a programmatic dependent (kernels/grid_dependency.cuh, `NEMO_PDL=1`): before its
// wait each warp asks L2 for the first PREFETCH_BYTES of its weight rows, so DRAM is busy
// while the kernel before it (a norm, attention, the previous GEMV) finishes; at ~20 us per
// small GEMV, the ~2-4 us gap between kernels is what keeps o and qkv at 77-83 % of the copy
// bandwidth (docs/gpu-runs.md, 820a75b).
#include "common.cuh"
#include "grid_dependency.cuh"

namespace {
constexpr int MAX_M = 8;
constexpr int WARPS = 8;   // per block
constexpr int UNROLL = 4;  // 16-byte weight loads in flight per lane
// Bytes of weights each warp prefetches before its dependency wait, split over its rows: with
// every warp resident (64 a SM on 132 SMs) 34 MB, inside the 50 MB L2.
constexpr uint32_t PREFETCH_BYTES = 4096;
}  // namespace

// Mirrored by `GemvParams` in src/gpu/kernels/gemv.rs; sizes asserted on both sides.
struct GemvParams {
    const bf16* a;        // [M, K] activations, row stride lda
    const bf16* w;        // [N, K] weight
    void* out;            // plain/residual: bf16 [M, N] (row stride ldo); swiglu: bf16 [M, N / 2];
                          // f32: float [M, N]
    const bf16* residual; // residual epilogue: [M, N] (row stride ldo), may equal out
    int32_t m, n, k;      // m <= 8; k % 8 == 0; n % 16 == 0 for swiglu
    int32_t lda, ldo;
    int32_t epilogue;     // 0 plain, 1 residual, 2 swiglu, 3 f32 (as in gemm.cu)
    int32_t tile_group;   // unused here (the GEMMs' block order); keeps the shared mirror
    int32_t k_splits;     // unused here (gemm.cu's split-K)
};
static_assert(sizeof(GemvParams) == 64, "mirror of GemvParams in gemv.rs");

// Mirrored by `GemvNorm` in src/gpu/kernels/gemv.rs: the RMSNorm applied to A's rows on the fly,
// A[m, :] * rsqrt(mean(A[m, :]^2) + eps) * weight, or none.
struct GemvNorm {
    const bf16* weight;  // [K] the norm's gain; null: A as it is
    float eps;
    int32_t unused;
};
static_assert(sizeof(GemvNorm) == 16, "mirror of GemvNorm in gemv.rs");

// Output columns per warp. With M > 1 every activation chunk read from L1 feeds several weight
// rows: with one, M = 8 spends ~150 instructions per 16-byte weight chunk (8 activation loads and
// unpacks, 64 FMAs), which at 3 TB/s needs ~4 warp instructions per clock per SM, the issue limit;
// the measured M = 8 GEMV ran at 29 % of the copy bandwidth (docs/gpu-runs.md, 820a75b).
template <int M>
__device__ constexpr int cols_per_warp(bool swiglu) {
    return M == 1 ? 1 : (M <= 3 ? 2 : (swiglu ? 2 : 4));
}

// acc[r][m] = dot(a[m, :], w[r]) for NR weight rows at once, summed over the warp; with NORM,
// dot(rmsnorm(a[m, :]), w[r]).
template <int M, int NR, bool NORM>
__device__ __forceinline__ void dot_rows(const GemvParams& p, const GemvNorm& norm, const bf16* const (&w)[NR],
                                         float (&acc)[NR][M]) {
    constexpr int U = UNROLL / NR > 0 ? UNROLL / NR : 1;  // chunks in flight per row
    const int lane = threadIdx.x & 31;
    const int chunks = p.k / 8;
    float sum_sq[M] = {};
    // A's 8 elements at chunk c of row m, times the norm's gain when there is one.
    const auto load_a = [&](float (&af)[8], int m, int c, const float (&gain)[8]) {
        unpack8(ld8(p.a + (size_t)m * p.lda + 8 * c), af);
        if constexpr (NORM) {
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                sum_sq[m] += af[e] * af[e];
                af[e] *= gain[e];
            }
        }
    };
    const auto load_gain = [&](float (&gain)[8], int c) {
        if constexpr (NORM) unpack8(ld8(norm.weight + 8 * c), gain);
    };
    int c = lane;
    for (; c + 32 * (U - 1) < chunks; c += 32 * U) {
        bf16x8 wv[U][NR];
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
            for (int r = 0; r < NR; ++r) wv[u][r] = ldg8(w[r] + 8 * (c + 32 * u));
#pragma unroll
        for (int u = 0; u < U; ++u) {
            float wf[NR][8], gain[8];
#pragma unroll
            for (int r = 0; r < NR; ++r) unpack8(wv[u][r], wf[r]);
            load_gain(gain, c + 32 * u);
#pragma unroll
            for (int m = 0; m < M; ++m) {
                float af[8];
                load_a(af, m, c + 32 * u, gain);
#pragma unroll
                for (int r = 0; r < NR; ++r)
#pragma unroll
                    for (int e = 0; e < 8; ++e) acc[r][m] += wf[r][e] * af[e];
            }
        }
    }
    for (; c < chunks; c += 32) {
        float wf[NR][8], gain[8];
#pragma unroll
        for (int r = 0; r < NR; ++r) unpack8(ldg8(w[r] + 8 * c), wf[r]);
        load_gain(gain, c);
#pragma unroll
        for (int m = 0; m < M; ++m) {
            float af[8];
            load_a(af, m, c, gain);
#pragma unroll
            for (int r = 0; r < NR; ++r)
#pragma unroll
                for (int e = 0; e < 8; ++e) acc[r][m] += wf[r][e] * af[e];
        }
    }
#pragma unroll
    for (int r = 0; r < NR; ++r)
#pragma unroll
        for (int m = 0; m < M; ++m) acc[r][m] = warp_sum(acc[r][m]);
    if constexpr (NORM) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
            const float inv_rms = rsqrtf(warp_sum(sum_sq[m]) / p.k + norm.eps);
#pragma unroll
            for (int r = 0; r < NR; ++r) acc[r][m] *= inv_rms;
        }
    }
}

__device__ __forceinline__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16(x)); }

// The start of every GEMV thread: lets the next kernel launch, prefetches the leading bytes of
// the warp's NR weight rows (lane r the row r) when the warp has columns, then waits for the
// kernel before (every thread, active or not: see grid_dependency.cuh).
template <int NR>
__device__ __forceinline__ void prefetch_then_wait(const GemvParams& p, const bf16* const (&w)[NR], bool active) {
    grid_dependents_may_launch();
    const int lane = threadIdx.x & 31;
    const uint32_t bytes = min((uint32_t)p.k * 2u, PREFETCH_BYTES / NR);  // multiples of 16
    if (active) {
#pragma unroll
        for (int r = 0; r < NR; ++r)
            if (lane == r) prefetch_l2(w[r], bytes);
    }
    grid_dependency_wait();
}

template <int M, bool NORM>
__device__ void gemv_rows(const GemvParams& p, const GemvNorm& norm) {
    const int warp_global = blockIdx.x * WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (p.epilogue == 2) {
        // Output columns j0 .. j0 + C - 1 (even j0, so they share a group of 8): gate rows
        // 16*(j/8) + j%8, up rows 8 further.
        constexpr int C = cols_per_warp<M>(true);
        const int j0 = warp_global * C;
        const bool active = j0 < p.n / 2;
        const bf16* rows[2 * C];
        float acc[2 * C][M] = {};
#pragma unroll
        for (int i = 0; i < C; ++i) {
            const int gate_row = ((j0 + i) >> 3) * 16 + ((j0 + i) & 7);
            rows[i] = p.w + (size_t)gate_row * p.k;
            rows[C + i] = p.w + (size_t)(gate_row + 8) * p.k;
        }
        prefetch_then_wait<2 * C>(p, rows, active);
        if (!active) return;
        dot_rows<M, 2 * C, NORM>(p, norm, rows, acc);
        // Lane m writes row m (register arrays are indexed with constants only).
#pragma unroll
        for (int m = 0; m < M; ++m) {
            if (m != lane) continue;
#pragma unroll
            for (int i = 0; i < C; ++i) {
                const float gv = round_bf16(acc[i][m]), uv = round_bf16(acc[C + i][m]);
                static_cast<bf16*>(p.out)[(size_t)m * p.ldo + j0 + i] = __float2bfloat16(gv / (1.f + __expf(-gv)) * uv);
            }
        }
        return;
    }
    constexpr int C = cols_per_warp<M>(false);
    const int n0 = warp_global * C;
    const bool active = n0 < p.n;
    const bf16* rows[C];
    float acc[C][M] = {};
#pragma unroll
    for (int i = 0; i < C; ++i) rows[i] = p.w + (size_t)(n0 + i) * p.k;
    prefetch_then_wait<C>(p, rows, active);
    if (!active) return;
    dot_rows<M, C, NORM>(p, norm, rows, acc);
#pragma unroll
    for (int m = 0; m < M; ++m) {
        if (m != lane) continue;
#pragma unroll
        for (int i = 0; i < C; ++i) {
            const size_t off = (size_t)m * p.ldo + n0 + i;
            float v = acc[i][m];
            if (p.epilogue == 3) {
                static_cast<float*>(p.out)[off] = v;
                continue;
            }
            if (p.epilogue == 1) v = __bfloat162float(p.residual[off]) + round_bf16(v);
            static_cast<bf16*>(p.out)[off] = __float2bfloat16(v);
        }
    }
}

template <int M>
__device__ __forceinline__ void gemv_rows(const GemvParams& p, const GemvNorm& norm) {
    if (norm.weight) gemv_rows<M, true>(p, norm);
    else gemv_rows<M, false>(p, norm);
}

// One warp per cols_per_warp<M> output columns (src/gpu/kernels/gemv.rs mirrors it in its grid);
// M is dispatched to a compile-time row count so the accumulators stay in registers. Two entry
// points, because registers are allocated per kernel: M = 1 (batch-1 decode, the bandwidth
// roofline path) keeps its low register count and occupancy; M = 2..8 uses ~100 registers.
extern "C" __global__ void __launch_bounds__(WARPS * 32)
    gemv_bf16(const __grid_constant__ GemvParams p, const __grid_constant__ GemvNorm norm) {
    if (p.m != 1) __trap();  // the wrapper sends M = 2..8 to gemv_multi_bf16
    gemv_rows<1>(p, norm);
}

extern "C" __global__ void __launch_bounds__(WARPS * 32)
    gemv_multi_bf16(const __grid_constant__ GemvParams p, const __grid_constant__ GemvNorm norm) {
    switch (p.m) {
        case 2: gemv_rows<2>(p, norm); break;
        case 3: gemv_rows<3>(p, norm); break;
        case 4: gemv_rows<4>(p, norm); break;
        case 5: gemv_rows<5>(p, norm); break;
        case 6: gemv_rows<6>(p, norm); break;
        case 7: gemv_rows<7>(p, norm); break;
        case MAX_M: gemv_rows<MAX_M>(p, norm); break;
        default: __trap();  // the wrapper allows 2 <= m <= 8 here
    }
}
