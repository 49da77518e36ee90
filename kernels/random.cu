// Seeded random fill for `--dummy-weights`: out[i] = uniform(-scale, scale) from a counter-based
// hash of (seed, i), so the same seed gives the same weights on any GPU and launch shape.
// Bound by memory (one write per element: 24 GB of Nemo weights in ~10 ms at 3 TB/s).
#include "common.cuh"

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

extern "C" __global__ void fill_uniform_bf16(
    bf16* __restrict__ out,  // [n]
    uint64_t n,
    uint64_t seed,
    float scale) {
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x) {
        const uint64_t r = splitmix64(seed ^ splitmix64(i));
        const float u = (float)(r >> 40) * (1.0f / 16777216.0f);  // [0, 1)
        out[i] = __float2bfloat16((2.f * u - 1.f) * scale);
    }
}
