// The emulator's scheduler (see emu.h): runs a grid block after block, each block's threads as
// fibers on one host thread, switching only at barriers. Exported to Rust (tests/gpu/emulated/):
//   int emu_launch(grid, block, dyn_smem, entry, ctx): entry(ctx) runs once per GPU thread (it
//     calls the kernel with its parameters); returns 0, or -1 with emu_error() saying why
//     (a deadlock: which threads wait where; a launch the GPU would refuse).
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "emu.h"

namespace emu {

Thread* current_thread = nullptr;
dim3 block_idx, block_dim, grid_dim;
int async_mode = ASYNC_AT_ISSUE;

namespace {

constexpr size_t MAX_DYNAMIC_SHARED = MAX_DYNAMIC_SHARED_BYTES;
constexpr size_t STACK_BYTES = 128 * 1024;

alignas(128) unsigned char dynamic_arena[MAX_DYNAMIC_SHARED];
// 1024-aligned: offsets from it have the address bits the 128-byte swizzle reads (hopper.cpp).
alignas(1024) unsigned char shared_anchor[16];

struct Warp {
    unsigned live = 0;  // lanes not exited
    unsigned arrived = 0;
    unsigned generation = 0;
    alignas(16) unsigned char slots[32][16];
    uint32_t regs[32][8];
};

// cp.async copies a thread has issued and not yet landed (deferred mode only).
struct PendingCopy {
    uint32_t dst;
    const void* src;
    bool valid;
    uint32_t group;  // the commit group it belongs to
};
struct CopyQueue {
    std::vector<PendingCopy> pending;
    uint32_t group = 0;  // groups committed so far = the group of the next copy
};

// A named barrier (bar.sync / bar.arrive with an id and a thread count).
struct NamedBarrier {
    int arrived = 0, count = 0;
    unsigned generation = 0;
};

struct Block {
    NamedBarrier named[16];  // id 0 is __syncthreads' (kept apart in `arrived` / `generation`)
    std::vector<Thread> threads;
    std::vector<CopyQueue> copies;
    std::unique_ptr<unsigned char[]> stacks;  // STACK_BYTES a thread, one range (race_global.cpp)
    size_t stack_threads = 0;
    std::vector<Warp> warps;
    int live = 0, arrived = 0;
    unsigned generation = 0;
    uint64_t progress = 0;  // barrier arrivals and exits: a sweep without any is a deadlock...
    int settling = 0;       // ...unless threads wait in `let_others_settle`: then they go on
    unsigned settled = 0;   // sweeps that ended that way
    int dependency_waited = 0;       // threads at griddepcontrol.wait
    bool dependency_released = false;  // the block's wait is over (the primary's outputs are in)
    void* scheduler_sp = nullptr;
    void (*entry)(void*) = nullptr;
    void* ctx = nullptr;
    size_t dyn_smem = 0;
};

Block block;
std::string last_error;

// The launch's dependency hooks (`emu_set_dependency_hooks`); none by default.
struct DependencyHooks {
    void (*before_block)(void*) = nullptr;
    void (*at_wait)(void*) = nullptr;
    void* ctx = nullptr;
};
DependencyHooks dependency;
std::string hazard;  // the launch's first `report`

}  // namespace
}  // namespace emu

// Switches stacks: saves the callee-saved registers and the stack pointer into *save, loads
// `next`'s, and returns on that stack.
extern "C" void emu_switch(void** save, void* next);
#if defined(__x86_64__)
asm(R"(
.text
.p2align 4
.type emu_switch,@function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_switch, .-emu_switch
)");
#else
#error "the kernel emulator's fiber switch is written for x86-64"
#endif

namespace emu {
namespace {

void yield() {
    Thread* self = current_thread;
    if (async_mode == ASYNC_DEFERRED) land_tma_issued_by(self->linear);
    emu_switch(&self->sp, block.scheduler_sp);
}

void release_warp(Warp& w) {
    w.arrived = 0;
    ++w.generation;
    race::warp_meet(int(&w - block.warps.data()));
}

void release_block() {
    block.arrived = 0;
    ++block.generation;
    race::all_meet();
}

// Every live thread is at griddepcontrol.wait (or none waited and the rest exited): the
// primary's outputs go back in and the waiters go on.
void release_dependency() {
    block.dependency_released = true;
    ++block.progress;
    race::all_meet();
    if (dependency.at_wait) dependency.at_wait(dependency.ctx);
}

[[noreturn]] void fiber_main() {
    Thread* self = current_thread;
    block.entry(block.ctx);
    check_nothing_in_flight_at_exit();
    if (async_mode == ASYNC_DEFERRED) land_tma_issued_by(self->linear);  // an exit is a yield too
    self->done = true;
    ++block.progress;
    Warp& w = block.warps[self->warp];
    w.live &= ~(1u << self->lane);
    // Exited threads no longer hold barriers back.
    if (w.arrived && w.arrived == (unsigned)__builtin_popcount(w.live)) release_warp(w);
    if (--block.live > 0 && block.arrived == block.live) release_block();
    if (block.live > 0 && !block.dependency_released && block.dependency_waited == block.live) release_dependency();
    emu_switch(&self->sp, block.scheduler_sp);
    std::abort();  // a finished fiber is never resumed
}

extern "C" void emu_fiber_start() { fiber_main(); }

// A fresh stack whose first switch "returns" into emu_fiber_start with the ABI's alignment.
void* initial_stack(unsigned char* stack) {
    uintptr_t top = reinterpret_cast<uintptr_t>(stack + STACK_BYTES) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;                                          // fake return address of emu_fiber_start
    *--sp = reinterpret_cast<void*>(&emu_fiber_start);        // popped by emu_switch's ret
    for (int i = 0; i < 6; ++i) *--sp = nullptr;              // rbp rbx r12 r13 r14 r15
    return sp;
}

std::string describe_deadlock() {
    std::string msg = "deadlock in block (" + std::to_string(block_idx.x) + "," + std::to_string(block_idx.y) + "," +
                      std::to_string(block_idx.z) + "):";
    int shown = 0;
    for (const Thread& t : block.threads) {
        if (t.done || shown >= 8) continue;
        msg += " thread " + std::to_string(t.linear) + " waits at " + (t.waiting ? t.waiting : "?") + ";";
        ++shown;
    }
    return msg;
}

bool run_block(const dim3 bidx) {
    block_idx = bidx;
    const int n = block_dim.x * block_dim.y * block_dim.z;
    block.live = n;
    block.arrived = 0;
    block.progress = 0;
    block.settling = 0;
    block.dependency_waited = 0;
    block.dependency_released = false;
    if (dependency.before_block) dependency.before_block(dependency.ctx);
    std::memset(dynamic_arena, 0xff, sizeof dynamic_arena);
    race::block_start(n, block.dyn_smem);
    block.copies.assign(n, CopyQueue{});
    for (NamedBarrier& b : block.named) b = NamedBarrier{};
    reset_hopper_state(n);
    for (int w = 0; w < (n + 31) / 32; ++w) {
        block.warps[w].arrived = 0;
        block.warps[w].live = (w + 1) * 32 <= n ? 0xffffffffu : (1u << (n - w * 32)) - 1;
    }
    for (int i = 0; i < n; ++i) {
        Thread& t = block.threads[i];
        t.linear = i;
        t.idx = uint3{(unsigned)(i % block_dim.x), (unsigned)(i / block_dim.x % block_dim.y),
                      (unsigned)(i / (block_dim.x * block_dim.y))};
        t.lane = i & 31;
        t.warp = i >> 5;
        t.done = false;
        t.waiting = nullptr;
        t.sp = initial_stack(block.stacks.get() + size_t(i) * STACK_BYTES);
    }
    int remaining = n;
    while (remaining > 0) {
        const uint64_t before = block.progress;
        for (Thread& t : block.threads) {
            if (t.done) continue;
            current_thread = &t;
            emu_switch(&block.scheduler_sp, t.sp);
            if (t.done) --remaining;
        }
        current_thread = nullptr;
        if (remaining == 0) {
            // A block of a dependent launch that ends without any thread at griddepcontrol.wait
            // could complete before the primary, and then so could the grid: later kernels that
            // read outputs of kernels further back rely on the chain (kernels/grid_dependency.cuh).
            if (dependency.at_wait && !block.dependency_released)
                report("a block of a dependent launch ended without reaching griddepcontrol.wait");
            for (int id = 1; id < 16; ++id)
                if (block.named[id].arrived)
                    report(("named barrier " + std::to_string(id) + " has arrivals no bar.sync consumed when the block ends")
                               .c_str());
        }
        if (remaining > 0 && block.progress == before && block.settling > 0) {
            ++block.settled;
            continue;
        }
        if (remaining > 0 && block.progress == before) {
            last_error = describe_deadlock();
            return false;
        }
    }
    return true;
}

}  // namespace

void trap() {
    const Thread* t = current_thread;
    std::fprintf(stderr, "emu: __trap() in thread %d of block (%u,%u,%u)\n", t ? t->linear : -1, block_idx.x, block_idx.y,
                 block_idx.z);
    std::abort();
}

unsigned char* dynamic_shared() { return dynamic_arena; }

void report(const char* what) {
    if (!hazard.empty()) return;
    const Thread* t = current_thread;
    hazard = std::string(what) + " (thread " + std::to_string(t ? t->linear : -1) + " of block (" +
             std::to_string(block_idx.x) + "," + std::to_string(block_idx.y) + "," + std::to_string(block_idx.z) + "))";
}

bool thread_done(int linear) { return block.threads[linear].done; }

bool dependency_pending() { return dependency.at_wait && !block.dependency_released; }

uint32_t shared_offset(const void* p) {
    const ptrdiff_t d = static_cast<const unsigned char*>(p) - shared_anchor;
    if (d < INT32_MIN || d > INT32_MAX) {
        std::fprintf(stderr, "emu: %p is not a shared-memory address\n", p);
        std::abort();
    }
    return static_cast<uint32_t>(static_cast<int32_t>(d));
}

unsigned char* shared_pointer(uint32_t offset) { return shared_anchor + static_cast<int32_t>(offset); }

void sync_block() {
    Thread* self = current_thread;
    const unsigned gen = block.generation;
    ++block.progress;
    if (++block.arrived == block.live) {
        release_block();
        return;
    }
    self->waiting = "__syncthreads";
    while (block.generation == gen) yield();
    self->waiting = nullptr;
}

void sync_warp(unsigned mask) {
    Thread* self = current_thread;
    Warp& w = block.warps[self->warp];
    const unsigned gen = w.generation;
    ++block.progress;
    race::warp_arrive(self->warp, self->linear);
    if (++w.arrived == (unsigned)__builtin_popcount(mask & w.live)) {
        release_warp(w);
        return;
    }
    self->waiting = "a warp-collective operation (shuffle, ldmatrix, mma, __syncwarp)";
    while (w.generation == gen) yield();
    self->waiting = nullptr;
}

namespace {
NamedBarrier& named_barrier(int id, int count) {
    if (id < 1 || id > 15 || count <= 0 || count % 32 || count > int(block.threads.size())) {
        std::fprintf(stderr, "emu: bar.sync / bar.arrive %d, %d: id 1-15 (0 is __syncthreads), a count of whole warps\n", id,
                     count);
        std::abort();
    }
    NamedBarrier& b = block.named[id];
    if (b.arrived && b.count != count) report("a named barrier's phase sees two different thread counts");
    b.count = count;
    return b;
}

// Counts one arrival; true if it completed the phase.
bool arrive_named(NamedBarrier& b) {
    ++block.progress;
    if (++b.arrived < b.count) return false;
    b.arrived = 0;
    ++b.generation;
    return true;
}
}  // namespace

void named_barrier_sync(int id, int count) {
    NamedBarrier& b = named_barrier(id, count);
    const unsigned gen = b.generation;
    race::named_arrive(id, current_thread->linear, true);
    if (arrive_named(b)) {
        race::named_meet(id);
        return;
    }
    current_thread->waiting = "bar.sync (a named barrier)";
    while (b.generation == gen) yield();
    current_thread->waiting = nullptr;
}

void named_barrier_arrive(int id, int count) {
    NamedBarrier& b = named_barrier(id, count);
    race::named_arrive(id, current_thread->linear, false);
    if (arrive_named(b)) race::named_meet(id);
}

void grid_dependency_wait() {
    if (!dependency.at_wait || block.dependency_released) return;
    if (++block.dependency_waited == block.live) {
        release_dependency();
        return;
    }
    current_thread->waiting = "griddepcontrol.wait";
    ++block.progress;
    while (!block.dependency_released) yield();
    current_thread->waiting = nullptr;
}

void wait_a_turn(const char* what) {
    current_thread->waiting = what;
    yield();
    current_thread->waiting = nullptr;
}

void made_progress() { ++block.progress; }

void let_others_settle(const char* what) {
    const unsigned settled = block.settled;
    ++block.settling;
    while (block.settled == settled) wait_a_turn(what);
    --block.settling;
}

unsigned char* warp_slot(int lane) { return block.warps[current_thread->warp].slots[lane]; }
uint32_t* warp_regs(int lane) { return block.warps[current_thread->warp].regs[lane]; }

void cp_async16(uint32_t smem, const void* gmem, bool valid) {
    unsigned char* dst = shared_pointer(smem);
    if (smem % 16 || reinterpret_cast<uintptr_t>(gmem) % 16) {
        std::fprintf(stderr, "emu: cp.async of 16 bytes needs 16-byte aligned addresses\n");
        std::abort();
    }
    if (valid) race::global_read(gmem, 16);  // (checked at issue in both modes)
    if (async_mode == ASYNC_DEFERRED) {
        CopyQueue& q = block.copies[current_thread->linear];
        q.pending.push_back(PendingCopy{smem, gmem, valid, q.group});
        return;
    }
    race::shared_write(smem, 16);
    if (valid) std::memcpy(dst, gmem, 16);
    else std::memset(dst, 0, 16);
}

void cp_async_commit() { ++block.copies[current_thread->linear].group; }

// cp.async.wait_group n: every committed group but the newest n has landed (copies not yet
// committed are not waited for).
void cp_async_wait(int n) {
    CopyQueue& q = block.copies[current_thread->linear];
    const int64_t landed_below = int64_t(q.group) - n;
    size_t kept = 0;
    for (const PendingCopy& c : q.pending) {
        if (int64_t(c.group) < landed_below) {
            unsigned char* dst = shared_pointer(c.dst);
            race::shared_write(c.dst, 16);
            if (c.valid) std::memcpy(dst, c.src, 16);
            else std::memset(dst, 0, 16);
        } else {
            q.pending[kept++] = c;
        }
    }
    q.pending.resize(kept);
}

// ldmatrix .x4: lane l gives the row address of row l % 8 of matrix l / 8 (8 x 8 b16, 16-byte
// rows). Lane t receives, for each matrix i, the pair at row t / 4, columns 2(t % 4) and
// 2(t % 4) + 1 - of the matrix, or with .trans of its transpose.
void ldmatrix_x4(uint32_t r[4], uint32_t addr, bool trans) {
    const int lane = current_thread->lane;
    if (addr % 16) {
        std::fprintf(stderr, "emu: ldmatrix row address not 16-byte aligned\n");
        std::abort();
    }
    warp_regs(lane)[0] = addr;
    sync_warp(0xffffffffu);
    race::shared_read(addr, 16);  // the warp reads every lane's row; each lane counts its own
    for (int i = 0; i < 4; ++i) {
        uint16_t lo, hi;
        if (!trans) {
            const uint16_t* row = reinterpret_cast<const uint16_t*>(shared_pointer(warp_regs(8 * i + lane / 4)[0]));
            lo = row[2 * (lane % 4)];
            hi = row[2 * (lane % 4) + 1];
        } else {
            const uint16_t* r0 = reinterpret_cast<const uint16_t*>(shared_pointer(warp_regs(8 * i + 2 * (lane % 4))[0]));
            const uint16_t* r1 = reinterpret_cast<const uint16_t*>(shared_pointer(warp_regs(8 * i + 2 * (lane % 4) + 1)[0]));
            lo = r0[lane / 4];
            hi = r1[lane / 4];
        }
        r[i] = uint32_t(lo) | uint32_t(hi) << 16;
    }
    sync_warp(0xffffffffu);
}

namespace {
float bf16_half(uint32_t reg, int half) {
    const uint32_t bits = half ? reg & 0xffff0000u : reg << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
}  // namespace

// mma.sync.m16n8k16.row.col.f32.bf16: with g = lane / 4, t = lane % 4,
//   A (16 x 16): a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..)
//   B (16 x 8, k x n): b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g)
//   C (16 x 8): c[0..1] = (g, 2t..2t+1), c[2..3] = (g+8, 2t..2t+1)
void mma_m16n8k16_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    const int lane = current_thread->lane;
    uint32_t* mine = warp_regs(lane);
    for (int i = 0; i < 4; ++i) mine[i] = a[i];
    mine[4] = b0;
    mine[5] = b1;
    sync_warp(0xffffffffu);
    auto A = [](int row, int k) {
        return bf16_half(warp_regs((row % 8) * 4 + (k % 8) / 2)[(row / 8) + 2 * (k / 8)], k % 2);
    };
    auto B = [](int k, int n) { return bf16_half(warp_regs(n * 4 + (k % 8) / 2)[4 + k / 8], k % 2); };
    const int g = lane / 4, t = lane % 4;
    float d[4];
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
        float acc = c[i];
        for (int k = 0; k < 16; ++k) acc += A(row, k) * B(k, col);
        d[i] = acc;
    }
    sync_warp(0xffffffffu);
    for (int i = 0; i < 4; ++i) c[i] = d[i];
}

}  // namespace emu

extern "C" __attribute__((visibility("default"))) void emu_set_async_mode(int mode) {
    emu::async_mode = mode == emu::ASYNC_DEFERRED ? emu::ASYNC_DEFERRED : emu::ASYNC_AT_ISSUE;
}

// Hooks for the next launches' griddepcontrol.wait (emu.h); null pointers remove them.
extern "C" __attribute__((visibility("default"))) void emu_set_dependency_hooks(void (*before_block)(void*),
                                                                                 void (*at_wait)(void*), void* ctx) {
    emu::dependency = emu::DependencyHooks{before_block, at_wait, ctx};
}

extern "C" __attribute__((visibility("default"))) const char* emu_error() { return emu::last_error.c_str(); }

extern "C" __attribute__((visibility("default"))) int emu_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                                                   unsigned by, unsigned bz, size_t dyn_smem,
                                                                   void (*entry)(void*), void* ctx) {
    using namespace emu;
    const unsigned long long threads = (unsigned long long)bx * by * bz;
    if (threads == 0 || threads > 1024 || gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535) {
        last_error = "launch configuration the GPU would refuse";
        return -1;
    }
    if (dyn_smem > MAX_DYNAMIC_SHARED) {
        last_error = "dynamic shared memory beyond the GPU's 227 KiB";
        return -1;
    }
    grid_dim = dim3(gx, gy, gz);
    block_dim = dim3(bx, by, bz);
    block.entry = entry;
    block.ctx = ctx;
    block.dyn_smem = dyn_smem;
    block.threads.assign(threads, Thread{});
    if (block.stack_threads < threads) {
        block.stacks.reset(new unsigned char[threads * STACK_BYTES]);
        block.stack_threads = threads;
    }
    block.warps.assign((threads + 31) / 32, Warp{});
    hazard.clear();
    // Memory of the emulator's that kernel code touches: not global memory to the race check.
    race::launch_start();
    race::private_memory(block.stacks.get(), block.stack_threads * STACK_BYTES);
    race::private_memory(block.threads.data(), block.threads.size() * sizeof(Thread));
    race::private_memory(block.warps.data(), block.warps.size() * sizeof(Warp));
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x)
                if (!run_block(dim3(x, y, z))) return -1;
    if (!hazard.empty()) {
        last_error = hazard;
        return -1;
    }
    return 0;
}
