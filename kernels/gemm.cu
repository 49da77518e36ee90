// Tensor-core GEMM for the linear layers: C[M, N] = A[M, K] . W[N, K]^T (bf16 in, f32 accumulate),
// with three epilogues:
//   plain     out[m, n] = acc
//   residual  out[m, n] = residual[m, n] + acc            (o-proj and down-proj; may be in place)
//   swiglu    out[m, j] = silu(acc_gate) * acc_up          (gate/up fused; see below)
//   f32       out[m, n] = acc, stored as f32                  (the LM head: logits keep f32)
// A is the activations (row-major, K contiguous); W is a PyTorch Linear weight [out, in] (K
// contiguous), which is exactly the "col" operand of mma.sync.m16n8k16.row.col.
//
// Bound by arithmetic at prefill: Nemo's gate/up GEMM at M = 4096 is 2*4096*5120*28672 = 1.2
// TFLOP, ~1.5 ms at the H100's ~800 TFLOP/s dense bf16; by memory at M <= ~64 (weights read once:
// 294 MB for gate/up, ~0.1 ms at 3 TB/s), where gemv.cu takes over for M <= 8.
// This version: 128x128x64 block tile, 8 warps of 64x32, mma.sync.m16n8k16 fed by ldmatrix from an
// XOR-swizzled, 3-stage cp.async pipeline. It reaches a fraction of Hopper's wgmma rate; the
// [hopper] work replaces the main loop with wgmma + TMA and keeps these epilogues and this file's
// interface.
//
// SwiGLU layout: the fused gate/up weight [2 * F, K] interleaves 8-row groups - rows 16i..16i+7
// are gate rows 8i..8i+7 and rows 16i+8..16i+15 the matching up rows - so each thread holds a
// gate accumulator and its up partner in registers (n8 tiles 2j and 2j+1), and the 2F-wide
// intermediate never reaches memory. The loader builds this layout once.
#include "mma.cuh"
#include "tile_order.cuh"

namespace {

constexpr int BM = 128, BN = 128, BK = 64, STAGES = 3, THREADS = 256;
constexpr int WM = 64, WN = 32;                 // warp tile; warps arranged 2 (M) x 4 (N)
constexpr int MI = WM / 16, NI = WN / 8;        // mma tiles per warp: 4 x 4
constexpr int TILE_A = BM * BK, TILE_W = BN * BK;  // bf16 elements per stage
}  // namespace

enum Epilogue : int { EPI_PLAIN = 0, EPI_RESIDUAL = 1, EPI_SWIGLU = 2, EPI_F32 = 3 };

// Mirrored by `GemmParams` in src/gpu/kernels/gemm.rs; sizes asserted on both sides.
struct GemmParams {
    const bf16* a;        // [M, K] activations, row stride lda
    const bf16* w;        // [N, K] weight, row-major (K contiguous)
    void* out;            // plain/residual: bf16 [M, N] (row stride ldo); swiglu: bf16 [M, N / 2];
                          // f32: float [M, N]
    const bf16* residual; // residual: [M, N] (row stride ldo), may equal out; else null
    int32_t m, n, k;      // k % 8 == 0; n % 16 == 0 (swiglu) or n % 8 == 0
    int32_t lda, ldo;     // row strides in elements, multiples of 8
    int32_t epilogue;     // Epilogue
    int32_t tile_group;   // M-tiles per group of the block order (tile_order.cuh), >= 1
    int32_t k_splits;     // >= 1; blockIdx.y takes the y-th of k_splits ranges of k-tiles, and with
                          // k_splits > 1 the epilogue is f32 into out + y * M * ldo (partials that
                          // gemm_split_reduce_bf16 sums)
};
static_assert(sizeof(GemmParams) == 64, "mirror of GemmParams in gemm.rs");

// Byte offset of 16-byte chunk `chunk` (0..7) of row `row` in a [rows, 64] bf16 tile: rows are
// 128 bytes, and chunks are XOR-swizzled by the row so that ldmatrix's 8 row reads hit 8
// distinct bank groups.
__device__ __forceinline__ uint32_t swz(int row, int chunk) {
    return row * 128 + ((chunk ^ (row & 7)) << 4);
}

// Issues the copies of k-tile `kt` into stage `stage`: 128 rows x 8 chunks for A and for W,
// 4 chunks of each per thread.
__device__ __forceinline__ void load_stage(const GemmParams& p, uint32_t smem_a, uint32_t smem_w,
                                           int block_m, int block_n, int kt, int stage) {
    const int k0 = kt * BK;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int idx = threadIdx.x + i * THREADS;  // 0..1023
        const int row = idx >> 3, chunk = idx & 7;
        const int gm = block_m + row, gn = block_n + row;
        const int kc = k0 + chunk * 8;
        const bool k_ok = kc < p.k;  // the last k-tile may be partial: its tail reads zeros
        const bf16* ga = p.a + (size_t)min(gm, p.m - 1) * p.lda + (k_ok ? kc : 0);
        const bf16* gw = p.w + (size_t)min(gn, p.n - 1) * p.k + (k_ok ? kc : 0);
        cp_async16(smem_a + stage * TILE_A * 2 + swz(row, chunk), ga, gm < p.m && k_ok);
        cp_async16(smem_w + stage * TILE_W * 2 + swz(row, chunk), gw, gn < p.n && k_ok);
    }
}

__device__ __forceinline__ float silu(float x) { return x / (1.f + __expf(-x)); }

extern "C" __global__ void __launch_bounds__(THREADS)
gemm_bf16(const __grid_constant__ GemmParams p) {
    DYNAMIC_SHARED(unsigned char, smem);
    const uint32_t smem_a = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    const uint32_t smem_w = smem_a + STAGES * TILE_A * 2;

    const TileIdx tile = grouped_tile(blockIdx.x, (p.m + BM - 1) / BM, (p.n + BN - 1) / BN, p.tile_group);
    const int block_m = tile.m * BM, block_n = tile.n * BN;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int warp_m = (warp >> 2) * WM, warp_n = (warp & 3) * WN;
    // This block's range of k-tiles (split-K: blockIdx.y of k_splits).
    const int k_tiles_all = (p.k + BK - 1) / BK, per_split = (k_tiles_all + p.k_splits - 1) / p.k_splits;
    const int kt0 = blockIdx.y * per_split;
    const int k_tiles = max(0, min(k_tiles_all, kt0 + per_split) - kt0);

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < k_tiles) load_stage(p, smem_a, smem_w, block_m, block_n, kt0 + s, s);
        cp_async_commit();
    }

    for (int kt = 0; kt < k_tiles; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // stage kt landed for every thread; stage kt-1 is free to overwrite
        const int next = kt + STAGES - 1;
        if (next < k_tiles) load_stage(p, smem_a, smem_w, block_m, block_n, kt0 + next, next % STAGES);
        cp_async_commit();

        const uint32_t sa = smem_a + (kt % STAGES) * TILE_A * 2;
        const uint32_t sw = smem_w + (kt % STAGES) * TILE_W * 2;
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            uint32_t a[MI][4], b[NI / 2][4];
#pragma unroll
            for (int i = 0; i < MI; ++i) {
                // Lanes 0-15 address rows 0-15 at k 0-7, lanes 16-31 the same rows at k 8-15.
                const int row = warp_m + i * 16 + (lane & 15);
                ldmatrix_x4(a[i], sa + swz(row, kk * 2 + (lane >> 4)));
            }
#pragma unroll
            for (int j = 0; j < NI / 2; ++j) {
                // Matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
                const int row = warp_n + j * 16 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(b[j], sw + swz(row, kk * 2 + ((lane >> 3) & 1)));
            }
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
                for (int j = 0; j < NI; ++j)
                    mma_bf16(acc[i][j], a[i], b[j / 2][(j & 1) * 2], b[j / 2][(j & 1) * 2 + 1]);
        }
    }
    cp_async_wait<0>();

    // Epilogue. Accumulator (i, j, r) is row warp_m + 16i + lane/4 + 8*(r/2), column
    // warp_n + 8j + 2*(lane%4) + (r%2).
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int i = 0; i < MI; ++i) {
#pragma unroll
        for (int half_row = 0; half_row < 2; ++half_row) {
            const int m = block_m + warp_m + i * 16 + g + half_row * 8;
            if (m >= p.m) continue;
            if (p.epilogue == EPI_SWIGLU) {
#pragma unroll
                for (int j = 0; j < NI; j += 2) {
                    const int n = block_n + warp_n + j * 8 + 2 * t;  // gate column in the fused W
                    if (n >= p.n) continue;
                    const int out_col = (n >> 4) * 8 + (n & 7);
                    const float* gate = &acc[i][j][half_row * 2];
                    const float* up = &acc[i][j + 1][half_row * 2];
                    // Round gate and up to bf16 first, as an unfused bf16 model would store them.
                    const float g0 = __bfloat162float(__float2bfloat16(gate[0]));
                    const float g1 = __bfloat162float(__float2bfloat16(gate[1]));
                    const float u0 = __bfloat162float(__float2bfloat16(up[0]));
                    const float u1 = __bfloat162float(__float2bfloat16(up[1]));
                    *reinterpret_cast<__nv_bfloat162*>(static_cast<bf16*>(p.out) + (size_t)m * p.ldo + out_col) =
                        __floats2bfloat162_rn(silu(g0) * u0, silu(g1) * u1);
                }
            } else {
#pragma unroll
                for (int j = 0; j < NI; ++j) {
                    const int n = block_n + warp_n + j * 8 + 2 * t;
                    if (n >= p.n) continue;
                    float v0 = acc[i][j][half_row * 2], v1 = acc[i][j][half_row * 2 + 1];
                    const size_t off = (size_t)m * p.ldo + n;
                    if (p.epilogue == EPI_F32) {
                        float* out = static_cast<float*>(p.out) + (size_t)blockIdx.y * p.m * p.ldo;
                        *reinterpret_cast<float2*>(out + off) = make_float2(v0, v1);
                        continue;
                    }
                    if (p.epilogue == EPI_RESIDUAL) {
                        // Round the product to bf16 before the add, as the unfused model does.
                        const float2 r = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p.residual + off));
                        v0 = r.x + __bfloat162float(__float2bfloat16(v0));
                        v1 = r.y + __bfloat162float(__float2bfloat16(v1));
                    }
                    *reinterpret_cast<__nv_bfloat162*>(static_cast<bf16*>(p.out) + off) = __floats2bfloat162_rn(v0, v1);
                }
            }
        }
    }
}

// Mirrored by `SplitReduceParams` in src/gpu/kernels/gemm.rs.
struct SplitReduceParams {
    const float* partial;  // [k_splits, M, N] f32 partial products
    void* out;             // as GemmParams::out for `epilogue`
    const bf16* residual;  // residual epilogue: [M, N], may equal out
    int32_t m, n;          // n: the weight's rows (2 x the output columns for swiglu)
    int32_t k_splits;
    int32_t ldo;           // output row stride in elements
    int32_t epilogue;      // as in gemm_bf16, with the same bf16 roundings
};
static_assert(sizeof(SplitReduceParams) == 48, "mirror of SplitReduceParams in gemm.rs");

// Sums the split-K partials and applies the epilogue: out[m, j] for every output column j.
// Bound by memory (k_splits x M x N x 4 bytes read); grid-stride over M x output columns.
extern "C" __global__ void gemm_split_reduce_bf16(const __grid_constant__ SplitReduceParams p) {
    const int out_cols = p.epilogue == EPI_SWIGLU ? p.n / 2 : p.n;
    const size_t total = (size_t)p.m * out_cols, plane = (size_t)p.m * p.n;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const int m = (int)(i / out_cols), j = (int)(i % out_cols);
        const size_t out_off = (size_t)m * p.ldo + j;
        if (p.epilogue == EPI_SWIGLU) {
            // Output column j: gate row 16 * (j / 8) + j % 8 of the interleaved weight, up 8 further.
            const int gate = (j >> 3) * 16 + (j & 7);
            float g = 0.f, u = 0.f;
            for (int s = 0; s < p.k_splits; ++s) {
                g += p.partial[s * plane + (size_t)m * p.n + gate];
                u += p.partial[s * plane + (size_t)m * p.n + gate + 8];
            }
            g = __bfloat162float(__float2bfloat16(g));
            u = __bfloat162float(__float2bfloat16(u));
            static_cast<bf16*>(p.out)[out_off] = __float2bfloat16(silu(g) * u);
            continue;
        }
        float v = 0.f;
        for (int s = 0; s < p.k_splits; ++s) v += p.partial[s * plane + (size_t)m * p.n + j];
        if (p.epilogue == EPI_F32) {
            static_cast<float*>(p.out)[out_off] = v;
            continue;
        }
        if (p.epilogue == EPI_RESIDUAL) v = __bfloat162float(p.residual[out_off]) + __bfloat162float(__float2bfloat16(v));
        static_cast<bf16*>(p.out)[out_off] = __float2bfloat16(v);
    }
}
