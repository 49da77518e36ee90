// RMSNorm, optionally fused with the residual add that precedes it:
//   residual[t] += x[t];  out[t] = residual[t] * rsqrt(mean(residual[t]^2) + eps) * weight
//
// Bound by memory: per token it reads residual, x and weight and writes residual and out
// (5 * dim * 2 bytes = 50 KiB at dim 5120; the weight stays in L2), ~17 ns/token at 3 TB/s.
// Fusing the add saves one write and one read of the residual stream per norm.
// One block per token; the (bf16-rounded) row is kept in shared memory between the two passes,
// so dim * 4 bytes of dynamic shared memory (20 KiB at Nemo's dim), checked by the wrapper.
#include "common.cuh"
#include "grid_dependency.cuh"

template <bool ADD>
// The rows come from the kernel just before (which may still be finishing when this one starts:
// NEMO_PDL=1), so they are read through the coherent path: no `const __restrict__` on them, which
// would let nvcc use the read-only (non-coherent) loads it keeps for the weight.
__device__ __forceinline__ void rmsnorm_row(bf16* residual, const bf16* x,
                                            const bf16* __restrict__ weight, bf16* __restrict__ out,
                                            int dim, float eps) {
    grid_dependents_may_launch();  // the GEMV that reads `out` may launch behind it (NEMO_PDL=1)
    grid_dependency_wait();        // the residual comes from the GEMV just before
    DYNAMIC_SHARED(float, row);  // [dim]
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * dim;
    bf16* res = residual + base;
    const bf16* xs = ADD ? x + base : nullptr;

    float sum_sq = 0.f;
    for (int i = threadIdx.x; i < dim / 8; i += blockDim.x) {
        float r[8];
        unpack8(ld8(res + 8 * i), r);
        if (ADD) {
            float a[8];
            unpack8(ld8(xs + 8 * i), a);
#pragma unroll
            for (int j = 0; j < 8; ++j) r[j] += a[j];
            bf16x8 rounded = pack8(r);
            st8(res + 8 * i, rounded);
            unpack8(rounded, r);  // normalise the stored (bf16) residual, as the next layer sees it
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            row[i * 8 + j] = r[j];
            sum_sq += r[j] * r[j];
        }
    }
    const float rstd = rsqrtf(block_sum(sum_sq, scratch) / dim + eps);

    bf16* outs = out + base;
    for (int i = threadIdx.x; i < dim / 8; i += blockDim.x) {
        float w[8], o[8];
        unpack8(ldg8(weight + 8 * i), w);
#pragma unroll
        for (int j = 0; j < 8; ++j) o[j] = row[i * 8 + j] * rstd * w[j];
        st8(outs + 8 * i, pack8(o));
    }
}

extern "C" __global__ void rmsnorm_bf16(
    const bf16* input,                // [n_tokens, dim]
    const bf16* __restrict__ weight,  // [dim]
    bf16* __restrict__ out,           // [n_tokens, dim]
    int dim,                          // multiple of 8
    float eps) {
    rmsnorm_row<false>(const_cast<bf16*>(input), nullptr, weight, out, dim, eps);
}

extern "C" __global__ void fused_add_rmsnorm_bf16(
    bf16* residual,                   // [n_tokens, dim], updated in place: residual += x
    const bf16* x,                    // [n_tokens, dim]
    const bf16* __restrict__ weight,  // [dim]
    bf16* __restrict__ out,           // [n_tokens, dim]
    int dim,                          // multiple of 8
    float eps) {
    rmsnorm_row<true>(residual, x, weight, out, dim, eps);
}
