// Split-K flash-decoding: one new token per sequence attends to its whole cached context.
//   attention_decode_bf16_hd{128,64}: each block takes one (split of the context, KV head,
//     sequence) and the G query heads of that KV head, writing an unnormalised partial
//     (max, sum, o[head_dim]) per head; the last split block of each (sequence, KV head) to
//     finish merges them into out (finish_split, attention_common.cuh).
//
// Bound by memory: every K and V row of the context is read once per KV head - at 32k context
// Nemo reads 32768 x 8 x 128 x 2 x 2 = 134 MB per layer, ~45 us at 3 TB/s - so the G query
// heads share each load, and the context is split across enough blocks to fill the GPU even for
// one sequence. Scores: each lane owns one key of a 32-key step and reads its whole K row (16 x
// 16-byte loads), with q in shared memory (broadcast reads). P.V: each lane reads one 16-byte
// chunk (8 dims) of V_LOADS of the step's V rows, so a warp-wide load covers 2 rows at head_dim
// 128; the lanes holding the same dims are summed once at the end. Both K and V loads of a step
// are issued before the first is used: 32 loads (512 bytes) in flight per lane, the latency paid
// once per step. At 820a75b the P.V loop read one 8-byte chunk per lane per key, serially: 37-43 %
// of the copy bandwidth at 32k-128k, 21 us a layer at 1k (the latency of 64 dependent steps).
// Tensor-core decode (attention_decode_mma.cu) is the [hopper] step.
//
// With a DecodeRope (its table non-null) the kernel also does rope_write_kv's work for the new
// token, so a decode layer needs no RoPE launch: every block rotates its G query heads (rounded
// to bf16, as rope_write_kv stores them), and the block whose key range holds the new position
// rotates the new K and writes K and V into the cache before its first step reads them. No other
// block reads that key, so no ordering across blocks is needed.
//
// attention_decode_e4m3_hd{128,64}: the same over an FP8 e4m3 cache (docs/fp8-kv.md): K rows of
// codes read as 16-byte loads of 16 values (half the loads), V chunks as 8-byte loads; each
// lane's score times its key's K scale, and the probability times the key's V scale where it
// meets V (the softmax sum keeps the plain probability). With a DecodeRope it writes the new
// token's codes and scales as rope_write_kv_e4m3 does (write_new_kv_e4m3: the same row writer).
#include "attention_e4m3.cuh"
#include "grid_dependency.cuh"


namespace {
constexpr int WARPS = 4;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

// The cache's element loads: a 16-byte K chunk and an 8-value V chunk, bf16 or e4m3 codes.
template <bool FP8> struct DecodeLoads {
    using KChunk = bf16x8;
    using VChunk = bf16x8;
    static constexpr int K_VALUES = 8;  // per K chunk
    static __device__ __forceinline__ KChunk load_k(const bf16* cache, long long at) { return ld8(cache + at); }
    static __device__ __forceinline__ VChunk load_v(const bf16* cache, long long at) { return ld8(cache + at); }
    static __device__ __forceinline__ void unpack_k(const KChunk& c, float* out) { unpack8(c, out); }
    static __device__ __forceinline__ void unpack_v(const VChunk& c, float* out) { unpack8(c, out); }
};
template <> struct DecodeLoads<true> {
    using KChunk = uint4;
    using VChunk = uint2;
    static constexpr int K_VALUES = 16;
    // `at` counts values (= bytes): the cache pointer is typed bf16 in AttentionParams.
    static __device__ __forceinline__ KChunk load_k(const bf16* cache, long long at) {
        return *reinterpret_cast<const uint4*>(reinterpret_cast<const uint8_t*>(cache) + at);
    }
    static __device__ __forceinline__ VChunk load_v(const bf16* cache, long long at) {
        return *reinterpret_cast<const uint2*>(reinterpret_cast<const uint8_t*>(cache) + at);
    }
    static __device__ __forceinline__ void unpack_k(const KChunk& c, float* out) {
        e4m3x4_to_f32(c.x, out); e4m3x4_to_f32(c.y, out + 4); e4m3x4_to_f32(c.z, out + 8); e4m3x4_to_f32(c.w, out + 12);
    }
    static __device__ __forceinline__ void unpack_v(const VChunk& c, float* out) {
        e4m3x4_to_f32(c.x, out); e4m3x4_to_f32(c.y, out + 4);
    }
};

template <int HD, int G, bool FP8 = false>
__device__ void attention_decode(const AttentionParams& p, const DecodeRope& r) {
    using L = DecodeLoads<FP8>;
    grid_dependents_may_launch();
    grid_dependency_wait();  // q and this step's K/V come from rope_write_kv or the QKV GEMV
    constexpr int CHUNKS = HD / 8;               // 8-value chunks per V row (16 bytes in bf16)
    constexpr int K_CHUNKS = HD / L::K_VALUES;   // 16-byte chunks per K row
    constexpr int ROWS_PER_LOAD = 32 / CHUNKS;   // V rows one warp-wide 16-byte load covers
    constexpr int V_LOADS = 32 / ROWS_PER_LOAD;  // per lane per 32-key step
    // Every load of a step in flight at once takes ~250 registers at G = 4, head_dim 128 (2 blocks
    // a SM, ~128 KB of loads in flight per SM: plenty). With more heads (G = 8) the V loads wait
    // for the scores and go in two batches instead of spilling.
    constexpr bool V_WITH_K = G * HD <= 512;
    constexpr int V_BATCH = V_WITH_K ? V_LOADS : V_LOADS / 2;
    __shared__ float sq[G][HD];
    __shared__ float s_max[WARPS][G], s_sum[WARPS][G];
    __shared__ float s_o[WARPS][G][HD];

    const int split = blockIdx.x, kv_head = blockIdx.y, seq = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // P.V layout: this lane accumulates dims [8 * v_chunk, +8) over the keys j of each step with
    // j % ROWS_PER_LOAD == v_sub; the lanes of one v_chunk are summed at the end.
    const int v_chunk = lane % CHUNKS, v_sub = lane / CHUNKS;
    const int token = p.cu_seqlens_q[seq];
    const int ctx = p.ctx_lens[seq];
    const int per_split = (ctx + p.n_splits - 1) / p.n_splits;
    const int key_begin = split * per_split, key_end = min(ctx, key_begin + per_split);

    const bf16* q_row = p.q + (size_t)token * p.q_stride + kv_head * G * HD;  // [G][HD]
    if (r.cos_sin != nullptr) {
        // bf16 bits as uint16_t: a trivially constructible shared array (the CPU emulator makes
        // __shared__ a static, which must not need a guarded constructor).
        __shared__ __align__(16) uint16_t rotated_bits[G * HD];
        bf16* rotated = reinterpret_cast<bf16*>(rotated_bits);
        const int pos = ctx - 1;
        if (pos >= r.max_positions) __trap();
        constexpr int QUADS = HD / 8;  // work items of 4 pairs per head
        const float2* cs = r.cos_sin + (size_t)pos * (HD / 2);
        for (int w = threadIdx.x; w < G * QUADS; w += WARPS * 32)
            rope_quad(q_row + (w / QUADS) * HD, rotated + (w / QUADS) * HD, cs, (w % QUADS) * 4, HD / 2, r.rotate_half);
        if (key_begin <= pos && pos < key_end) {
            if constexpr (FP8) write_new_kv_e4m3<HD>(p, r, seq, kv_head, token, pos, cs);
            else write_new_kv<HD>(p, r, seq, kv_head, token, pos, cs);
        }
        __syncthreads();  // the rotated q, and the new K/V row before this block's steps read it
        for (int i = threadIdx.x; i < G * HD; i += WARPS * 32) sq[i / HD][i % HD] = __bfloat162float(rotated[i]) * p.scale_log2;
    } else {
        for (int i = threadIdx.x; i < G * HD; i += WARPS * 32) sq[i / HD][i % HD] = __bfloat162float(q_row[i]) * p.scale_log2;
    }
    __syncthreads();

    float m[G], l[G], o[G][8];
#pragma unroll
    for (int h = 0; h < G; ++h) {
        m[h] = -INFINITY;
        l[h] = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) o[h][e] = 0.f;
    }
    // V loads first .. first + V_BATCH - 1 of a step (key j = i * ROWS_PER_LOAD + v_sub; `row`: the
    // lane's own key's KV row). Keys past the end read nothing: their weight is 0, but 0 x a NaN
    // in a free slot is not.
    using VChunk = typename L::VChunk;
    const auto load_v = [&](VChunk (&vv)[V_BATCH], int first, long long row, int n_valid) {
#pragma unroll
        for (int i = 0; i < V_BATCH; ++i) {
            const int j = (first + i) * ROWS_PER_LOAD + v_sub;
            const long long vrow = __shfl_sync(0xffffffffu, row, j);
            vv[i] = j < n_valid ? L::load_v(p.v_cache, vrow + v_chunk * 8) : VChunk{};
        }
    };
    // `pr`: each lane's key's weight as V meets it (FP8: times the key's V scale).
    const auto accumulate_v = [&](const VChunk (&vv)[V_BATCH], int first, const float (&pr)[G]) {
#pragma unroll
        for (int i = 0; i < V_BATCH; ++i) {
            const int j = (first + i) * ROWS_PER_LOAD + v_sub;
            float vf[8];
            L::unpack_v(vv[i], vf);
#pragma unroll
            for (int h = 0; h < G; ++h) {
                const float ph = __shfl_sync(0xffffffffu, pr[h], j);
#pragma unroll
                for (int e = 0; e < 8; ++e) o[h][e] += ph * vf[e];
            }
        }
    };

    // The KV row of this lane's key in a step: a block-table load, issued one step ahead so that
    // its latency hides under the step before instead of adding to the step's own.
    const auto row_of = [&](int key) { return key < key_end ? (long long)kv_row_offset(p, seq, key, kv_head, HD) : 0ll; };
    long long next_row = row_of(key_begin + warp * 32 + lane);
    for (int base = key_begin + warp * 32; base < key_end; base += WARPS * 32) {
        const int key = base + lane;
        const bool valid = key < key_end;
        const int n_valid = min(32, key_end - base);
        const long long row = next_row;
        next_row = row_of(key + WARPS * 32);
        // The lane's whole K row and (V_WITH_K) its chunks of the step's V rows are loaded before
        // any is used, so a step costs one memory latency, not one per key: the first version
        // walked the 32 V rows one 8-byte load at a time and measured 37-43 % of the copy
        // bandwidth (docs/gpu-runs.md, 820a75b). Coherent loads (ld8): rope_write_kv, or this
        // block, has just written this step's K and V.
        typename L::KChunk kv[K_CHUNKS];
        VChunk vv[V_BATCH];
#pragma unroll
        for (int c = 0; c < K_CHUNKS; ++c)
            if (valid) kv[c] = L::load_k(p.k_cache, row + c * L::K_VALUES);
        // FP8: the key's scales ([slot, kv_head] = its row / HD).
        float k_scale = 1.f, v_scale = 1.f;
        if (FP8 && valid) {
            k_scale = p.k_scales[row / HD];
            v_scale = p.v_scales[row / HD];
        }
        if constexpr (V_WITH_K) load_v(vv, 0, row, n_valid);

        float s[G];
#pragma unroll
        for (int h = 0; h < G; ++h) s[h] = 0.f;
        if (valid) {
#pragma unroll
            for (int c = 0; c < K_CHUNKS; ++c) {
                float kf[L::K_VALUES];
                L::unpack_k(kv[c], kf);
#pragma unroll
                for (int h = 0; h < G; ++h)
#pragma unroll
                    for (int e = 0; e < L::K_VALUES; ++e) s[h] += sq[h][c * L::K_VALUES + e] * kf[e];
            }
            if (FP8) {
#pragma unroll
                for (int h = 0; h < G; ++h) s[h] *= k_scale;
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
            for (int e = 0; e < 8; ++e) o[h][e] *= alpha;
        }
        float pv[G];
#pragma unroll
        for (int h = 0; h < G; ++h) pv[h] = FP8 ? pr[h] * v_scale : pr[h];
        if constexpr (V_WITH_K) {
            accumulate_v(vv, 0, pv);
        } else {
#pragma unroll
            for (int first = 0; first < V_LOADS; first += V_BATCH) {
                asm volatile("" ::: "memory");  // keeps nvcc from hoisting these loads (registers)
                load_v(vv, first, row, n_valid);
                accumulate_v(vv, first, pv);
            }
        }
    }

    // Merge the warps: each holds (max, per-lane sums, o split over the v_sub lanes) per head.
#pragma unroll
    for (int h = 0; h < G; ++h) {
        const float sum = warp_sum(l[h]);
#pragma unroll
        for (int e = 0; e < 8; ++e)
#pragma unroll
            for (int offset = CHUNKS; offset < 32; offset <<= 1) o[h][e] += __shfl_xor_sync(0xffffffffu, o[h][e], offset);
        if (lane == 0) {
            s_max[warp][h] = m[h];
            s_sum[warp][h] = sum;
        }
        if (v_sub == 0) {
#pragma unroll
            for (int e = 0; e < 8; ++e) s_o[warp][h][v_chunk * 8 + e] = o[h][e];
        }
    }
    __syncthreads();
    finish_split<HD, G, WARPS>(p, &s_max[0][0], &s_sum[0][0], &s_o[0][0][0], seq, kv_head, split);
}

// Grid: (n_splits, n_kv_heads, n_seqs); 128 threads. One kernel per (head_dim, G) so the
// per-head registers stay in registers.
#define DECODE_KERNEL(HD, G)                                                                       \
    extern "C" __global__ void __launch_bounds__(WARPS * 32) attention_decode_bf16_hd##HD##_g##G(  \
        const __grid_constant__ AttentionParams p, const __grid_constant__ DecodeRope r) {         \
        attention_decode<HD, G>(p, r);                                                             \
    }
FOR_EACH_DECODE_SHAPE(DECODE_KERNEL)

#define DECODE_KERNEL_E4M3(HD, G)                                                                  \
    extern "C" __global__ void __launch_bounds__(WARPS * 32) attention_decode_e4m3_hd##HD##_g##G(  \
        const __grid_constant__ AttentionParams p, const __grid_constant__ DecodeRope r) {         \
        attention_decode<HD, G, true>(p, r);                                                       \
    }
FOR_EACH_DECODE_SHAPE(DECODE_KERNEL_E4M3)
