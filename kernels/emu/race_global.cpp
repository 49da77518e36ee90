// The emulator's global-memory race check. The blocks of a launch run in no set order and share
// no barrier, so a global unit written by one block and read or written by another is a race,
// unless the second block acquired the first's writes through an atomic: the writer's threads
// make their writes and __threadfence(), and a thread that a __syncthreads (or its own program
// order) puts after those fences does an atomic; the other block's atomic on the same address,
// followed by that thread's own __threadfence(), acquires them (CUDA's "last block" pattern, as
// PyTorch's reductions write it: every thread fences, the block meets, thread 0 arrives).
// Within one block, global units are checked like shared ones (race.cpp's vector clocks).
//
// What is global: every instrumented access outside shared memory, except the emulator's own
// memory that kernel code touches (fiber stacks: locals and parameters; warp exchange slots;
// the thread records behind threadIdx), registered per launch; plus the source reads of cp.async
// and TMA loads. The shadow lives for one launch: kernels are ordered by the stream.
//
// Simplifications, each on the lenient side but one: a block acquires as a whole when one of its
// threads does (its other threads normally meet it at a __syncthreads first); a unit keeps its
// last write and its last read, and a write after reads by two or more blocks is reported even
// if it was ordered after them (no kernel here does that).
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "race_state.h"

namespace emu {
namespace race {
namespace {

struct GlobalUnit {
    Unit local;  // the current block's threads' accesses
    int32_t writer_block = -1, writer_thread = -1;
    uint32_t writer_clock = 0;
    int32_t reader_block = -1, reader_thread = -1;  // the last read
    uint32_t reader_clock = 0;
    bool read_by_blocks = false;  // two or more blocks have read it since the write
    bool read_non_coherent = false;  // by ld.global.nc (__ldg) in this launch
};

constexpr uintptr_t PAGE_UNITS = 2048;  // 4 KiB of global memory
std::unordered_map<uintptr_t, std::unique_ptr<GlobalUnit[]>> pages;
uintptr_t cached_page = ~uintptr_t(0);
GlobalUnit* cached_units = nullptr;

std::vector<std::pair<uintptr_t, uintptr_t>> private_ranges;  // [begin, end) of emulator memory

int32_t block_id = -1;  // the current block's linear index in the grid
// Per earlier block: how far the current block has acquired each of its threads' clocks.
std::unordered_map<int32_t, std::vector<uint32_t>> acquired;
// Per thread of the current block: its clock at its last __threadfence (empty: none yet; the
// fence's own tick is its own entry), and the global atomics it did since (they acquire at its
// next fence).
std::vector<std::vector<uint32_t>> fence_clock;
std::vector<std::vector<uintptr_t>> pending_acquires;
// Per atomic address: per block, the joined fence clocks of its threads that did atomics there.
std::unordered_map<uintptr_t, std::unordered_map<int32_t, std::vector<uint32_t>>> released;

GlobalUnit& unit(uintptr_t u) {
    const uintptr_t page = u / PAGE_UNITS;
    if (page != cached_page) {
        std::unique_ptr<GlobalUnit[]>& units = pages[page];
        if (!units) units.reset(new GlobalUnit[PAGE_UNITS]);
        cached_page = page;
        cached_units = units.get();
    }
    return cached_units[u % PAGE_UNITS];
}

bool is_private(uintptr_t p) {
    for (const auto& [begin, end] : private_ranges)
        if (p >= begin && p < end) return true;
    return false;
}

std::string name_of_block(int32_t b) {
    const unsigned x = b % grid_dim.x, y = b / grid_dim.x % grid_dim.y, z = b / (grid_dim.x * grid_dim.y);
    return "(" + std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(z) + ")";
}

// Did the current block acquire thread t of block b as far as clock c?
bool ordered(int32_t b, int32_t t, uint32_t c) {
    if (b == block_id) return true;
    const auto it = acquired.find(b);
    return it != acquired.end() && it->second[t] >= c;
}

void cross_block_race(const char* kind, int t, int32_t other_block, int32_t other_thread, const char* other_kind,
                      uintptr_t at, bool several) {
    char msg[512];
    std::snprintf(msg, sizeof msg,
                  "global-memory race: thread %d of block %s %s global memory at %#" PRIxPTR
                  ", which thread %d of block %s %s%s, with no fence and atomic ordering the two (a launch's "
                  "blocks run in no set order)",
                  t, block_name().c_str(), kind, at, other_thread, name_of_block(other_block).c_str(), other_kind,
                  several ? " (as did other blocks)" : "");
    report(msg);
}

void join_into(std::vector<uint32_t>& into, const std::vector<uint32_t>& from) {
    if (into.size() < from.size()) into.resize(from.size(), 0);
    for (size_t i = 0; i < from.size(); ++i) into[i] = std::max(into[i], from[i]);
}

// ld.global.nc (__ldg) may serve stale data for memory written while the kernel runs, by any
// block or thread, before the load or after: such memory must be read through the coherent path
// (plain loads, __ldcg). Reported at the second of the two accesses.
void non_coherent_conflict(int t, uintptr_t at, bool by_load) {
    char msg[320];
    std::snprintf(msg, sizeof msg,
                  "non-coherent load: thread %d of block %s %s global memory at %#" PRIxPTR
                  " that %s (ld.global.nc / __ldg is only for memory no thread writes while the kernel runs)",
                  t, block_name().c_str(), by_load ? "reads with ld.global.nc" : "writes", at,
                  by_load ? "this launch writes" : "this launch read with ld.global.nc");
    report(msg);
}

}  // namespace

void global_block_start() {
    block_id = int32_t(block_idx.x + grid_dim.x * (block_idx.y + grid_dim.y * block_idx.z));
    acquired.clear();
    fence_clock.assign(threads, {});
    pending_acquires.assign(threads, {});
}

void global_access(int t, const void* p, size_t bytes, bool write) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
    if (is_private(begin) || t >= threads) return;
    const uint32_t now = clock_of(t)[t];
    for (uintptr_t u = begin / 2; u <= (begin + bytes - 1) / 2; ++u) {
        GlobalUnit& g = unit(u);
        const Place where{"global", u * 2};
        const bool foreign_write = g.writer_block >= 0 && !ordered(g.writer_block, g.writer_thread, g.writer_clock);
        if (write) {
            if (dependency_pending()) {
                report("a global write before griddepcontrol.wait in a dependent launch (the primary may still read "
                       "or write that memory)");
            }
            if (g.read_non_coherent) non_coherent_conflict(t, u * 2, false);
            if (foreign_write) cross_block_race("writes", t, g.writer_block, g.writer_thread, "wrote", u * 2, false);
            else if (g.reader_block >= 0 && (g.read_by_blocks || !ordered(g.reader_block, g.reader_thread, g.reader_clock)))
                cross_block_race("writes", t, g.reader_block, g.reader_thread, "read", u * 2, g.read_by_blocks);
            write_unit(g.local, t, where);
            g.writer_block = block_id;
            g.writer_thread = t;
            g.writer_clock = now;
            g.reader_block = -1;
            g.read_by_blocks = false;
        } else {
            if (foreign_write) cross_block_race("reads", t, g.writer_block, g.writer_thread, "wrote", u * 2, false);
            read_unit(g.local, t, where);
            if (g.reader_block >= 0 && g.reader_block != block_id) g.read_by_blocks = true;
            g.reader_block = block_id;
            g.reader_thread = t;
            g.reader_clock = now;
        }
    }
}

void non_coherent_read(const void* p, size_t bytes) {
    if (!on || !current_thread || !threads) return;
    const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
    if (is_private(begin)) return;
    for (uintptr_t u = begin / 2; u <= (begin + bytes - 1) / 2; ++u) {
        GlobalUnit& g = unit(u);
        if (g.writer_block >= 0) non_coherent_conflict(current_thread->linear, u * 2, true);
        g.read_non_coherent = true;
    }
}

void global_read(const void* p, size_t bytes) {
    if (on && current_thread && threads) global_access(current_thread->linear, p, bytes, false);
}

void global_read_by(int thread, const void* p, size_t bytes) {
    if (on && threads) global_access(thread, p, bytes, false);
}

void launch_start() {
    pages.clear();
    cached_page = ~uintptr_t(0);
    cached_units = nullptr;
    private_ranges.clear();
    released.clear();
}

void private_memory(const void* p, size_t bytes) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
    private_ranges.emplace_back(begin, begin + bytes);
}

void thread_fence() {
    if (!on || !current_thread || !threads) return;
    const int t = current_thread->linear;
    const uint32_t* mine = clock_of(t);
    fence_clock[t].assign(mine, mine + threads);
    ++clock_of(t)[t];  // later writes are not released by this fence
    for (const uintptr_t at : pending_acquires[t]) {
        const auto it = released.find(at);
        if (it == released.end()) continue;
        for (const auto& [b, clock] : it->second)
            if (b != block_id) join_into(acquired[b], clock);
    }
    pending_acquires[t].clear();
}

void global_atomic(const void* p) {
    if (!on || !current_thread || !threads) return;
    const uintptr_t at = reinterpret_cast<uintptr_t>(p);
    if (is_private(at)) return;
    const int t = current_thread->linear;
    pending_acquires[t].push_back(at);
    // Release what every fence this thread knows of made visible: its own last one, and those
    // of the threads a barrier has put before it.
    const uint32_t* mine = clock_of(t);
    for (int u = 0; u < threads; ++u)
        if (!fence_clock[u].empty() && mine[u] > fence_clock[u][u]) join_into(released[at][block_id], fence_clock[u]);
}

}  // namespace race
}  // namespace emu
