// Causal GQA prefill attention on Hopper's wgmma, K/V tiles fed by TMA straight from the paged
// cache: the FlashAttention-3 structure (warp specialisation, TMA, wgmma with P from registers).
// Same AttentionParams, paged metadata and results as attention_prefill.cu. Three schedules:
//   attention_prefill_wgmma_*: per tile S = QK^T, wait, softmax, O += PV, wait (the plain order);
//   attention_prefill_wgmma_overlap_*: FA3's intra-warpgroup pipelining: S of tile t and PV of
//     tile t-1 are issued together, and the softmax of tile t runs while PV(t-1) is on the
//     tensor cores;
//   attention_prefill_wgmma_pingpong_*: that, with FA3's ping-pong: the two consumer warpgroups
//     take turns issuing (named barriers), so one's softmax runs under the other's wgmmas.
//
// Bound by arithmetic: at L = 8192 Nemo's 32 heads x 40 layers need 17.6 TFLOP of causal
// attention, ~22 ms at the H100's ~800 TFLOP/s; attention_prefill.cu (mma.sync) measured 152
// TFLOP/s at 8k; FlashAttention-3 reaches ~600.
//
// Structure (one block = 128 query rows of one KV head = 128 / G positions x the G query heads
// sharing every K/V tile; 384 threads):
//   all threads: load the block's Q rows into shared memory, 128-byte swizzled (K-major for wgmma).
//   warpgroup 0 (producer): one thread walks the sequence's block table and issues, per 128-key
//     tile, 8 cache blocks x head_dim / 64 TMA boxes of [16 keys x 64 dims] for K, then for V,
//     into a 2-stage ring with separate K and V barriers (full / empty), so a K stage is
//     refilled as soon as its scores are computed.
//   warpgroups 1, 2 (consumers): rows 0-63 / 64-127. S = Q K^T (wgmma m64n128k16, both operands
//     from shared memory), causal mask and online softmax on the accumulators (exp2 domain),
//     O += P V (wgmma m64n{head_dim}k16 with P converted in registers to the A operand and V
//     read N-major).
#include "attention_common.cuh"
#include "wgmma.cuh"

namespace {
constexpr int ROWS = 128, KT = 128, STAGES = 2, BLOCK_KEYS = 16;
constexpr int CONSUMERS = 2, THREADS = 128 * (1 + CONSUMERS);
}  // namespace

// Mirrored by `PrefillWgmmaParams` in src/gpu/kernels/attention_wgmma.rs; sizes asserted on both sides.
struct PrefillWgmmaParams {
    TensorMap k_map;       // the layer's K cache as [n_slots, n_kv_heads * head_dim] bf16, box [16 x 64]
    TensorMap v_map;       // the layer's V cache, likewise
    AttentionParams attn;  // as attention_prefill.cu (block_size must be 16)
};
static_assert(sizeof(PrefillWgmmaParams) == 384, "mirror of PrefillWgmmaParams in attention_wgmma.rs");

// Shared-memory layout: [head_dim / 64 halves][rows][128 bytes], each 128-byte row swizzled by
// its row index (the TMA / wgmma 128-byte swizzle), every half 1024-byte aligned; then the
// barriers full_k, full_v, empty_k, empty_v (STAGES each).
template <int HD>
struct Layout {
    static constexpr int HALVES = HD / 64;
    static constexpr int Q_BYTES = HALVES * ROWS * 128;
    static constexpr int TILE_BYTES = HALVES * KT * 128;  // one of K or V
    static constexpr int STAGE_BYTES = 2 * TILE_BYTES;
    static constexpr int SMEM_BYTES = 1024 + Q_BYTES + STAGES * STAGE_BYTES + 4 * STAGES * 8;
};

// Shared-memory addresses of one block's tiles and barriers.
template <int HD>
struct Smem {
    unsigned char* raw;  // the dynamic shared memory, for generic stores
    uint32_t q, stages, full_k, full_v, empty_k, empty_v;
    __device__ unsigned char* generic(uint32_t addr) const { return raw + (addr - shared_addr(raw)); }
    __device__ uint32_t k_tile(int s) const { return stages + s * Layout<HD>::STAGE_BYTES; }
    __device__ uint32_t v_tile(int s) const { return k_tile(s) + Layout<HD>::TILE_BYTES; }
};

// What one block computes: 128 / G positions of one sequence from local_begin, for one KV head.
struct BlockWork {
    int seq, kv_head, q0, group, local_begin, first_pos, n_rows, n_keys, n_tiles;
};

// The producer: one thread issues every K and V tile of the block into the ring.
template <int HD>
__device__ void load_kv_tiles(const PrefillWgmmaParams& params, const BlockWork& w, const Smem<HD>& sm) {
    using L = Layout<HD>;
    const AttentionParams& p = params.attn;
    const int32_t* table = p.block_tables + (size_t)w.seq * p.max_blocks;
    const int last_block = (w.n_keys - 1) / BLOCK_KEYS;  // blocks past it would be unused ids
    for (int t = 0; t < w.n_tiles; ++t) {
        const int s = t % STAGES, parity = ((t / STAGES) & 1) ^ 1;  // round 0: returns at once
#pragma unroll
        for (int kv = 0; kv < 2; ++kv) {
            const uint32_t full = (kv ? sm.full_v : sm.full_k) + 8 * s;
            mbarrier_wait((kv ? sm.empty_v : sm.empty_k) + 8 * s, parity);
            mbarrier_arrive_expect_tx(full, L::TILE_BYTES);
            for (int b = 0; b < KT / BLOCK_KEYS; ++b) {
                // Keys past the sequence's last block reread it (the mask drops them; zero_v_tail).
                const int block = table[min(t * (KT / BLOCK_KEYS) + b, last_block)];
                for (int h = 0; h < L::HALVES; ++h) {
                    const uint32_t dst = (kv ? sm.v_tile(s) : sm.k_tile(s)) + h * KT * 128 + b * BLOCK_KEYS * 128;
                    tma_load_2d(dst, kv ? &params.v_map : &params.k_map, w.kv_head * HD + h * 64, block * BLOCK_KEYS, full);
                }
            }
        }
    }
}

// Issues S = Q K^T for this warpgroup's 64 rows x 128 keys as one wgmma group; s[4j + r] is row
// 16*warp + lane/4 + 8*(r/2), key 8j + 2*(lane%4) + r%2 of the tile.
template <int HD>
__device__ __forceinline__ void issue_scores(float (&s)[KT / 2], uint32_t q, uint32_t k_tile, int consumer) {
#pragma unroll
    for (int i = 0; i < KT / 2; ++i) s[i] = 0.f;
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
        // +32 bytes per 16-wide slice of head_dim inside a 64-wide half: +2 descriptor units.
        const uint64_t dq = wgmma_desc_k_major_sw128(q + (kk / 4) * ROWS * 128 + consumer * 64 * 128) + 2 * (kk % 4);
        const uint64_t dk = wgmma_desc_k_major_sw128(k_tile + (kk / 4) * KT * 128) + 2 * (kk % 4);
        wgmma_m64n128k16_ss(s, dq, dk);
    }
    wgmma_commit();
}

// P (bf16) in the register A-operand layout, 16 keys per slice; all of it converted before the
// first PV wgmma (else ptxas fences every one, C7519).
__device__ __forceinline__ void scores_to_p(uint32_t (&pa)[KT / 16][4], const float (&s)[KT / 2]) {
#pragma unroll
    for (int kk = 0; kk < KT / 16; ++kk) {
        pa[kk][0] = pack_bf16(s[8 * kk + 0], s[8 * kk + 1]);
        pa[kk][1] = pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);
        pa[kk][2] = pack_bf16(s[8 * kk + 4], s[8 * kk + 5]);
        pa[kk][3] = pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);
    }
}

// Issues O += P V as one wgmma group. V N-major: 128-byte rows of 64 dims per key, 8-key groups
// 1024 bytes apart, the two 64-dim halves a tile-half apart.
template <int HD>
__device__ __forceinline__ void issue_pv(float (&o)[HD / 2], const uint32_t (&pa)[KT / 16][4], uint32_t v_tile) {
    fence_registers(o);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < KT / 16; ++kk) {
        const uint64_t dv = wgmma_desc_sw128(v_tile + kk * 16 * 128, KT * 128, 1024);
        if constexpr (HD == 128) wgmma_m64n128k16_rs_nb(o, pa[kk], dv);
        else wgmma_m64n64k16_rs_nb(o, pa[kk], dv);
    }
    wgmma_commit();
}

// Causal mask and online softmax of one tile (log2 domain), as attention_prefill.cu; the mask
// only where the tile reaches the block's first position `min_pos` (in causal prefill most tiles
// lie wholly below it; padding rows, whose results are dropped, need no mask).
__device__ __forceinline__ void softmax_tile(float (&s)[KT / 2], int t, int min_pos, const int (&row_pos)[2], float scale_log2,
                                             float (&row_max)[2], float (&row_sum)[2], float (&alpha)[2]) {
    auto& tile = reinterpret_cast<float (&)[KT / 8][4]>(s);
    if (t * KT + KT - 1 <= min_pos) causal_online_softmax<false>(tile, t * KT, row_pos, scale_log2, row_max, row_sum, alpha);
    else causal_online_softmax<true>(tile, t * KT, row_pos, scale_log2, row_max, row_sum, alpha);
}

// o[4j + 2h + e] belongs to row h of this thread.
template <int N>
__device__ __forceinline__ void rescale(float (&o)[N], const float (&alpha)[2]) {
#pragma unroll
    for (int j = 0; j < N / 4; ++j) {
        o[4 * j + 0] *= alpha[0];
        o[4 * j + 1] *= alpha[0];
        o[4 * j + 2] *= alpha[1];
        o[4 * j + 3] *= alpha[1];
    }
}

// The last tile's V rows past the block's last key (`valid` keys are real) hold whatever the
// cache has there: the tail of the sequence's last block, or that block reread. Their weights
// are 0, but 0 x a NaN or Inf left in a free slot is NaN, so before their last PV the two
// consumer warpgroups zero those rows between them (whole 128-byte rows, so the swizzle does
// not matter) and meet at named barrier 3, so each sees all the zeros.
template <int HD>
__device__ __forceinline__ void zero_v_tail(unsigned char* v_tile, int valid) {
    if (valid >= KT) return;  // uniform across the block
    constexpr int CHUNKS = HD / 64 * 8;  // 16-byte chunks per key: 8 per 64-dim half
    for (int i = threadIdx.x - 128; i < (KT - valid) * CHUNKS; i += 128 * CONSUMERS) {
        const int key = valid + i / CHUNKS, half = i % CHUNKS / 8, chunk = i % 8;
        *reinterpret_cast<uint4*>(v_tile + half * KT * 128 + key * 128 + chunk * 16) = make_uint4(0, 0, 0, 0);
    }
    fence_proxy_async_shared();                 // st.shared -> the async proxy wgmma reads through
    named_barrier_sync(3, 128 * CONSUMERS);     // every row zeroed before either warpgroup's wgmma
}

// This warp is done with a stage: one arrival per consumer warp.
__device__ __forceinline__ void release(uint32_t empty) {
    __syncwarp();
    if (threadIdx.x % 32 == 0) mbarrier_arrive(empty);
}

// The plain order: S(t), wait, softmax, PV(t), wait.
template <int HD>
__device__ __forceinline__ void consume_in_order(float (&o)[HD / 2], const Smem<HD>& sm, int n_tiles, int tail_keys, int consumer, int min_pos, const int (&row_pos)[2],
                                                 float scale_log2, float (&row_max)[2], float (&row_sum)[2]) {
    float s[KT / 2];
    uint32_t pa[KT / 16][4];
    for (int t = 0; t < n_tiles; ++t) {
        const int st = t % STAGES, parity = (t / STAGES) & 1;
        mbarrier_wait(sm.full_k + 8 * st, parity);
        issue_scores<HD>(s, sm.q, sm.k_tile(st), consumer);
        wgmma_wait<0>();
        fence_registers(s);
        release(sm.empty_k + 8 * st);
        float alpha[2];
        softmax_tile(s, t, min_pos, row_pos, scale_log2, row_max, row_sum, alpha);
        rescale(o, alpha);
        scores_to_p(pa, s);
        mbarrier_wait(sm.full_v + 8 * st, parity);
        if (t == n_tiles - 1) zero_v_tail<HD>(sm.generic(sm.v_tile(st)), tail_keys);
        issue_pv<HD>(o, pa, sm.v_tile(st));
        wgmma_wait<0>();
        fence_registers(o);
        release(sm.empty_v + 8 * st);
    }
}

// FA3's ping-pong: the two consumer warpgroups take turns issuing their wgmmas, so one's softmax
// runs while the other's matrix work has the tensor cores. Named barrier 1 + c is consumer c's
// turn; the other consumer hands it over after issuing. Consumer 1 starts by handing consumer 0
// the first turn and skips its own last hand-over, so every arrival meets a bar.sync.
struct Turns {
    bool on;
    int consumer;
    __device__ __forceinline__ void start() const {
        if (on && consumer == 1) named_barrier_arrive(1, 256);
    }
    __device__ __forceinline__ void take() const {
        if (on) named_barrier_sync(1 + consumer, 256);
    }
    __device__ __forceinline__ void hand_over(bool last) const {
        if (on && !(last && consumer == 1)) named_barrier_arrive(2 - consumer, 256);
    }
};

// FA3's intra-warpgroup overlap: S(t) and PV(t-1) in flight together; the softmax of tile t runs
// while PV(t-1) is on the tensor cores, and O is rescaled by tile t's alpha once PV(t-1) has
// landed (O_t = alpha_t (O_{t-1} + P_{t-1} V_{t-1}), P_{t-1} being relative to the old max).
template <int HD>
__device__ __forceinline__ void consume_overlapped(float (&o)[HD / 2], const Smem<HD>& sm, int n_tiles, int tail_keys, int consumer,
                                                   int min_pos, const int (&row_pos)[2], float scale_log2, float (&row_max)[2],
                                                   float (&row_sum)[2], Turns turns) {
    float s[KT / 2];
    uint32_t pa[KT / 16][4];
    float alpha[2];
    turns.start();
    mbarrier_wait(sm.full_k, 0);
    turns.take();
    issue_scores<HD>(s, sm.q, sm.k_tile(0), consumer);
    turns.hand_over(n_tiles == 1);
    wgmma_wait<0>();
    fence_registers(s);
    release(sm.empty_k);
    softmax_tile(s, 0, min_pos, row_pos, scale_log2, row_max, row_sum, alpha);  // O is zero: alpha unused
    scores_to_p(pa, s);
    for (int t = 1; t < n_tiles; ++t) {
        const int st = t % STAGES, prev = (t - 1) % STAGES;
        mbarrier_wait(sm.full_k + 8 * st, (t / STAGES) & 1);
        turns.take();
        issue_scores<HD>(s, sm.q, sm.k_tile(st), consumer);
        mbarrier_wait(sm.full_v + 8 * prev, ((t - 1) / STAGES) & 1);
        issue_pv<HD>(o, pa, sm.v_tile(prev));
        turns.hand_over(t == n_tiles - 1);
        wgmma_wait<1>();  // S(t) done; PV(t-1) may still run
        fence_registers(s);
        release(sm.empty_k + 8 * st);
        // (ptxas 13.0 moves this wait up into the softmax: the mask and row max run beside PV(t-1),
        // the exponentials after it; docs/hopper.md.)
        softmax_tile(s, t, min_pos, row_pos, scale_log2, row_max, row_sum, alpha);
        wgmma_wait<0>();  // PV(t-1) done: O and P are free
        fence_registers(o);
        release(sm.empty_v + 8 * prev);
        rescale(o, alpha);
        scores_to_p(pa, s);
    }
    const int last = (n_tiles - 1) % STAGES;
    mbarrier_wait(sm.full_v + 8 * last, ((n_tiles - 1) / STAGES) & 1);
    zero_v_tail<HD>(sm.generic(sm.v_tile(last)), tail_keys);
    issue_pv<HD>(o, pa, sm.v_tile(last));
    wgmma_wait<0>();
    fence_registers(o);
    release(sm.empty_v + 8 * last);
}

// How the consumers order their work: the plain loop, FA3's intra-warpgroup overlap, or the
// overlap with the two consumers in ping-pong.
enum Schedule { IN_ORDER, OVERLAP, PINGPONG };

template <int HD, Schedule SCHEDULE>
__device__ void attention_prefill_wgmma(const PrefillWgmmaParams& params) {
    constexpr bool OVERLAP = SCHEDULE != IN_ORDER;
    using L = Layout<HD>;
    const AttentionParams& p = params.attn;
    DYNAMIC_SHARED(unsigned char, smem_raw);
    const uint32_t base = (shared_addr(smem_raw) + 1023) & ~1023u;
    Smem<HD> sm;
    sm.raw = smem_raw;
    sm.q = base;
    sm.stages = base + L::Q_BYTES;
    sm.full_k = sm.stages + STAGES * L::STAGE_BYTES;
    sm.full_v = sm.full_k + STAGES * 8;
    sm.empty_k = sm.full_v + STAGES * 8;
    sm.empty_v = sm.empty_k + STAGES * 8;

    BlockWork w;
    w.seq = blockIdx.z;
    w.kv_head = blockIdx.y;
    w.q0 = p.cu_seqlens_q[w.seq];
    const int q_len = p.cu_seqlens_q[w.seq + 1] - w.q0;
    w.group = p.n_heads / p.n_kv_heads;
    const int pos_per_block = ROWS / w.group;
    // Longest blocks (latest positions) first: causal work grows with the position.
    w.local_begin = (gridDim.x - 1 - blockIdx.x) * pos_per_block;
    if (w.local_begin >= q_len) return;
    w.first_pos = p.ctx_lens[w.seq] - q_len;
    w.n_rows = min(pos_per_block, q_len - w.local_begin) * w.group;
    w.n_keys = w.first_pos + w.local_begin + w.n_rows / w.group;  // keys the last row sees
    w.n_tiles = (w.n_keys + KT - 1) / KT;

    // Q rows r = position-major, head-minor, as attention_prefill.cu; padding rows zero.
    for (int idx = threadIdx.x; idx < ROWS * HD / 8; idx += THREADS) {
        const int r = idx / (HD / 8), c = idx % (HD / 8);
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < w.n_rows) {
            const int local = w.local_begin + r / w.group, head = w.kv_head * w.group + r % w.group;
            v = *reinterpret_cast<const uint4*>(p.q + (size_t)(w.q0 + local) * p.q_stride + head * HD + c * 8);
        }
        const uint32_t addr = sm.q + (c / 8) * ROWS * 128 + r * 128 + (((c % 8) ^ (r % 8)) << 4);
        *reinterpret_cast<uint4*>(smem_raw + (addr - shared_addr(smem_raw))) = v;
    }
    fence_proxy_async_shared();  // the st.shared above are read by wgmma (the async proxy)
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbarrier_init(sm.full_k + 8 * s, 1);               // the producer's arrive.expect_tx
            mbarrier_init(sm.full_v + 8 * s, 1);
            mbarrier_init(sm.empty_k + 8 * s, CONSUMERS * 4);  // one arrival per consumer warp
            mbarrier_init(sm.empty_v + 8 * s, CONSUMERS * 4);
        }
        mbarrier_init_fence();
    }
    __syncthreads();

    // Through a shuffle so that ptxas knows the role is warp-uniform: without it, the wgmmas of the
    // consumers sit on a "divergent path" and are serialised (ptxas C7520).
    const int warpgroup = __shfl_sync(0xffffffffu, threadIdx.x / 128, 0);
    if (warpgroup == 0) {
        // The overlapped loop holds S, P and O at once: its consumers take the producer's registers.
        if constexpr (OVERLAP) setmaxnreg_dec<24>();
        if (threadIdx.x == 0) load_kv_tiles<HD>(params, w, sm);
        return;
    }
    if constexpr (OVERLAP) setmaxnreg_inc<240>();

    const int consumer = warpgroup - 1;
    const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32, t4 = lane % 4;
    // This thread's two rows (h = 0, 1) and their absolute positions; -1 = padding.
    int row_pos[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int r = 64 * consumer + 16 * warp + lane / 4 + 8 * h;
        row_pos[h] = r < w.n_rows ? w.first_pos + w.local_begin + r / w.group : -1;
    }
    float o[HD / 2];
#pragma unroll
    for (int i = 0; i < HD / 2; ++i) o[i] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};
    const int min_pos = w.first_pos + w.local_begin;  // the block's first position: keys up to it need no mask
    const int tail_keys = w.n_keys - (w.n_tiles - 1) * KT;  // real keys of the last tile
    if constexpr (OVERLAP)
        consume_overlapped<HD>(o, sm, w.n_tiles, tail_keys, consumer, min_pos, row_pos, p.scale_log2, row_max, row_sum, Turns{SCHEDULE == PINGPONG, consumer});
    else consume_in_order<HD>(o, sm, w.n_tiles, tail_keys, consumer, min_pos, row_pos, p.scale_log2, row_max, row_sum);

    // Normalise and store. o[4j + 2h + e]: row h, dim 8j + 2*t4 + e.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float sum = row_sum[h];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const int r = 64 * consumer + 16 * warp + lane / 4 + 8 * h;
        if (r >= w.n_rows) continue;
        const float inv = 1.f / sum;
        const int local = w.local_begin + r / w.group, head = w.kv_head * w.group + r % w.group;
        bf16* dst = p.out + (size_t)(w.q0 + local) * p.n_heads * HD + head * HD;
#pragma unroll
        for (int j = 0; j < HD / 8; ++j)
            *reinterpret_cast<__nv_bfloat162*>(dst + 8 * j + 2 * t4) =
                __floats2bfloat162_rn(o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv);
    }
}

// Grid: (ceil(max q_len / (128 / G)), n_kv_heads, n_seqs); 384 threads; dynamic shared memory
// Layout<head_dim>::SMEM_BYTES (164,928 bytes at head_dim 128, 83,008 at 64).
#define PREFILL_WGMMA_KERNEL(name, hd, schedule)                                                   \
    extern "C" __global__ void __launch_bounds__(THREADS, 1) name(const __grid_constant__ PrefillWgmmaParams p) { \
        attention_prefill_wgmma<hd, schedule>(p);                                                  \
    }
PREFILL_WGMMA_KERNEL(attention_prefill_wgmma_bf16_hd128, 128, IN_ORDER)
PREFILL_WGMMA_KERNEL(attention_prefill_wgmma_bf16_hd64, 64, IN_ORDER)
PREFILL_WGMMA_KERNEL(attention_prefill_wgmma_overlap_bf16_hd128, 128, OVERLAP)
PREFILL_WGMMA_KERNEL(attention_prefill_wgmma_overlap_bf16_hd64, 64, OVERLAP)
PREFILL_WGMMA_KERNEL(attention_prefill_wgmma_pingpong_bf16_hd128, 128, PINGPONG)
PREFILL_WGMMA_KERNEL(attention_prefill_wgmma_pingpong_bf16_hd64, 64, PINGPONG)
