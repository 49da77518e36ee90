// What race.cpp (shared memory, synchronisation) and race_global.cpp (global memory) share: the
// current block's vector clocks and the per-unit check of two accesses by its threads.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "emu.h"

namespace emu {
namespace race {

extern bool on;

// The block's threads, then the "async agents" doing the TMA loads of up to AGENTS issuing
// threads: one vector clock (`width` entries) each.
constexpr int AGENTS = 8;
extern int threads, width;
uint32_t* clock_of(int t);
extern uint32_t generation;  // of the current block: a unit last touched by an earlier one is empty

// A 2-byte unit's accesses by the current block's threads: its last write and the reads since.
struct Unit {
    uint32_t gen = 0;
    int32_t writer = -1;  // thread or agent, or -1
    uint32_t write_clock = 0;
    int32_t reader = -1;  // the last read, while the reads since the write are ordered
    uint32_t read_clock = 0;
    int32_t read_set = -1;  // else: an index into the read sets (a clock per thread)
    uint32_t fences_at_write = 0;  // the writer's fence.proxy.async count when it wrote
};

// Where a unit is, for the report: shared memory's region and byte offset, or a global address.
struct Place {
    const char* region;  // "static", "dynamic" or "global"
    uintptr_t at;        // byte offset (shared) or address (global)
};

// Check an access by thread (or agent) t against the unit's earlier ones, then record it; a
// race is reported through emu::report.
void read_unit(Unit& u, int t, Place where);
void write_unit(Unit& u, int t, Place where);

// Who did it, for reports: "thread 5", or an agent's "the TMA loads of thread 0"; and the
// current block, "(1,0,0)".
std::string who(int t);
std::string block_name();

// Global memory (race_global.cpp): an access outside shared memory by `t`, a thread of the
// current block; an atomic on global memory by the current thread.
void global_access(int t, const void* p, size_t bytes, bool write);
void global_atomic(const void* p);
void global_block_start();

}  // namespace race
}  // namespace emu
