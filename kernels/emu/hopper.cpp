// The emulator's Hopper instructions (see emu.h): mbarriers, TMA 2-D tile loads with the 128-byte
// swizzle, and wgmma m64n256k16 reading K-major 128-byte-swizzled operands through shared-memory
// descriptors. Each completes at issue; what the GPU does asynchronously is reduced to its result.
//
// Shared-memory addresses are the 32-bit offsets of emu.h, whose anchor is 1024-aligned, so the
// address bits the swizzle reads are those of the real address (the kernels align their tiles).
//
// Tensor maps: the driver's CUtensorMap is opaque, so tests pass maps in this emulator's own
// encoding (u64 words): [0] EMU_TENSOR_MAP, [1] global address, [2] inner dimension (elements,
// contiguous), [3] outer dimension (rows), [4] row stride in bytes, [5] box inner, [6] box outer,
// [7] swizzle span in bytes (128). Elements are bf16.
#include <cstdio>
#include <cstdlib>

#include "emu.h"

namespace emu {
namespace {

constexpr uint64_t EMU_TENSOR_MAP = 0x50414d54554d45ull;  // "EMUTMAP"

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "emu: %s (thread %d of block (%u,%u,%u))\n", what, current_thread ? current_thread->linear : -1,
                 block_idx.x, block_idx.y, block_idx.z);
    std::abort();
}

// An mbarrier's 8 bytes, as this emulator keeps them.
struct MBarrier {
    uint32_t expected : 15;  // arrivals per phase
    uint32_t phase : 1;      // parity of the current (incomplete) phase
    uint32_t pending : 16;   // arrivals still missing in this phase
    int32_t tx;              // transaction bytes still expected in this phase
};
static_assert(sizeof(MBarrier) == 8, "an mbarrier is 8 bytes of shared memory");

MBarrier& barrier_at(uint32_t bar) {
    if (bar % 8) fail("mbarrier address not 8-byte aligned");
    return *reinterpret_cast<MBarrier*>(shared_pointer(bar));
}

void complete_if_done(MBarrier& b) {
    if (b.pending == 0 && b.tx == 0) {
        b.phase ^= 1;
        b.pending = b.expected;
        made_progress();
    }
}

void complete_tx(uint32_t bar, int32_t bytes) {
    MBarrier& b = barrier_at(bar);
    b.tx -= bytes;
    complete_if_done(b);
}

// The 128-byte swizzle: the 16-byte chunk index (address bits 4-6) XOR the row within an
// 8 x 128-byte atom (bits 7-9).
uint32_t swizzle128(uint32_t addr) { return addr ^ (((addr >> 7) & 7) << 4); }

uint16_t shared_bf16(uint32_t addr) { return *reinterpret_cast<const uint16_t*>(shared_pointer(addr)); }

float bf16_bits_to_float(uint16_t h) {
    const uint32_t bits = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// Element (row, k) of a K-major operand under a 128-byte-swizzle descriptor: start address
// (bits 0-13, 16-byte units), stride byte offset between 8-row groups (bits 32-45), layout type
// (bits 62-63, 1 = 128-byte swizzle). Rows of an 8-row group are 128 bytes apart.
float k_major_sw128(uint64_t desc, int row, int k) {
    const uint32_t start = uint32_t(desc & 0x3FFF) << 4;
    const uint32_t stride = uint32_t((desc >> 32) & 0x3FFF) << 4;
    const uint32_t linear = start + (row / 8) * stride + (row % 8) * 128 + k * 2;
    return bf16_bits_to_float(shared_bf16(swizzle128(linear)));
}

// Element (k, n) of an N-major (MN-major) operand under a 128-byte-swizzle descriptor: 64
// consecutive n share a 128-byte row, rows k of an 8-row group are 128 bytes apart; the leading
// byte offset (bits 16-29) steps between 64-wide n groups, the stride byte offset between 8-row
// k groups (the PTX ISA's canonical layout ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)), T = 8 bf16).
float n_major_sw128(uint64_t desc, int k, int n) {
    const uint32_t start = uint32_t(desc & 0x3FFF) << 4;
    const uint32_t leading = uint32_t((desc >> 16) & 0x3FFF) << 4;
    const uint32_t stride = uint32_t((desc >> 32) & 0x3FFF) << 4;
    const uint32_t linear = start + (n / 64) * leading + (n % 64) * 2 + (k / 8) * stride + (k % 8) * 128;
    return bf16_bits_to_float(shared_bf16(swizzle128(linear)));
}

void check_swizzle128(uint64_t desc) {
    if ((desc >> 62) != 1) fail("wgmma descriptor: only the 128-byte swizzle layout is emulated");
    if ((desc >> 49) & 7) fail("wgmma descriptor: a non-zero base offset is not emulated");
}

}  // namespace

void mbarrier_init(uint32_t bar, uint32_t arrivals) {
    if (arrivals == 0 || arrivals >= (1u << 15)) fail("mbarrier.init with an arrival count out of range");
    MBarrier& b = barrier_at(bar);
    b.expected = arrivals;
    b.phase = 0;
    b.pending = arrivals;
    b.tx = 0;
}

void mbarrier_arrive(uint32_t bar) {
    MBarrier& b = barrier_at(bar);
    if (b.pending == 0) fail("mbarrier.arrive on a phase with no arrival pending");
    --b.pending;
    made_progress();
    complete_if_done(b);
}

void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    barrier_at(bar).tx += int32_t(bytes);
    mbarrier_arrive(bar);
}

void mbarrier_wait(uint32_t bar, uint32_t parity) {
    // The phase of parity `parity` has completed once the current phase has the other parity.
    while (barrier_at(bar).phase == (parity & 1)) wait_a_turn("mbarrier.try_wait.parity");
}

void tma_load_2d(uint32_t dst, const uint64_t map[16], int inner, int outer, uint32_t bar) {
    if (map[0] != EMU_TENSOR_MAP) fail("TMA load through a tensor map not in the emulator's encoding");
    const uint64_t base = map[1], dim_inner = map[2], dim_outer = map[3], stride = map[4];
    const int box_inner = int(map[5]), box_outer = int(map[6]);
    if (map[7] != 128 || box_inner * 2 != 128) fail("TMA: only 128-byte-swizzled boxes 128 bytes wide are emulated");
    if (dst % 1024) fail("TMA: a 128-byte-swizzled box needs a 1024-byte aligned destination");
    for (int r = 0; r < box_outer; ++r) {
        for (int e = 0; e < box_inner; ++e) {
            const int64_t row = int64_t(outer) + r, col = int64_t(inner) + e;
            uint16_t v = 0;  // outside the tensor: zeros (and still counted)
            if (row >= 0 && col >= 0 && uint64_t(row) < dim_outer && uint64_t(col) < dim_inner)
                v = *reinterpret_cast<const uint16_t*>(base + uint64_t(row) * stride + uint64_t(col) * 2);
            *reinterpret_cast<uint16_t*>(shared_pointer(swizzle128(dst + uint32_t(r * 128 + e * 2)))) = v;
        }
    }
    complete_tx(bar, box_inner * box_outer * 2);
}

// d[64 x N] += A[64 x 16] . B[16 x N] for the calling thread's share of the warpgroup's
// accumulators: d[4j + r] is row 16 * warp + lane / 4 + 8 * (r / 2), column 8j + 2 * (lane % 4) +
// r % 2 (warp and lane within the warpgroup), as in the PTX ISA's wgmma D fragment figure.
// A comes from shared memory (K-major descriptor) or, with `a_regs`, from registers in the
// mma.sync A layout of each warp's 16 rows; B from shared memory, K-major or (`trans_b`) N-major.
void wgmma_bf16(float* d, int n, const uint32_t* a_regs, uint64_t desc_a, uint64_t desc_b, bool trans_b) {
    check_swizzle128(desc_b);
    const int t = int(current_thread->idx.x) % 128, warp = t / 32, lane = t % 32;
    float a[2][16];
    if (a_regs) {
        uint32_t* mine = warp_regs(lane);
        for (int i = 0; i < 4; ++i) mine[i] = a_regs[i];
        sync_warp(0xffffffffu);
        // Register i of lane 4 * row8 + k8 / 2 holds (row8 + 8 * (i % 2), k8 + 8 * (i / 2)).
        for (int h = 0; h < 2; ++h)
            for (int k = 0; k < 16; ++k) {
                const uint32_t reg = warp_regs((lane / 4) * 4 + (k % 8) / 2)[h + 2 * (k / 8)];
                a[h][k] = bf16_bits_to_float(uint16_t(k % 2 ? reg >> 16 : reg & 0xffff));
            }
        sync_warp(0xffffffffu);
    } else {
        check_swizzle128(desc_a);
        for (int h = 0; h < 2; ++h)
            for (int k = 0; k < 16; ++k) a[h][k] = k_major_sw128(desc_a, 16 * warp + lane / 4 + 8 * h, k);
    }
    for (int j = 0; j < n / 8; ++j) {
        for (int c = 0; c < 2; ++c) {
            const int col = 8 * j + 2 * (lane % 4) + c;
            float b[16];
            for (int k = 0; k < 16; ++k) b[k] = trans_b ? n_major_sw128(desc_b, k, col) : k_major_sw128(desc_b, col, k);
            for (int h = 0; h < 2; ++h) {
                float acc = d[4 * j + 2 * h + c];
                for (int k = 0; k < 16; ++k) acc += a[h][k] * b[k];
                d[4 * j + 2 * h + c] = acc;
            }
        }
    }
}

void wgmma_m64n256k16_bf16(float (&d)[128], uint64_t desc_a, uint64_t desc_b) {
    wgmma_bf16(d, 256, nullptr, desc_a, desc_b, false);
}

}  // namespace emu
