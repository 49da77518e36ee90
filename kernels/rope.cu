// Rotary position embedding for both checkpoint layouts, fused with writing K and V into the
// paged KV cache:
//   q[t, h]            <- rope(q[t, h], positions[t])             (in place, in the qkv buffer)
//   k_cache[slots[t]]  <- rope(k[t], positions[t]);  v_cache[slots[t]] <- v[t]
// Layouts: interleaved pairs (2i, 2i+1) (Mistral's consolidated.safetensors) or rotate-half
// pairs (i, i + head_dim/2) (HF checkpoints, permuted by permute_for_rope).
//
// Bound by memory: per token it reads the q, k, v rows and head_dim/2 cos/sin pairs and writes
// them back: (32 + 2*8) * 128 * 2 * 2 bytes = 24 KiB at Nemo's shapes, ~8 ns/token at 3 TB/s;
// decode is launch-bound (one launch per layer either way, so fusing the cache write saves one).
// Angles come from a cos/sin table built once in double precision (rope_cos_sin_table_f32), so
// positions near 128k are as exact as f32 allows; sin/cos of f32 angles would be off by ~1e-2.
//
// rope_write_kv_e4m3 writes an FP8 cache instead (docs/fp8-kv.md): each KV head row of a token as
// e4m3 codes with one f32 scale (the row's largest magnitude maps to 448), quantised from the f32
// rotation (K) or the bf16 values (V). Half the cache bytes; the work is the same.
#include "grid_dependency.cuh"
#include "kv_e4m3.cuh"

// The scalars both RoPE writes take. Mirrored by `RopeDims` in src/gpu/kernels/rope.rs.
struct RopeDims {
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t head_dim;         // bf16: a multiple of 16; e4m3: a power of two in [16, 256]
    int32_t max_positions;
    int32_t n_slots;
    int32_t rotate_half;      // 0: interleaved pairs, 1: rotate-half pairs
};
static_assert(sizeof(RopeDims) == 24, "mirror of RopeDims in rope.rs");

// Mirrored by `RopeKvParams` in src/gpu/kernels/rope.rs; sizes asserted on both sides.
struct RopeKvParams {
    bf16* qkv;                // [n_tokens, (n_heads + 2 * n_kv_heads) * head_dim]: q | k | v
    bf16* k_cache;            // [n_slots, n_kv_heads, head_dim]
    bf16* v_cache;            // [n_slots, n_kv_heads, head_dim]
    const float2* cos_sin;    // [max_positions, head_dim / 2]: (cos, sin)
    const int32_t* positions; // [n_tokens], each in [0, max_positions)
    const int32_t* slots;     // [n_tokens], each in [0, n_slots)
    RopeDims d;
};
static_assert(sizeof(RopeKvParams) == 72, "mirror of RopeKvParams in rope.rs");

// Mirrored by `RopeKvE4m3Params` in src/gpu/kernels/rope.rs; sizes asserted on both sides.
struct RopeKvE4m3Params {
    bf16* qkv;                // [n_tokens, (n_heads + 2 * n_kv_heads) * head_dim]: q | k | v
    uint8_t* k_codes;         // [n_slots, n_kv_heads, head_dim] e4m3
    uint8_t* v_codes;         // [n_slots, n_kv_heads, head_dim] e4m3
    float* k_scales;          // [n_slots, n_kv_heads]: a K row's value is code * scale
    float* v_scales;          // [n_slots, n_kv_heads]
    const float2* cos_sin;    // [max_positions, head_dim / 2]: (cos, sin)
    const int32_t* positions; // [n_tokens], each in [0, max_positions)
    const int32_t* slots;     // [n_tokens], each in [0, n_slots)
    RopeDims d;
};
static_assert(sizeof(RopeKvE4m3Params) == 88, "mirror of RopeKvE4m3Params in rope.rs");

// The block's token (blockIdx.x): its qkv row, its K and V inside it, its position's cos/sin
// row and its cache slot. A position outside the table or a slot outside the cache traps.
struct RopeToken {
    bf16* row;          // q | k | v
    const bf16* k_row;  // [n_kv_heads, head_dim]
    const bf16* v_row;  // [n_kv_heads, head_dim]
    const float2* cs;   // [head_dim / 2]
    int slot;
};

__device__ __forceinline__ RopeToken rope_token(bf16* qkv, const float2* cos_sin, const int32_t* positions, const int32_t* slots,
                                                const RopeDims& d) {
    const int t = blockIdx.x;
    const int pos = positions[t], slot = slots[t];
    if (pos < 0 || pos >= d.max_positions || slot < 0 || slot >= d.n_slots) __trap();
    const int kv_width = d.n_kv_heads * d.head_dim;
    bf16* row = qkv + (size_t)t * (d.n_heads * d.head_dim + 2 * kv_width);
    const bf16* k_row = row + d.n_heads * d.head_dim;
    return RopeToken{row, k_row, k_row + kv_width, cos_sin + (size_t)pos * (d.head_dim / 2), slot};
}

// One block per token. Work items: (n_heads + n_kv_heads) * head_dim/8 rotations of 4 pairs,
// then n_kv_heads * head_dim/8 copies of 8 v values.
extern "C" __global__ void rope_write_kv_bf16(const __grid_constant__ RopeKvParams p) {
    grid_dependents_may_launch();
    grid_dependency_wait();  // qkv comes from the GEMV just before (grid_dependency.cuh)
    const RopeDims& d = p.d;
    const RopeToken tok = rope_token(p.qkv, p.cos_sin, p.positions, p.slots, d);
    const int hd = d.head_dim, half = hd / 2, quads = hd / 8;
    const int kv_width = d.n_kv_heads * hd;
    bf16* k_dst = p.k_cache + (size_t)tok.slot * kv_width;
    bf16* v_dst = p.v_cache + (size_t)tok.slot * kv_width;

    const int n_rot = (d.n_heads + d.n_kv_heads) * quads;
    const int n_copy = kv_width / 8;
    for (int w = threadIdx.x; w < n_rot + n_copy; w += blockDim.x) {
        if (w < n_rot) {
            const int head = w / quads, i0 = (w % quads) * 4;
            if (head < d.n_heads) {
                bf16* q = tok.row + head * hd;
                rope_quad(q, q, tok.cs, i0, half, d.rotate_half);
            } else {
                const int kh = head - d.n_heads;
                rope_quad(tok.k_row + kh * hd, k_dst + kh * hd, tok.cs, i0, half, d.rotate_half);
            }
        } else {
            const int i = w - n_rot;
            st8(v_dst + 8 * i, ld8(tok.v_row + 8 * i));
        }
    }
}

// One block per token. First the q heads' rotations (as rope_write_kv_bf16); then the
// 2 * n_kv_heads rows of K and V, each taken by head_dim/8 consecutive lanes holding 8 values
// apiece: the row's amax by shuffles within those lanes, then the codes.
extern "C" __global__ void rope_write_kv_e4m3(const __grid_constant__ RopeKvE4m3Params p) {
    grid_dependents_may_launch();
    grid_dependency_wait();  // qkv comes from the GEMV just before (grid_dependency.cuh)
    const RopeDims& d = p.d;
    const RopeToken tok = rope_token(p.qkv, p.cos_sin, p.positions, p.slots, d);
    const int hd = d.head_dim, half = hd / 2, quads = hd / 8;

    for (int w = threadIdx.x; w < d.n_heads * quads; w += blockDim.x) {
        bf16* q = tok.row + (w / quads) * hd;
        rope_quad(q, q, tok.cs, (w % quads) * 4, half, d.rotate_half);
    }

    // Rows go to groups of `quads` lanes; every lane runs every round (the shuffles need the
    // whole warp), a lane past the last row with zeros.
    const int group = threadIdx.x / quads, lane = threadIdx.x % quads, groups = blockDim.x / quads;
    const int rows = 2 * d.n_kv_heads;
    for (int base = 0; base < rows; base += groups) {
        const int r = base + group;
        const bool is_k = r < d.n_kv_heads, active = r < rows;
        const int head = is_k ? r : r - d.n_kv_heads;
        float x[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        if (active) kv_lane_values(tok.k_row, tok.v_row, tok.cs, r, d.n_kv_heads, hd, lane, d.rotate_half, x);
        const size_t at = (size_t)tok.slot * d.n_kv_heads + head;
        store_row_e4m3(x, lane, quads, active, is_k && d.rotate_half, half, (is_k ? p.k_codes : p.v_codes) + at * hd,
                       (is_k ? p.k_scales : p.v_scales) + at);
    }
}

// cos_sin[p, i] = (cos, sin)(p * theta^(-2i / head_dim)), computed in double precision.
extern "C" __global__ void rope_cos_sin_table_f32(
    float2* __restrict__ cos_sin,  // [max_positions, head_dim / 2]
    int max_positions,
    int head_dim,
    double theta) {
    const int half = head_dim / 2;
    const size_t n = (size_t)max_positions * half;
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < n;
         k += (size_t)gridDim.x * blockDim.x) {
        const int pos = (int)(k / half), i = (int)(k % half);
        const double inv_freq = pow(theta, -2.0 * i / head_dim);
        double s, c;
        sincos((double)pos * inv_freq, &s, &c);
        cos_sin[k] = make_float2((float)c, (float)s);
    }
}
