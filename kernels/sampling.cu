// Token choice on the GPU, by the same rule as the CPU sampler (src/sampling, docs/architecture.md):
//   temperature 0: argmax, the lowest id on ties;
//   else weights w = exp((logit - max) / T) in f64; the pool is the top-k tokens (exactly k, ties
//   to the lower id) or every token with w > 0; min-p keeps w >= min_p; top-p keeps the rank-order
//   prefix whose mass before each token is below top_p x (pool mass); the token is the first, in
//   rank order (logit descending, id ascending), whose cumulative weight exceeds u x (kept mass),
//   u = the seeded uniform of (seed, step) computed on the host.
// Sums run in rank order over the kept set like the CPU's; only the pool mass without top-k is a
// tree sum here and an id-order sum there, which can differ in the last bits (a draw landing
// within ~1e-16 of a boundary could differ).
//
// Bound by memory and latency: one read of the logits (512 KB at Nemo's vocabulary) per sequence
// per level; the kept prefix is found among the candidates above a weight cutoff (1e-2, 1e-4,
// 1e-8, 1e-16, then all), gathered into shared memory and bitonic-sorted by rank key. When more
// than CAP candidates would be needed the kernel reports it (-2) and the caller samples on the
// host instead: never a silent approximation.
#include "common.cuh"

namespace {
constexpr int THREADS = 512;
constexpr int CAP = 8192;  // candidates sorted in shared memory (8192 x 16 bytes = 128 KiB)
__constant__ double CUTOFFS[4] = {1e-2, 1e-4, 1e-8, 1e-16};
}  // namespace

// Mirrored by `SampleParams` in src/gpu/kernels/sampling.rs; sizes asserted on both sides.
struct SampleParams {
    double u;           // uniform in [0, 1) for this step
    float temperature;  // 0 = greedy
    float top_p;        // (0, 1]; 1 = off
    float min_p;        // [0, 1]; 0 = off
    int32_t top_k;      // 0 = off
};
static_assert(sizeof(SampleParams) == 24, "mirror of SampleParams in sampling.rs");

// The CPU's rank key: ascending order = logit descending, then id ascending.
__device__ __forceinline__ uint64_t rank_key(float logit, uint32_t token) {
    uint32_t bits = __float_as_uint(logit + 0.0f);
    const uint32_t ascending = (bits >> 31) ? ~bits : (bits | 0x80000000u);
    return ((uint64_t)(~ascending) << 32) | token;
}

// op over the whole block; every thread gets the result. `identity` fills the unused lanes.
template <typename T, typename Op>
__device__ T block_reduce(T x, T* scratch, Op op, T identity) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = op(x, __shfl_xor_sync(0xffffffffu, x, o));
    __syncthreads();
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    x = lane < THREADS / 32 ? scratch[lane] : identity;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = op(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

// The row's largest logit, to every thread of the block; NaN when the row cannot be used: a NaN
// or +inf in it, or nothing finite.
__device__ float row_max(const float* row, int vocab, float* scratch_f, int* scratch_i) {
    float mx = -INFINITY;
    int bad = 0;
    for (int i = threadIdx.x; i < vocab; i += THREADS) {
        const float l = row[i];
        bad |= isnan(l) || l == INFINITY;
        mx = fmaxf(mx, l);
    }
    mx = block_reduce(mx, scratch_f, [](float a, float b) { return fmaxf(a, b); }, -INFINITY);
    bad = block_reduce(bad, scratch_i, [](int a, int b) { return a | b; }, 0);
    return bad || mx == -INFINITY ? NAN : mx;
}

// One block per sequence. tokens[s] = the chosen id, -1 for logits with NaN / +inf / nothing
// finite, -2 when more than CAP candidates would have to be sorted (sample on the host).
extern "C" __global__ void __launch_bounds__(THREADS) sample_tokens_f32(
    const float* __restrict__ logits,        // [n_seqs, vocab]
    const SampleParams* __restrict__ params, // [n_seqs]
    int32_t* __restrict__ tokens,            // [n_seqs]
    int vocab) {
    DYNAMIC_SHARED(unsigned char, smem);
    uint64_t* keys = reinterpret_cast<uint64_t*>(smem);      // [CAP]
    double* weights = reinterpret_cast<double*>(keys + CAP);  // [CAP]
    __shared__ double scratch_d[32];
    __shared__ float scratch_f[32];
    __shared__ int scratch_i[32];
    __shared__ unsigned long long scratch_u[32];
    __shared__ int count;

    const int s = blockIdx.x;
    const float* row = logits + (size_t)s * vocab;
    const SampleParams p = params[s];

    // Max, validity, and the argmax (lowest id among the largest).
    const float mx = row_max(row, vocab, scratch_f, scratch_i);
    if (isnan(mx)) {
        if (threadIdx.x == 0) tokens[s] = -1;
        return;
    }
    if (p.temperature == 0.f) {
        unsigned long long best = ~0ull;
        for (int i = threadIdx.x; i < vocab; i += THREADS)
            if (row[i] == mx) best = min(best, (unsigned long long)i);
        best = block_reduce(best, scratch_u, [](unsigned long long a, unsigned long long b) { return a < b ? a : b; }, ~0ull);
        if (threadIdx.x == 0) tokens[s] = (int32_t)best;
        return;
    }

    const double inv_t = 1.0 / (double)p.temperature, max_d = (double)mx;
    auto weight = [&](int i) { return exp(((double)row[i] - max_d) * inv_t); };
    const bool top_k = p.top_k > 0 && p.top_k < vocab;
    const bool filtered = top_k || p.top_p < 1.f || p.min_p > 0.f;

    // Without top-k the pool is every token with w > 0; its mass and size.
    double pool_mass = 0.0;
    int pool_size = 0;
    for (int i = threadIdx.x; i < vocab; i += THREADS) {
        const double w = weight(i);
        if (w > 0.0) {
            pool_mass += w;
            ++pool_size;
        }
    }
    pool_mass = block_reduce(pool_mass, scratch_d, [](double a, double b) { return a + b; }, 0.0);
    pool_size = block_reduce(pool_size, scratch_i, [](int a, int b) { return a + b; }, 0);

    for (int level = 0; level <= 4; ++level) {
        const double cutoff = level < 4 ? CUTOFFS[level] : 0.0;
        // Candidates {w >= cutoff, w > 0}.
        int n = 0;
        for (int i = threadIdx.x; i < vocab; i += THREADS) {
            const double w = weight(i);
            n += w > 0.0 && w >= cutoff;
        }
        n = block_reduce(n, scratch_i, [](int a, int b) { return a + b; }, 0);
        const bool whole_pool = n == pool_size;
        if (top_k && n < p.top_k && !whole_pool) continue;  // the top k are not all above it
        if (n > CAP) {
            if (threadIdx.x == 0) tokens[s] = -2;
            return;
        }
        // Gather, pad to a power of two with keys that sort last, bitonic sort ascending.
        if (threadIdx.x == 0) count = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < vocab; i += THREADS) {
            const double w = weight(i);
            if (w > 0.0 && w >= cutoff) {
                const int at = atomicAdd(&count, 1);
                keys[at] = rank_key(row[i], (uint32_t)i);
                weights[at] = w;
            }
        }
        __syncthreads();
        int size = 1;
        while (size < n) size <<= 1;
        for (int i = n + threadIdx.x; i < size; i += THREADS) keys[i] = ~0ull;
        __syncthreads();
        for (int k = 2; k <= size; k <<= 1) {
            for (int j = k >> 1; j > 0; j >>= 1) {
                for (int i = threadIdx.x; i < size; i += THREADS) {
                    const int partner = i ^ j;
                    if (partner > i && (keys[i] > keys[partner]) == ((i & k) == 0)) {
                        const uint64_t t = keys[i];
                        keys[i] = keys[partner];
                        keys[partner] = t;
                    }
                }
                __syncthreads();
            }
        }
        // Weights in rank order, from the sorted keys (their low half is the token).
        for (int i = threadIdx.x; i < n; i += THREADS) weights[i] = weight((int)(uint32_t)keys[i]);
        __syncthreads();

        if (threadIdx.x == 0) {
            const int pool_n = top_k ? min(p.top_k, n) : n;
            double total = pool_mass;
            if (top_k) {
                total = 0.0;
                for (int i = 0; i < pool_n; ++i) total += weights[i];
            }
            int kept = pool_n;
            if (p.min_p > 0.f) {
                int m = 0;
                while (m < pool_n && weights[m] >= (double)p.min_p) ++m;
                kept = m;
            }
            if (p.top_p < 1.f) {
                const double threshold = (double)p.top_p * total;
                double before = 0.0;
                int t = 0;
                while (t < kept && before < threshold) before += weights[t++];
                kept = max(t, 1);
            }
            // A filtered prefix is known only if it ends before the candidates do, or they are
            // the whole pool, or they hold the top k.
            const bool complete = kept < n || whole_pool || (top_k && n >= p.top_k);
            int result = -3;  // this level does not hold what the draw needs: try the next
            if (!filtered || complete) {
                double kept_total = total;
                if (filtered) {
                    kept_total = 0.0;
                    for (int i = 0; i < kept; ++i) kept_total += weights[i];
                }
                const double target = p.u * kept_total;
                double cumulative = 0.0;
                for (int i = 0; i < kept && result == -3; ++i) {
                    cumulative += weights[i];
                    if (target < cumulative) result = (int)(uint32_t)keys[i];
                }
                // Rounding left the target past the end: the last kept token (as on the CPU).
                if (result == -3 && (filtered || whole_pool)) result = (int)(uint32_t)keys[kept - 1];
            }
            if (result != -3) tokens[s] = result;
            count = result;
        }
        __syncthreads();
        if (count != -3) return;
    }
}

// Mirrored by `LogitEdit` in src/sampling/penalties.rs (the CPU reference, `LogitEdit::apply`).
struct LogitEdit {
    uint32_t token;
    float bias;   // logit_bias
    float scale;  // the repetition penalty if the token was seen, else 1
    float sub;    // frequency * count + presence * (count > 0)
};
static_assert(sizeof(LogitEdit) == 16, "mirror of LogitEdit in penalties.rs");

// logit_bias and the repetition, frequency and presence penalties, before sample_tokens_f32:
// l = ((l + bias) / scale if positive, else * scale) - sub, in the CPU's order of rounded f32
// operations (the _rn intrinsics are never fused into an FMA). One thread per edit; the wrapper
// checks that no token appears twice within a row, so no two threads touch one logit. The raw
// logit goes to `saved`, from which the host restores rows whose logprobs it reports.
// A few thousand scattered 4-byte accesses per step: bound by launch latency, not bandwidth.
extern "C" __global__ void __launch_bounds__(256) apply_logit_edits_f32(
    float* __restrict__ logits,             // [n_rows, vocab]
    const LogitEdit* __restrict__ edits,    // [n_edits], tokens < vocab
    const int32_t* __restrict__ edit_rows,  // [n_edits], rows < n_rows
    float* __restrict__ saved,              // [n_edits]
    int n_edits,
    int vocab) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_edits) return;
    const LogitEdit e = edits[i];
    float* at = logits + (size_t)edit_rows[i] * vocab + e.token;
    const float l = *at;
    saved[i] = l;
    float x = __fadd_rn(l, e.bias);
    x = x > 0.f ? __fdiv_rn(x, e.scale) : __fmul_rn(x, e.scale);
    *at = __fsub_rn(x, e.sub);
}

// A grammar's token masks (src/structured), before the edits and the sampler read the logits:
// a token whose bit is clear gets -inf. Bit t % 32 of word t / 32, as `sampling::mask` on the
// CPU. One thread per logit of a masked row (blockIdx.y picks the mask): at Nemo's vocabulary a
// row reads 16 KiB of mask and writes at most 512 KiB, a few microseconds of bandwidth.
extern "C" __global__ void __launch_bounds__(256) apply_token_mask_f32(
    float* __restrict__ logits,             // [n_rows, vocab]
    const uint32_t* __restrict__ masks,     // [n_masked, words], words = ceil(vocab / 32)
    const int32_t* __restrict__ mask_rows,  // [n_masked], distinct rows < n_rows
    int vocab,
    int words) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= vocab) return;
    const uint32_t word = masks[(size_t)blockIdx.y * words + t / 32];
    if (((word >> (t % 32)) & 1u) == 0u) logits[(size_t)mask_rows[blockIdx.y] * vocab + t] = -INFINITY;
}

// Scoring text (`nemo perplexity`): per row, log p(target) = logit[target] - logsumexp(row), as
// `sampling::token_logprobs` computes on the host (there all in f64). One block per
// row, two reads of it (max, then the sum): 1 MiB a row at Nemo's vocabulary, bound by memory
// bandwidth. A row with NaN or +inf, or nothing finite, gives NaN (the caller reports it).
extern "C" __global__ void __launch_bounds__(THREADS) target_logprobs_f32(
    const float* __restrict__ logits,    // [n_rows, vocab]
    const int32_t* __restrict__ targets, // [n_rows], each < vocab
    float* __restrict__ out,             // [n_rows]
    int vocab) {
    __shared__ float scratch_f[32];
    __shared__ int scratch_i[32];
    __shared__ double scratch_d[32];
    const float* row = logits + (size_t)blockIdx.x * vocab;
    const float mx = row_max(row, vocab, scratch_f, scratch_i);
    if (isnan(mx)) {
        if (threadIdx.x == 0) out[blockIdx.x] = NAN;
        return;
    }
    double sum = 0.0;
    // exp and log in f32 (their f64 forms spill), the sum in f64: within ~1e-6 of the host's.
    for (int i = threadIdx.x; i < vocab; i += THREADS) sum += (double)expf(row[i] - mx);
    sum = block_reduce(sum, scratch_d, [](double a, double b) { return a + b; }, 0.0);
    if (threadIdx.x == 0) out[blockIdx.x] = row[targets[blockIdx.x]] - (mx + logf((float)sum));
}
