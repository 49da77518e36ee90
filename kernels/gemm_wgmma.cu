// Hopper GEMM for the linear layers: C[M, N] = A[M, K] . W[N, K]^T (bf16 in, f32 accumulate) on
// wgmma, fed by TMA through a ring of shared-memory stages that complete on mbarriers. Same
// epilogues, parameters and SwiGLU weight layout as gemm.cu (see there); this file only changes
// how the tile is computed.
//
// Bound by arithmetic at prefill: Nemo's gate/up GEMM at M = 4096 is 1.2 TFLOP, ~1.5 ms at the
// H100's ~800 TFLOP/s dense bf16 (cuBLAS measured 738-808 TFLOP/s on our shapes, docs/gpu-runs.md);
// the mma.sync kernel of gemm.cu reaches 318-364. The roofline needs every SM's tensor cores busy
// every cycle: wgmma issued back to back from shared memory, no register staging of operands, and
// loads that never make the math wait.
//
// Structure (warp-specialised, one 128 x 256 output tile per block, 384 threads):
//   warpgroup 0 (producer): one thread issues TMA loads of the A tile [128 x 64] and the W tile
//     [256 x 64] of each k-step into stage kt % STAGES, after the consumers released it (empty
//     barrier); the load's bytes complete the stage's full barrier. Its registers are given away
//     (setmaxnreg) to the consumers.
//   warpgroups 1, 2 (consumers): rows 0-63 and 64-127 of the tile. Per k-step: wait for the full
//     barrier, four wgmma m64n256k16 (k 0-15, ..., 48-63), commit; once the previous k-step's group
//     has finished, release its stage. 128 f32 accumulators per thread.
// TMA writes tiles with the 128-byte swizzle that the wgmma descriptors name, so shared memory
// is read without bank conflicts. Rows past M or N and k past K are zero-filled by TMA and the
// epilogue skips rows and columns past the end.
//
// Needs: K % 8 == 0 (TMA's 16-byte row stride), N % 8 == 0 (16 for SwiGLU), 16-byte aligned A
// and W; the Rust wrapper (src/gpu/kernels/gemm_wgmma.rs) checks them and builds the tensor maps.
#include "wgmma.cuh"
#include "tile_order.cuh"

namespace {

constexpr int BM = 128, BN = 256, BK = 64, STAGES = 4;
constexpr int CONSUMERS = 2, THREADS = 128 * (1 + CONSUMERS);
constexpr int A_TILE_BYTES = BM * BK * 2;  // 16 KiB
constexpr int W_TILE_BYTES = BN * BK * 2;  // 32 KiB
constexpr int STAGE_BYTES = A_TILE_BYTES + W_TILE_BYTES;
// Tiles first (1024-byte aligned, as the 128-byte swizzle needs), then 2 * STAGES barriers.
constexpr int SMEM_BYTES = 1024 + STAGES * STAGE_BYTES + 2 * STAGES * 8;
static_assert(SMEM_BYTES <= 227 * 1024, "fits the H100's shared memory per block");

enum Epilogue : int { EPI_PLAIN = 0, EPI_RESIDUAL = 1, EPI_SWIGLU = 2, EPI_F32 = 3 };

__device__ __forceinline__ float silu(float x) { return x / (1.f + __expf(-x)); }
__device__ __forceinline__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16(x)); }

}  // namespace

// Mirrored by `WgmmaParams` in src/gpu/kernels/gemm_wgmma.rs; sizes asserted on both sides.
struct WgmmaGemmParams {
    TensorMap a_map;      // A [M, K] bf16, box [BM rows, BK], 128-byte swizzle
    TensorMap w_map;      // W [N, K] bf16, box [BN rows, BK], 128-byte swizzle
    void* out;            // plain/residual: bf16 [M, N] (row stride ldo); swiglu: bf16 [M, N / 2];
                          // f32: float [M, N]
    const bf16* residual; // residual: [M, N] (row stride ldo), may equal out; else null
    int32_t m, n, k;      // k % 8 == 0; n % 16 == 0 (swiglu) or n % 8 == 0
    int32_t ldo;          // output row stride in elements
    int32_t epilogue;     // Epilogue
    int32_t tile_group;   // M-tiles per group of the block order (tile_order.cuh), >= 1
    int32_t k_splits;     // >= 1; blockIdx.y takes the y-th of k_splits ranges of k-steps, and with
                          // k_splits > 1 the epilogue is f32 into out + y * M * ldo (partials that
                          // gemm.cu's gemm_split_reduce_bf16 sums), as gemm.cu's split-K
};
static_assert(sizeof(WgmmaGemmParams) == 320, "mirror of WgmmaParams in gemm_wgmma.rs");

// Stores the consumer's 64 x 256 accumulators (rows row0.., columns col0..) through the epilogue.
__device__ __forceinline__ void store_tile(const WgmmaGemmParams& p, const float (&acc)[128], int row0, int col0) {
    const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
#pragma unroll
    for (int half_row = 0; half_row < 2; ++half_row) {
        const int m = row0 + 16 * warp + lane / 4 + 8 * half_row;
        if (m >= p.m) continue;
        if (p.epilogue == EPI_SWIGLU) {
            // n8 tiles 2i (gate) and 2i + 1 (up) of the interleaved weight, as in gemm.cu.
#pragma unroll
            for (int j = 0; j < BN / 8; j += 2) {
                const int n = col0 + 8 * j + 2 * (lane % 4);
                if (n >= p.n) continue;
                const float* gate = &acc[4 * j + 2 * half_row];
                const float* up = &acc[4 * (j + 1) + 2 * half_row];
                const float out0 = silu(round_bf16(gate[0])) * round_bf16(up[0]);
                const float out1 = silu(round_bf16(gate[1])) * round_bf16(up[1]);
                const int out_col = (n >> 4) * 8 + (n & 7);
                *reinterpret_cast<__nv_bfloat162*>(static_cast<bf16*>(p.out) + (size_t)m * p.ldo + out_col) =
                    __floats2bfloat162_rn(out0, out1);
            }
            continue;
        }
#pragma unroll
        for (int j = 0; j < BN / 8; ++j) {
            const int n = col0 + 8 * j + 2 * (lane % 4);
            if (n >= p.n) continue;
            float v0 = acc[4 * j + 2 * half_row], v1 = acc[4 * j + 2 * half_row + 1];
            const size_t off = (size_t)m * p.ldo + n;
            if (p.epilogue == EPI_F32) {
                float* plane = static_cast<float*>(p.out) + (size_t)blockIdx.y * p.m * p.ldo;  // split y's partials
                *reinterpret_cast<float2*>(plane + off) = make_float2(v0, v1);
                continue;
            }
            if (p.epilogue == EPI_RESIDUAL) {
                // The product rounded to bf16 before the add, as the unfused model does.
                const float2 r = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p.residual + off));
                v0 = r.x + round_bf16(v0);
                v1 = r.y + round_bf16(v1);
            }
            *reinterpret_cast<__nv_bfloat162*>(static_cast<bf16*>(p.out) + off) = __floats2bfloat162_rn(v0, v1);
        }
    }
}

extern "C" __global__ void __launch_bounds__(THREADS, 1)
gemm_wgmma_bf16(const __grid_constant__ WgmmaGemmParams p) {
    DYNAMIC_SHARED(unsigned char, smem_raw);
    const uint32_t base = (shared_addr(smem_raw) + 1023) & ~1023u;
    const uint32_t tiles_a = base;                             // STAGES x [BM, BK]
    const uint32_t tiles_w = base + STAGES * A_TILE_BYTES;     // STAGES x [BN, BK]
    const uint32_t full = base + STAGES * STAGE_BYTES;         // STAGES barriers: stage loaded
    const uint32_t empty = full + STAGES * 8;                  // STAGES barriers: stage released

    const int warpgroup = threadIdx.x / 128;
    const TileIdx tile = grouped_tile(blockIdx.x, (p.m + BM - 1) / BM, (p.n + BN - 1) / BN, p.tile_group);
    const int block_m = tile.m * BM, block_n = tile.n * BN;
    // This block's range of k-steps (split-K: blockIdx.y of k_splits; an empty range stores zeros).
    const int k_steps_all = (p.k + BK - 1) / BK, per_split = (k_steps_all + p.k_splits - 1) / p.k_splits;
    const int kt0 = blockIdx.y * per_split;
    const int k_steps = max(0, min(k_steps_all, kt0 + per_split) - kt0);

    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbarrier_init(full + 8 * s, 1);                 // the producer's arrive.expect_tx
            mbarrier_init(empty + 8 * s, CONSUMERS * 4);    // one arrival per consumer warp
        }
        mbarrier_init_fence();
    }
    __syncthreads();

    if (warpgroup == 0) {
        setmaxnreg_dec<40>();
        if (threadIdx.x == 0) {
            tma_prefetch_descriptor(&p.a_map);
            tma_prefetch_descriptor(&p.w_map);
            for (int kt = 0; kt < k_steps; ++kt) {
                const int s = kt % STAGES, round = kt / STAGES;
                mbarrier_wait(empty + 8 * s, (round & 1) ^ 1);  // round 0: returns at once
                mbarrier_arrive_expect_tx(full + 8 * s, STAGE_BYTES);
                tma_load_2d(tiles_a + s * A_TILE_BYTES, &p.a_map, (kt0 + kt) * BK, block_m, full + 8 * s);
                tma_load_2d(tiles_w + s * W_TILE_BYTES, &p.w_map, (kt0 + kt) * BK, block_n, full + 8 * s);
            }
        }
        return;
    }

    setmaxnreg_inc<232>();
    const int consumer = warpgroup - 1;  // rows 64 * consumer .. + 63 of the tile
    const int lane = threadIdx.x % 32;
    float acc[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) acc[i] = 0.f;

    for (int kt = 0; kt < k_steps; ++kt) {
        const int s = kt % STAGES;
        mbarrier_wait(full + 8 * s, (kt / STAGES) & 1);
        const uint64_t desc_a = wgmma_desc_k_major_sw128(tiles_a + s * A_TILE_BYTES + consumer * 64 * 128);
        const uint64_t desc_w = wgmma_desc_k_major_sw128(tiles_w + s * W_TILE_BYTES);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            // +32 bytes per 16-wide k slice: +2 in the descriptor's 16-byte address units.
            wgmma_m64n256k16(acc, desc_a + 2 * kk, desc_w + 2 * kk);
        }
        wgmma_commit();
        // The previous k-step's wgmmas have read their stage: hand it back to the producer.
        wgmma_wait<1>();
        if (kt > 0) {
            __syncwarp();
            if (lane == 0) mbarrier_arrive(empty + 8 * ((kt - 1) % STAGES));
        }
    }
    wgmma_wait<0>();

    store_tile(p, acc, block_m + 64 * consumer, block_n);
}
