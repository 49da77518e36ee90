// Embedding gather: out[t, :] = table[ids[t], :].
//
// Bound by memory: each token reads and writes one row (dim * 2 bytes; 10 KiB at Nemo's
// dim 5120), so a 4096-token prefill moves 80 MiB: ~30 us at 3 TB/s; decode is launch-bound.
// One version: 16-byte loads when dim % 8 == 0 (checked by the wrapper), one block per token.
#include "common.cuh"

extern "C" __global__ void embedding_gather_bf16(
    const int32_t* __restrict__ ids,  // [n_tokens], each in [0, vocab)
    const bf16* __restrict__ table,   // [vocab, dim]
    bf16* __restrict__ out,           // [n_tokens, dim]
    int dim,                          // multiple of 8
    int vocab) {
    const int t = blockIdx.x;
    const int id = ids[t];
    // Ids are validated on the host or produced by the sampler; an out-of-range id here is a
    // bug that must fail the launch loudly, never read another row.
    if (id < 0 || id >= vocab) __trap();
    const bf16* src = table + (size_t)id * dim;
    bf16* dst = out + (size_t)t * dim;
    for (int i = threadIdx.x; i < dim / 8; i += blockDim.x) st8(dst + 8 * i, ldg8(src + 8 * i));
}
