// The small-batch (decode) path of the linear layers: C[M, N] = A[M, K] . W[N, K]^T for M <= 8,
// with the same epilogues and fused gate/up layout as gemm.cu.
//
// Bound by memory: every weight is read exactly once per step, so at batch 1 Nemo's 40 layers
// (11.6 G parameters without the embedding = 23.3 GB with the LM head) take ~7.8 ms at 3 TB/s:
// the 128 tokens/s batch-1 roofline. Each warp owns output row(s) and streams its weight row
// with 16-byte loads, several in flight (unrolled by UNROLL); the M activation rows are read
// through L1 (they are tiny and shared by every warp). Rows of W are reduced across the warp
// with shuffles. The swiglu epilogue makes a warp compute a gate row and its up partner (8 rows
// apart in the interleaved layout) so silu(gate) * up is formed in registers.
#include "common.cuh"

namespace {
constexpr int MAX_M = 8;
constexpr int WARPS = 8;   // per block
constexpr int UNROLL = 4;  // 16-byte weight loads in flight per lane
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
};
static_assert(sizeof(GemvParams) == 64, "mirror of GemvParams in gemv.rs");

// acc[m] += dot(a[m, :], w_row) over this lane's share of K.
template <int M>
__device__ __forceinline__ void dot_rows(const GemvParams& p, const bf16* __restrict__ w_row, float acc[M]) {
    const int lane = threadIdx.x & 31;
    const int chunks = p.k / 8;
    int c = lane;
    for (; c + 32 * (UNROLL - 1) < chunks; c += 32 * UNROLL) {
        bf16x8 wv[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) wv[u] = ldg8(w_row + 8 * (c + 32 * u));
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            float wf[8];
            unpack8(wv[u], wf);
#pragma unroll
            for (int m = 0; m < M; ++m) {
                float af[8];
                unpack8(reinterpret_cast<const bf16x8*>(p.a + (size_t)m * p.lda)[c + 32 * u], af);
#pragma unroll
                for (int e = 0; e < 8; ++e) acc[m] += wf[e] * af[e];
            }
        }
    }
    for (; c < chunks; c += 32) {
        float wf[8];
        unpack8(ldg8(w_row + 8 * c), wf);
#pragma unroll
        for (int m = 0; m < M; ++m) {
            float af[8];
            unpack8(reinterpret_cast<const bf16x8*>(p.a + (size_t)m * p.lda)[c], af);
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[m] += wf[e] * af[e];
        }
    }
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = warp_sum(acc[m]);
}

__device__ __forceinline__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16(x)); }

template <int M>
__device__ void gemv_rows(const GemvParams& p) {
    const int warp_global = blockIdx.x * WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (p.epilogue == 2) {
        // Output column j: gate row 16*(j/8) + j%8, up row 8 further.
        const int j = warp_global;
        if (j >= p.n / 2) return;
        const int gate_row = (j >> 3) * 16 + (j & 7);
        float g[M] = {}, u[M] = {};
        dot_rows<M>(p, p.w + (size_t)gate_row * p.k, g);
        dot_rows<M>(p, p.w + (size_t)(gate_row + 8) * p.k, u);
        if (lane < M) {
            // Lane m writes row m (register arrays are indexed with constants only).
#pragma unroll
            for (int m = 0; m < M; ++m) {
                if (m != lane) continue;
                const float gv = round_bf16(g[m]), uv = round_bf16(u[m]);
                static_cast<bf16*>(p.out)[(size_t)m * p.ldo + j] = __float2bfloat16(gv / (1.f + __expf(-gv)) * uv);
            }
        }
        return;
    }
    const int n = warp_global;
    if (n >= p.n) return;
    float acc[M] = {};
    dot_rows<M>(p, p.w + (size_t)n * p.k, acc);
#pragma unroll
    for (int m = 0; m < M; ++m) {
        if (m != lane) continue;
        const size_t off = (size_t)m * p.ldo + n;
        float v = acc[m];
        if (p.epilogue == 3) {
            static_cast<float*>(p.out)[off] = v;
            continue;
        }
        if (p.epilogue == 1) v = __bfloat162float(p.residual[off]) + round_bf16(v);
        static_cast<bf16*>(p.out)[off] = __float2bfloat16(v);
    }
}

// One warp per output row (per output column for swiglu); M is dispatched to a compile-time
// row count so the accumulators stay in registers.
extern "C" __global__ void __launch_bounds__(WARPS * 32) gemv_bf16(const __grid_constant__ GemvParams p) {
    switch (p.m) {
        case 1: gemv_rows<1>(p); break;
        case 2: gemv_rows<2>(p); break;
        case 3: gemv_rows<3>(p); break;
        case 4: gemv_rows<4>(p); break;
        case 5: gemv_rows<5>(p); break;
        case 6: gemv_rows<6>(p); break;
        case 7: gemv_rows<7>(p); break;
        case MAX_M: gemv_rows<MAX_M>(p); break;
        default: __trap();  // the wrapper allows 1 <= m <= 8
    }
}
