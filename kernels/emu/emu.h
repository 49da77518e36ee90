// A CUDA emulator for the CPU: compiles a kernel file (kernels/*.cu) with g++ so that its
// kernels run on the host, every thread of a block as a fiber, so GPU kernels get real
// correctness checks on machines without a GPU (tests/gpu/emulated/).
//
// How: this header is force-included (`g++ -DNEMO_EMU -include emu/emu.h`) before the kernel
// file. It turns the execution-space keywords into plain C++, `__shared__` variables into
// statics (blocks run one after another, so a block's threads share them), and provides the
// built-ins our kernels use: thread and block indices, __syncthreads, the warp shuffles, atomics,
// and (through mma.cuh's NEMO_EMU branches) cp.async, ldmatrix and mma.sync with the PTX ISA's
// fragment layouts. runtime.cpp schedules the fibers: a thread runs until it reaches a barrier
// (block, warp, or a warp-collective instruction), so warp-synchronous code sees the values
// every lane wrote before it; a barrier nobody can pass is reported as a deadlock.
//
// Hopper's TMA loads, mbarriers and wgmma are emulated too (hopper.cpp), with the tensor map in
// the emulator's own encoding (see there), not the driver's.
//
// Asynchronous copies and wgmma run in one of two modes (`emu_set_async_mode`, tests run both):
//   ASYNC_AT_ISSUE: each completes when issued, so a buffer refilled too early (a missing
//     barrier before a stage is overwritten) shows up as the readers getting the new data;
//   ASYNC_DEFERRED: each completes as late as the PTX rules allow: a cp.async at the
//     cp.async.wait_group that covers it, a TMA load when its issuing thread next yields or a
//     thread waits on its mbarrier, a wgmma group at the wgmma.wait_group that covers it (after
//     every warp of the warpgroup has committed it, and after every other thread has run as far
//     as it can, so a stage released before its wgmmas are waited for gets overwritten first). A
//     missing wait then reads stale data; accumulators or A registers changed while their wgmma is in flight,
//     and a thread exiting with wgmma in flight, are reported as errors.
//
// Races on shared memory between threads of a block are checked (race.cpp): the fibers run in
// one harmless order, but two accesses no synchronisation orders are reported. So are races on
// global memory (race_global.cpp): between threads of a block, and between blocks, which only a
// __threadfence and an atomic can order.
//
// So is the proxy rule: wgmma reads a thread's st.shared writes only after that thread's
// fence.proxy.async. An access past the launch's dynamic shared memory is reported, and so is
// a non-coherent load (__ldg) of global memory the launch writes.
//
// What it cannot show: speed, races between kernels (the stream orders them; dependent launches
// are checked by poisoning, see grid_dependency_wait), other memory-model subtleties (scopes,
// caches beyond the non-coherent path). Global memory is host memory: an out-of-bounds read is
// not caught.
#pragma once
#include <cuda_bf16.h>  // host-usable bf16; also brings CUDA's host definitions of the keywords

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __grid_constant__
#undef __shared__
#define __global__ __attribute__((visibility("default")))
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __shared__ static

// Dynamic shared memory: the launch's `dyn_smem` bytes, 0xff-poisoned at every block's start.
#define DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(::emu::dynamic_shared())

namespace emu {

struct Thread {
    void* sp = nullptr;  // saved stack pointer while switched out
    uint3 idx{};
    int linear = 0, lane = 0, warp = 0;
    bool done = false;
    const char* waiting = nullptr;  // what it waits for (deadlock reports)
};

extern Thread* current_thread;
extern dim3 block_idx, block_dim, grid_dim;

enum AsyncMode : int { ASYNC_AT_ISSUE = 0, ASYNC_DEFERRED = 1 };
extern int async_mode;

unsigned char* dynamic_shared();
constexpr size_t MAX_DYNAMIC_SHARED_BYTES = 227 * 1024;  // an H100 block's opt-in maximum
// Shared-memory addresses as the 32-bit offsets PTX uses (relative to one anchor in .bss).
uint32_t shared_offset(const void* p);
unsigned char* shared_pointer(uint32_t offset);

void sync_block();
void sync_warp(unsigned mask);
// bar.sync / bar.arrive id, count: a named barrier over `count` threads (whole warps).
void named_barrier_sync(int id, int count);
void named_barrier_arrive(int id, int count);
// The calling warp's 32 exchange slots of 16 bytes and its lanes' 4-word register slots.
unsigned char* warp_slot(int lane);
uint32_t* warp_regs(int lane);

template <class T>
T shuffle(unsigned mask, T v, int src) {
    static_assert(sizeof(T) <= 16 && std::is_trivially_copyable<T>::value, "shuffle of a register value");
    const int lane = current_thread->lane;
    std::memcpy(warp_slot(lane), &v, sizeof(T));
    sync_warp(mask);
    T r;
    std::memcpy(&r, warp_slot(src & 31), sizeof(T));
    sync_warp(mask);
    return r;
}

// For waits on state other threads change (mbarriers): lets every other fiber run once.
void wait_a_turn(const char* what);
// Lets every other fiber run until none can go on (a sweep without progress), then returns.
void let_others_settle(const char* what);
// Counts a state change that lets a waiting fiber go on (else a sweep without any is a deadlock).
void made_progress();

[[noreturn]] void trap();  // reports the thread and block, then aborts the process
// A hazard the GPU would not report (e.g. registers changed under an in-flight wgmma): the launch
// goes on and then fails with the first such message, naming the thread and block.
void report(const char* what);
bool thread_done(int linear);

// griddepcontrol.wait (kernels/grid_dependency.cuh). A no-op unless the launch has dependency
// hooks (`emu_set_dependency_hooks`): then it is where the block stops reading poison. The
// harness's `before_block` hook poisons the primary's outputs at each block's start; once every
// live thread of the block has reached its wait (or exited), `at_wait` puts the real values
// back and the threads go on. So a read of the primary's outputs before the wait sees poison.
// (Treating the wait as a block-wide meeting point is stricter than the GPU only for a kernel
// that meets a __syncthreads before its wait on some threads: the emulator reports a deadlock.)
void grid_dependency_wait();
// In a dependent launch, the current block has not yet passed griddepcontrol.wait: the primary
// may still be running, so a global write now could land under its reads.
bool dependency_pending();

void cp_async16(uint32_t smem, const void* gmem, bool valid);
void cp_async_commit();
void cp_async_wait(int n);
void ldmatrix_x4(uint32_t r[4], uint32_t addr, bool trans);
void mma_m16n8k16_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);

// Hopper (hopper.cpp): mbarriers, TMA 2-D loads through an emulator tensor map, wgmma.
void mbarrier_init(uint32_t bar, uint32_t arrivals);
void mbarrier_arrive(uint32_t bar);
void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes);
void mbarrier_wait(uint32_t bar, uint32_t parity);
void tma_load_2d(uint32_t dst, const uint64_t map[16], int inner, int outer, uint32_t bar);
void wgmma_m64n256k16_bf16(float (&d)[128], uint64_t desc_a, uint64_t desc_b);
// d (N / 2 floats per thread) += A . B for N in {64, 128, 256}; A from registers when a_regs is set.
void wgmma_bf16(float* d, int n, const uint32_t* a_regs, uint64_t desc_a, uint64_t desc_b, bool trans_b);
void wgmma_commit();
void wgmma_wait(int n);

// The shared-memory race check (race.cpp): the scheduler and the emulated instructions report
// accesses and synchronisation; the kernel file's own loads and stores arrive through g++'s
// -fsanitize=thread instrumentation. `thread` / `actor`: a thread's linear index, or an agent's.
namespace race {
void block_start(int threads, size_t dyn_smem);
void access(const void* p, size_t bytes, bool write);  // by the current thread
void shared_read(uint32_t addr, size_t bytes);          // by the current thread
void shared_write(uint32_t addr, size_t bytes);
void async_proxy_read(uint32_t addr, size_t bytes);  // a wgmma operand, by the current thread
void proxy_fence();                                    // fence.proxy.async by the current thread
int tma_issued(int issuer);  // the agent doing the load (it knows what the issuer knew)
void agent_write(int agent, uint32_t addr, size_t bytes);
void all_meet();  // __syncthreads, griddepcontrol.wait
void warp_arrive(int warp, int thread);
void warp_meet(int warp);
void named_arrive(int id, int thread, bool waits);
void named_meet(int id);
void mbarrier_reset(uint32_t bar);
void mbarrier_arrive(uint32_t bar, int parity, int actor);
void mbarrier_complete(uint32_t bar, int parity);
void mbarrier_acquire(uint32_t bar, int parity, int thread);
// Global memory (race_global.cpp): per launch, the emulator memory kernel code touches is left
// out; cp.async and TMA source reads come from the emulator, atomics and fences from below.
void launch_start();
void private_memory(const void* p, size_t bytes);
void global_read(const void* p, size_t bytes);                // by the current thread
void global_read_by(int thread, const void* p, size_t bytes);  // a TMA load's, by its issuer
void atomic(const void* p);  // an atomic by the current thread (global or shared)
void non_coherent_read(const void* p, size_t bytes);  // ld.global.nc (__ldg) by the current thread
void thread_fence();         // __threadfence() by the current thread
}  // namespace race

// Between the scheduler (runtime.cpp) and hopper.cpp's deferred operations.
void reset_hopper_state(int threads);
void land_tma_issued_by(int thread);
void check_nothing_in_flight_at_exit();

}  // namespace emu

#define threadIdx (::emu::current_thread->idx)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)

inline void __syncthreads() { ::emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::emu::sync_warp(mask); }

template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    const int lane = ::emu::current_thread->lane;
    return ::emu::shuffle(mask, v, (lane & ~(width - 1)) + (src & (width - 1)));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const int lane = ::emu::current_thread->lane, src = lane ^ lane_mask;
    return ::emu::shuffle(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = ::emu::current_thread->lane, src = lane + (int)delta;
    return ::emu::shuffle(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = ::emu::current_thread->lane, src = lane - (int)delta;
    return ::emu::shuffle(mask, v, src >= (lane & ~(width - 1)) ? src : lane);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    unsigned bits = 0;
    for (int i = 0; i < 32; ++i) bits |= (__shfl_sync(mask, pred != 0, i) ? 1u : 0u) << i;
    return bits;
}

// Fibers switch only at barriers, so a read-modify-write is atomic. Atomics are not
// instrumented (they do not race with each other); on global memory they are what orders one
// block's writes before another's reads, with __threadfence (race_global.cpp).
#define EMU_ATOMIC __attribute__((no_sanitize_thread, noinline))
template <class T>
EMU_ATOMIC T atomicAdd(T* p, T v) {
    ::emu::race::atomic(p);
    const T old = *p;
    *p = old + v;
    return old;
}
template <class T>
EMU_ATOMIC T atomicMax(T* p, T v) {
    ::emu::race::atomic(p);
    const T old = *p;
    *p = std::max(old, v);
    return old;
}
template <class T>
EMU_ATOMIC T atomicMin(T* p, T v) {
    ::emu::race::atomic(p);
    const T old = *p;
    *p = std::min(old, v);
    return old;
}
inline void __threadfence() { ::emu::race::thread_fence(); }

template <class T>
T __ldg(const T* p) {
    ::emu::race::non_coherent_read(p, sizeof(T));
    return *p;
}
template <class T>
T __ldcg(const T* p) {
    return *p;
}
inline size_t __cvta_generic_to_shared(const void* p) { return ::emu::shared_offset(p); }

using std::isfinite;
using std::isinf;
using std::isnan;
using std::max;
using std::min;
// A kernel's trap: on the GPU the launch fails with an illegal-instruction error.
[[noreturn]] inline void __trap() { ::emu::trap(); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
// The round-to-nearest operations nvcc never fuses into an FMA; x86-64 without -mfma has no
// FMA to contract them into either.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }
inline float __saturatef(float x) { return fminf(fmaxf(x, 0.f), 1.f); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(unsigned x) { return x ? __builtin_clz(x) : 32; }
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
inline unsigned __float_as_uint(float x) {
    unsigned u;
    std::memcpy(&u, &x, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}
inline int __float_as_int(float x) { return (int)__float_as_uint(x); }
inline float __int_as_float(int i) { return __uint_as_float((unsigned)i); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
