// The emulator's Hopper instructions (see emu.h): mbarriers, TMA 2-D tile loads with the 128-byte
// swizzle, and wgmma m64n256k16 reading K-major 128-byte-swizzled operands through shared-memory
// descriptors. TMA loads and wgmma groups complete at issue or as late as the PTX rules allow, as
// emu.h's async mode says.
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
#include <map>
#include <vector>

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

void complete_if_done(uint32_t bar, MBarrier& b) {
    if (b.pending == 0 && b.tx == 0) {
        race::mbarrier_complete(bar, b.phase);
        b.phase ^= 1;
        b.pending = b.expected;
        made_progress();
    }
}

void complete_tx(uint32_t bar, int32_t bytes, int agent) {
    MBarrier& b = barrier_at(bar);
    race::mbarrier_arrive(bar, b.phase, agent);
    b.tx -= bytes;
    complete_if_done(bar, b);
}

// The 128-byte swizzle: the 16-byte chunk index (address bits 4-6) XOR the row within an
// 8 x 128-byte atom (bits 7-9).
uint32_t swizzle128(uint32_t addr) { return addr ^ (((addr >> 7) & 7) << 4); }

uint16_t shared_bf16(uint32_t addr) {
    race::async_proxy_read(addr, 2);  // a wgmma operand, read by the thread completing it
    return *reinterpret_cast<const uint16_t*>(shared_pointer(addr));
}

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

namespace {

// A TMA load issued and not yet landed (deferred mode); the tensor map is copied at issue.
struct PendingTma {
    uint32_t dst;
    uint64_t map[16];
    int inner, outer;
    uint32_t bar;
    int issuer;
    int agent;  // the race check's agent for the issuer's TMA loads
};
std::vector<PendingTma> pending_tma;

void land(const PendingTma& op) {
    const uint64_t base = op.map[1], dim_inner = op.map[2], dim_outer = op.map[3], stride = op.map[4];
    const int box_inner = int(op.map[5]), box_outer = int(op.map[6]);
    for (int r = 0; r < box_outer; ++r) {
        for (int e = 0; e < box_inner; ++e) {
            const int64_t row = int64_t(op.outer) + r, col = int64_t(op.inner) + e;
            uint16_t v = 0;  // outside the tensor: zeros (and still counted)
            if (row >= 0 && col >= 0 && uint64_t(row) < dim_outer && uint64_t(col) < dim_inner) {
                const void* src = reinterpret_cast<const void*>(base + uint64_t(row) * stride + uint64_t(col) * 2);
                race::global_read_by(op.issuer, src, 2);
                v = *static_cast<const uint16_t*>(src);
            }
            const uint32_t at = swizzle128(op.dst + uint32_t(r * 128 + e * 2));
            race::agent_write(op.agent, at, 2);
            *reinterpret_cast<uint16_t*>(shared_pointer(at)) = v;
        }
    }
    complete_tx(op.bar, box_inner * box_outer * 2, op.agent);
}

template <class Pred>
void land_tma_where(Pred pred) {
    std::vector<PendingTma> now, still;
    for (const PendingTma& op : pending_tma) (pred(op) ? now : still).push_back(op);
    pending_tma.swap(still);
    for (const PendingTma& op : now) land(op);  // lands data and completes barriers, issues nothing
}

}  // namespace

void land_tma_issued_by(int thread) {
    if (!pending_tma.empty()) land_tma_where([thread](const PendingTma& op) { return op.issuer == thread; });
}

void mbarrier_init(uint32_t bar, uint32_t arrivals) {
    if (arrivals == 0 || arrivals >= (1u << 15)) fail("mbarrier.init with an arrival count out of range");
    MBarrier& b = barrier_at(bar);
    b.expected = arrivals;
    b.phase = 0;
    b.pending = arrivals;
    b.tx = 0;
    race::mbarrier_reset(bar);
}

void mbarrier_arrive(uint32_t bar) {
    MBarrier& b = barrier_at(bar);
    if (b.pending == 0) fail("mbarrier.arrive on a phase with no arrival pending");
    race::mbarrier_arrive(bar, b.phase, current_thread->linear);
    --b.pending;
    made_progress();
    complete_if_done(bar, b);
}

void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    barrier_at(bar).tx += int32_t(bytes);
    mbarrier_arrive(bar);
}

void mbarrier_wait(uint32_t bar, uint32_t parity) {
    // The phase of parity `parity` has completed once the current phase has the other parity.
    for (;;) {
        if (!pending_tma.empty()) land_tma_where([bar](const PendingTma& op) { return op.bar == bar; });
        if (barrier_at(bar).phase != (parity & 1)) {
            race::mbarrier_acquire(bar, parity & 1, current_thread->linear);
            return;
        }
        wait_a_turn("mbarrier.try_wait.parity");
    }
}

void tma_load_2d(uint32_t dst, const uint64_t map[16], int inner, int outer, uint32_t bar) {
    if (map[0] != EMU_TENSOR_MAP) fail("TMA load through a tensor map not in the emulator's encoding");
    if (map[7] != 128 || map[5] * 2 != 128) fail("TMA: only 128-byte-swizzled boxes 128 bytes wide are emulated");
    if (dst % 1024) fail("TMA: a 128-byte-swizzled box needs a 1024-byte aligned destination");
    barrier_at(bar);  // checks the barrier's alignment at issue
    PendingTma op{dst, {}, inner, outer, bar, current_thread->linear, race::tma_issued(current_thread->linear)};
    std::memcpy(op.map, map, sizeof op.map);
    if (async_mode == ASYNC_DEFERRED) pending_tma.push_back(op);
    else land(op);
}

namespace {

// One thread's share of one wgmma: what it read at issue (A from registers), and where it reads
// and writes when it completes.
struct WgmmaOp {
    float* d;
    int n, warp, lane;  // warp and lane within the warpgroup
    bool a_from_registers;
    const uint32_t* a_regs;    // this thread's A registers (deferred mode checks they stay put)
    uint32_t a_at_issue[4];
    float a[2][16];
    uint64_t desc_a, desc_b;
    bool trans_b;
    std::vector<float> d_at_issue;  // empty when an earlier in-flight wgmma of this thread writes d
};

// Deferred mode: a warpgroup's groups not yet completed; each thread's uncommitted wgmmas sit in
// the group it commits next.
struct WarpgroupQueue {
    std::map<uint32_t, std::vector<WgmmaOp>> groups;
    uint32_t finished = 0;  // groups below this have completed
};
std::vector<WarpgroupQueue> warpgroups;
std::vector<uint32_t> committed;  // per thread of the block: wgmma groups committed

// d[4j + r] is row 16 * warp + lane / 4 + 8 * (r / 2), column 8j + 2 * (lane % 4) + r % 2 (warp
// and lane within the warpgroup), as in the PTX ISA's wgmma D fragment figure.
void execute(const WgmmaOp& op) {
    const int half = op.n / 2;
    if (!op.d_at_issue.empty() && std::memcmp(op.d_at_issue.data(), op.d, half * sizeof(float)) != 0)
        report("wgmma accumulators changed while the wgmma was in flight (before the wgmma.wait_group covering it)");
    if (op.a_from_registers && std::memcmp(op.a_at_issue, op.a_regs, sizeof op.a_at_issue) != 0)
        report("wgmma A registers changed while the wgmma was in flight (before the wgmma.wait_group covering it)");
    float a[2][16];
    if (op.a_from_registers) {
        std::memcpy(a, op.a, sizeof a);
    } else {
        for (int h = 0; h < 2; ++h)
            for (int k = 0; k < 16; ++k) a[h][k] = k_major_sw128(op.desc_a, 16 * op.warp + op.lane / 4 + 8 * h, k);
    }
    for (int j = 0; j < op.n / 8; ++j) {
        for (int c = 0; c < 2; ++c) {
            const int col = 8 * j + 2 * (op.lane % 4) + c;
            float b[16];
            for (int k = 0; k < 16; ++k)
                b[k] = op.trans_b ? n_major_sw128(op.desc_b, k, col) : k_major_sw128(op.desc_b, col, k);
            for (int h = 0; h < 2; ++h) {
                float acc = op.d[4 * j + 2 * h + c];
                for (int k = 0; k < 16; ++k) acc += a[h][k] * b[k];
                op.d[4 * j + 2 * h + c] = acc;
            }
        }
    }
}

int warpgroup_of(const Thread* t) { return t->linear / 128; }

}  // namespace

void reset_hopper_state(int threads) {
    pending_tma.clear();
    warpgroups.assign((threads + 127) / 128, WarpgroupQueue{});
    committed.assign(threads, 0);
}

// d[64 x N] += A[64 x 16] . B[16 x N] for the calling thread's share of the warpgroup's
// accumulators (layout at `execute`). A comes from shared memory (K-major descriptor) or, with
// `a_regs`, from registers in the mma.sync A layout of each warp's 16 rows; B from shared
// memory, K-major or (`trans_b`) N-major.
void wgmma_bf16(float* d, int n, const uint32_t* a_regs, uint64_t desc_a, uint64_t desc_b, bool trans_b) {
    check_swizzle128(desc_b);
    const int t = int(current_thread->idx.x) % 128;
    WgmmaOp op{d, n, t / 32, t % 32, a_regs != nullptr, a_regs, {}, {}, desc_a, desc_b, trans_b, {}};
    if (a_regs) {
        std::memcpy(op.a_at_issue, a_regs, sizeof op.a_at_issue);
        const int lane = op.lane;
        uint32_t* mine = warp_regs(lane);
        for (int i = 0; i < 4; ++i) mine[i] = a_regs[i];
        sync_warp(0xffffffffu);
        // Register i of lane 4 * row8 + k8 / 2 holds (row8 + 8 * (i % 2), k8 + 8 * (i / 2)).
        for (int h = 0; h < 2; ++h)
            for (int k = 0; k < 16; ++k) {
                const uint32_t reg = warp_regs((lane / 4) * 4 + (k % 8) / 2)[h + 2 * (k / 8)];
                op.a[h][k] = bf16_bits_to_float(uint16_t(k % 2 ? reg >> 16 : reg & 0xffff));
            }
        sync_warp(0xffffffffu);
    } else {
        check_swizzle128(desc_a);
    }
    if (async_mode != ASYNC_DEFERRED) {
        execute(op);
        return;
    }
    WarpgroupQueue& q = warpgroups[warpgroup_of(current_thread)];
    bool chained = false;  // an earlier wgmma of this thread, still in flight, writes d
    for (const auto& [g, ops] : q.groups)
        for (const WgmmaOp& o : ops) chained |= o.d == d;
    if (!chained) op.d_at_issue.assign(d, d + n / 2);
    q.groups[committed[current_thread->linear]].push_back(std::move(op));
}

void wgmma_commit() {
    if (async_mode != ASYNC_DEFERRED) return;
    ++committed[current_thread->linear];
    made_progress();
}

void wgmma_wait(int n) {
    if (async_mode != ASYNC_DEFERRED) return;
    const Thread* self = current_thread;
    const int64_t finish_below = int64_t(committed[self->linear]) - n;
    WarpgroupQueue& q = warpgroups[warpgroup_of(self)];
    if (finish_below <= int64_t(q.finished)) return;
    // Every other thread runs as far as it can first: a stage handed back before this wait is
    // refilled now.
    let_others_settle("wgmma.wait_group (letting the other threads run first)");
    const int first = warpgroup_of(self) * 128, last = std::min(first + 128, int(committed.size()));
    while (int64_t(q.finished) < finish_below) {
        const uint32_t g = q.finished;
        // The group runs once every warp of the warpgroup has committed it (exited threads aside).
        for (;;) {
            bool all = true;
            for (int i = first; i < last; ++i) all &= thread_done(i) || committed[i] > g;
            if (all) break;
            wait_a_turn("wgmma.wait_group (the warpgroup's other warps have not committed the group)");
        }
        if (q.finished != g) continue;  // another thread of the warpgroup completed it meanwhile
        auto it = q.groups.find(g);
        if (it != q.groups.end()) {
            for (const WgmmaOp& op : it->second) execute(op);
            q.groups.erase(it);
        }
        q.finished = g + 1;
        made_progress();
    }
}

void check_nothing_in_flight_at_exit() {
    if (async_mode != ASYNC_DEFERRED || warpgroups.empty()) return;
    const WarpgroupQueue& q = warpgroups[warpgroup_of(current_thread)];
    const int warp = (int(current_thread->idx.x) % 128) / 32, lane = current_thread->lane;
    for (const auto& [g, ops] : q.groups)
        for (const WgmmaOp& op : ops)
            if (op.warp == warp && op.lane == lane) {
                report("a thread exits with a wgmma in flight (no wgmma.wait_group covers it)");
                return;
            }
}

void wgmma_m64n256k16_bf16(float (&d)[128], uint64_t desc_a, uint64_t desc_b) {
    wgmma_bf16(d, 256, nullptr, desc_a, desc_b, false);
}

}  // namespace emu
