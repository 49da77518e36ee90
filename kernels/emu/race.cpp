// The emulator's shared-memory race check: vector clocks over a block's threads, so that two
// accesses to the same shared-memory bytes by different threads, at least one a write, with no
// barrier, warp synchronisation or mbarrier phase ordering them, are reported as a race, even
// though the fibers, switching only at barriers, ran them in a harmless order.
//
// What is seen: every load and store the kernel file makes (it is compiled with g++'s
// -fsanitize=thread instrumentation, whose __tsan_* calls land here instead of in a TSan
// runtime) to its __shared__ variables (statics in this library's .bss) or to dynamic shared
// memory; and the emulator's own shared-memory traffic: cp.async and TMA landings
// (writes), ldmatrix and wgmma operand reads. Other accesses go to race_global.cpp's check.
//
// Happens-before: __syncthreads and griddepcontrol.wait join every thread; a warp-collective
// operation (__syncwarp, shuffles, ldmatrix, mma) joins the lanes that took part; bar.sync on a
// named barrier acquires what every arrival of that phase had done (bar.arrive releases only);
// mbarrier.arrive releases into the phase, its completion publishes it, and a wait that sees the
// phase complete acquires it. A TMA load is done by its issuing thread's "async agent", which
// knows what the thread knew at issue; its landing releases into the mbarrier it completes.
// Shuffles counting as synchronisation is lenient (the CUDA guide promises memory ordering only
// for __syncwarp), chosen so that warp-synchronous code is not reported.
//
// The proxy rule is checked too: wgmma (the async proxy) may read what a thread wrote with
// st.shared only after that thread's fence.proxy.async.
//
// Granularity: 2-byte units (bf16), each keeping its last write and the reads since; a unit read
// by several threads with no order between them keeps a read clock per thread (FastTrack).
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <string>
#include <vector>

#include "race_state.h"

// This library's .bss, where the static __shared__ variables are (emu.h makes them statics; g++
// ignores a section attribute on a template's static locals). The kernel code writes no other
// static there, and the emulator's own statics are accessed by uninstrumented code only, so any
// instrumented access in this range outside the dynamic arena is to static shared memory.
extern "C" unsigned char __bss_start[] __attribute__((weak, visibility("hidden")));
extern "C" unsigned char _end[] __attribute__((weak, visibility("hidden")));

namespace emu {
namespace race {

bool on = true;
int threads = 0, width = 0;
uint32_t generation = 0;

namespace {

std::vector<uint32_t> clocks;  // width x width: clocks[t * width + u] = what t knows of u
int agent_issuer[AGENTS];      // the thread whose TMA loads agent threads + i does, or -1
std::vector<uint32_t> proxy_fences;  // per thread: fence.proxy.async executed so far
size_t dynamic_bytes = 0;      // the launch's dynamic shared memory

std::vector<Unit> dynamic_units, static_units;
std::vector<std::vector<uint32_t>> read_sets;
std::vector<int32_t> free_read_sets;

// Per warp: the lanes in the current collective and what they knew; per named barrier: the
// phase's joined clock and its bar.sync threads; per mbarrier phase: the joined clock of its
// arrivals, and of its last completion (acquired by waits).
struct Meeting {
    std::vector<uint32_t> joined;
    std::vector<int> waiters;
};
std::vector<Meeting> warps;
Meeting named[16];
struct MBarrierClocks {
    std::vector<uint32_t> arriving[2], completed[2];
};
std::vector<std::pair<uint32_t, MBarrierClocks>> mbarriers;  // by address (a handful per block)

// __bss_start need not be aligned: units count 2-byte steps from the 16-byte boundary below it.
const unsigned char* bss_base() {
    return reinterpret_cast<const unsigned char*>(reinterpret_cast<uintptr_t>(__bss_start) & ~uintptr_t(15));
}

// The agent of `issuer`'s TMA loads (assigned at its first), or -1 with a report when more than
// AGENTS threads issue them.
int agent_of(int issuer) {
    for (int i = 0; i < AGENTS; ++i) {
        if (agent_issuer[i] == issuer) return threads + i;
        if (agent_issuer[i] < 0) {
            agent_issuer[i] = issuer;
            return threads + i;
        }
    }
    report("race check: more than 8 threads of a block issue TMA loads");
    return -1;
}

void join(uint32_t* into, const uint32_t* from) {
    for (int i = 0; i < width; ++i) into[i] = into[i] > from[i] ? into[i] : from[i];
}

void join(std::vector<uint32_t>& into, const uint32_t* from) {
    if (into.empty()) into.assign(width, 0);
    join(into.data(), from);
}

void tick(int t) { ++clock_of(t)[t]; }

// A meeting completes: each thread waiting at it acquires what every arrival knew.
void meet(Meeting& m) {
    for (int t : m.waiters) {
        join(clock_of(t), m.joined.data());
        tick(t);
    }
    m = Meeting{};
}

MBarrierClocks& mbarrier(uint32_t bar) {
    for (auto& [addr, c] : mbarriers)
        if (addr == bar) return c;
    mbarriers.emplace_back(bar, MBarrierClocks{});
    return mbarriers.back().second;
}

void race(const char* kind, int actor, int other, Place where, const char* other_kind) {
    char at[64];
    if (where.region == std::string("global")) std::snprintf(at, sizeof at, "global memory at %#" PRIxPTR, where.at);
    else std::snprintf(at, sizeof at, "%s shared memory at byte %zu", where.region, size_t(where.at));
    char msg[512];
    std::snprintf(msg, sizeof msg,
                  "%s race: %s of block %s %s %s, which %s %s with no barrier, warp synchronisation or mbarrier "
                  "ordering the two",
                  where.region == std::string("global") ? "global-memory" : "shared-memory", who(actor).c_str(),
                  block_name().c_str(), kind, at, who(other).c_str(), other_kind);
    report(msg);
}

// The units holding `p` and after it (`*available` of them), or null: outside shared memory
// (`*global` set), or past the launch's dynamic shared memory (reported).
Unit* unit_at(const unsigned char* p, const char** region, size_t* offset, size_t* available, bool* global) {
    *global = false;
    unsigned char* dyn = dynamic_shared();
    std::vector<Unit>* units = nullptr;
    if (p >= dyn + dynamic_bytes && p < dyn + MAX_DYNAMIC_SHARED_BYTES) {
        // On the GPU: another block's shared memory or an illegal address.
        char msg[200];
        std::snprintf(msg, sizeof msg, "shared-memory access at byte %zu of dynamic shared memory, past the %zu bytes the launch asked for",
                      size_t(p - dyn), dynamic_bytes);
        report(msg);
        return nullptr;
    }
    if (p >= dyn && p < dyn + dynamic_units.size() * 2) {
        *region = "dynamic";
        *offset = size_t(p - dyn);
        units = &dynamic_units;
    } else if (__bss_start && p >= bss_base() && p < _end) {
        *region = "static";
        *offset = size_t(p - bss_base());
        units = &static_units;
    } else {
        *global = true;
        return nullptr;
    }
    *available = units->size() - *offset / 2;
    return &(*units)[*offset / 2];
}

}  // namespace

uint32_t* clock_of(int t) { return &clocks[size_t(t) * width]; }

std::string who(int t) {
    if (t >= threads) return "the TMA loads of thread " + std::to_string(agent_issuer[t - threads]);
    return "thread " + std::to_string(t);
}

void read_unit(Unit& u, int t, Place where) {
    const uint32_t* mine = clock_of(t);
    const uint32_t now = mine[t];
    if (u.gen != generation) u = Unit{generation};
    if (u.writer >= 0 && u.writer != t && mine[u.writer] < u.write_clock) race("reads", t, u.writer, where, "wrote");
    if (u.read_set >= 0) {
        read_sets[u.read_set][t] = now;
    } else if (u.reader < 0 || u.reader == t || mine[u.reader] >= u.read_clock) {
        u.reader = t;
        u.read_clock = now;
    } else {  // two reads with no order between them: a clock per reader from now on
        int32_t s;
        if (!free_read_sets.empty()) {
            s = free_read_sets.back();
            free_read_sets.pop_back();
            read_sets[s].assign(threads, 0);
        } else {
            s = int32_t(read_sets.size());
            read_sets.emplace_back(threads, 0);
        }
        read_sets[s][u.reader] = u.read_clock;
        read_sets[s][t] = now;
        u.read_set = s;
    }
}

void write_unit(Unit& u, int t, Place where) {
    const uint32_t* mine = clock_of(t);
    if (u.gen != generation) u = Unit{generation};
    if (u.writer >= 0 && u.writer != t && mine[u.writer] < u.write_clock) race("writes", t, u.writer, where, "wrote");
    if (u.read_set >= 0) {
        const std::vector<uint32_t>& reads = read_sets[u.read_set];
        for (int r = 0; r < threads; ++r)
            if (r != t && reads[r] > mine[r]) {
                race("writes", t, r, where, "read");
                break;
            }
        free_read_sets.push_back(u.read_set);
        u.read_set = -1;
    } else if (u.reader >= 0 && u.reader != t && mine[u.reader] < u.read_clock) {
        race("writes", t, u.reader, where, "read");
    }
    u.writer = t;
    u.write_clock = mine[t];
    u.reader = -1;
    u.fences_at_write = t < threads ? proxy_fences[t] : 0;
}

namespace {

// The async proxy (wgmma) reads what a thread wrote with st.shared only after that thread's
// fence.proxy.async (the PTX memory model's proxy rule); TMA writes are async-proxy already.
void check_proxy(const Unit& u, const char* region, size_t offset) {
    if (u.gen != generation || u.writer < 0 || u.writer >= threads) return;
    if (proxy_fences[u.writer] != u.fences_at_write) return;
    char msg[256];
    std::snprintf(msg, sizeof msg,
                  "proxy fence missing: wgmma reads %s shared memory at byte %zu, which thread %d wrote with st.shared and "
                  "no fence.proxy.async after",
                  region, offset, u.writer);
    report(msg);
}

void access_as(int t, const void* p, size_t bytes, bool write, bool async_proxy = false) {
    const char* region;
    size_t offset, available;
    bool global;
    Unit* u = unit_at(static_cast<const unsigned char*>(p), &region, &offset, &available, &global);
    if (global && !async_proxy) global_access(t, p, bytes, write);
    if (!u) return;
    const size_t n = std::min((offset + bytes - 1) / 2 - offset / 2 + 1, available);
    for (size_t i = 0; i < n; ++i) {
        const Place where{region, offset + 2 * i};
        if (async_proxy) check_proxy(u[i], region, offset + 2 * i);
        if (write) write_unit(u[i], t, where);
        else read_unit(u[i], t, where);
    }
}

}  // namespace

void block_start(int n, size_t dyn_smem) {
    threads = n;
    width = n + AGENTS;
    clocks.assign(size_t(width) * width, 0);
    for (int t = 0; t < width; ++t) clock_of(t)[t] = 1;
    for (int& i : agent_issuer) i = -1;
    proxy_fences.assign(n, 0);
    if (++generation == 0) {  // wrapped: clear for real
        dynamic_units.assign(dynamic_units.size(), Unit{});
        static_units.assign(static_units.size(), Unit{});
        generation = 1;
    }
    dynamic_units.resize((dyn_smem + 1) / 2);
    dynamic_bytes = dyn_smem;
    static_units.resize(__bss_start ? size_t(_end - bss_base() + 1) / 2 : 0);
    read_sets.clear();
    free_read_sets.clear();
    warps.assign((n + 31) / 32, Meeting{});
    for (Meeting& m : named) m = Meeting{};
    mbarriers.clear();
    global_block_start();
}

void access(const void* p, size_t bytes, bool write) {
    if (on && current_thread && threads) access_as(current_thread->linear, p, bytes, write);
}

void atomic(const void* p) {
    const unsigned char* c = static_cast<const unsigned char*>(p);
    const unsigned char* dyn = dynamic_shared();
    const bool shared = (c >= dyn && c < dyn + MAX_DYNAMIC_SHARED_BYTES) || (__bss_start && c >= bss_base() && c < _end);
    if (!shared) global_atomic(p);
}

std::string block_name() {
    return "(" + std::to_string(block_idx.x) + "," + std::to_string(block_idx.y) + "," + std::to_string(block_idx.z) + ")";
}

void shared_read(uint32_t addr, size_t bytes) { access(shared_pointer(addr), bytes, false); }

void async_proxy_read(uint32_t addr, size_t bytes) {
    if (on && current_thread && threads) access_as(current_thread->linear, shared_pointer(addr), bytes, false, true);
}

void proxy_fence() {
    if (current_thread && threads) ++proxy_fences[current_thread->linear];
}

void shared_write(uint32_t addr, size_t bytes) { access(shared_pointer(addr), bytes, true); }

void agent_write(int agent, uint32_t addr, size_t bytes) {
    if (on && threads && agent >= 0) access_as(agent, shared_pointer(addr), bytes, true);
}

void all_meet() {
    if (!threads) return;
    std::vector<uint32_t> joined(width, 0);
    for (int t = 0; t < threads; ++t) join(joined.data(), clock_of(t));
    for (int t = 0; t < threads; ++t) {
        std::copy(joined.begin(), joined.end(), clock_of(t));
        tick(t);
    }
}

void warp_arrive(int warp, int thread) {
    if (!threads) return;
    join(warps[warp].joined, clock_of(thread));
    warps[warp].waiters.push_back(thread);
}

void warp_meet(int warp) {
    if (threads) meet(warps[warp]);
}

void named_arrive(int id, int thread, bool waits) {
    if (!threads) return;
    join(named[id].joined, clock_of(thread));
    if (waits) named[id].waiters.push_back(thread);
    else tick(thread);
}

void named_meet(int id) {
    if (threads) meet(named[id]);
}

int tma_issued(int issuer) {
    if (!threads) return -1;
    const int a = agent_of(issuer);
    if (a < 0) return -1;
    join(clock_of(a), clock_of(issuer));
    tick(a);
    return a;
}

void mbarrier_reset(uint32_t bar) {
    if (threads) mbarrier(bar) = MBarrierClocks{};
}

void mbarrier_arrive(uint32_t bar, int parity, int actor) {
    if (!threads || actor < 0) return;
    join(mbarrier(bar).arriving[parity], clock_of(actor));
    tick(actor);
}

void mbarrier_complete(uint32_t bar, int parity) {
    if (!threads) return;
    MBarrierClocks& c = mbarrier(bar);
    c.completed[parity] = c.arriving[parity];
    c.arriving[parity].clear();
}

void mbarrier_acquire(uint32_t bar, int parity, int thread) {
    if (!threads) return;
    const std::vector<uint32_t>& done = mbarrier(bar).completed[parity];
    if (!done.empty()) join(clock_of(thread), done.data());
}

}  // namespace race
}  // namespace emu

// g++'s -fsanitize=thread instrumentation of the kernel file calls these (no TSan runtime is
// linked): every load and store the kernel makes, by size.
#define EMU_TSAN_HOOKS(n)                                                                                   \
    extern "C" __attribute__((visibility("hidden"))) void __tsan_read##n(void* p) { emu::race::access(p, n, false); } \
    extern "C" __attribute__((visibility("hidden"))) void __tsan_write##n(void* p) { emu::race::access(p, n, true); } \
    extern "C" __attribute__((visibility("hidden"))) void __tsan_unaligned_read##n(void* p) { emu::race::access(p, n, false); } \
    extern "C" __attribute__((visibility("hidden"))) void __tsan_unaligned_write##n(void* p) { emu::race::access(p, n, true); }
EMU_TSAN_HOOKS(1)
EMU_TSAN_HOOKS(2)
EMU_TSAN_HOOKS(4)
EMU_TSAN_HOOKS(8)
EMU_TSAN_HOOKS(16)
extern "C" __attribute__((visibility("hidden"))) void __tsan_read_range(void* p, unsigned long n) { emu::race::access(p, n, false); }
extern "C" __attribute__((visibility("hidden"))) void __tsan_write_range(void* p, unsigned long n) { emu::race::access(p, n, true); }
extern "C" __attribute__((visibility("hidden"))) void __tsan_init() {}
extern "C" __attribute__((visibility("hidden"))) void __tsan_func_entry(void*) {}
extern "C" __attribute__((visibility("hidden"))) void __tsan_func_exit() {}
extern "C" __attribute__((visibility("hidden"))) void __tsan_vptr_update(void**, void*) {}

// Race checking for the next launches (on by default); a race is reported like the emulator's
// other hazards, as the launch's error.
extern "C" __attribute__((visibility("default"))) void emu_set_race_check(int on) { emu::race::on = on != 0; }
