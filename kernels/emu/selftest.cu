// Kernels that check the emulator itself (tests/gpu/emulated/selftest.rs); not part of the
// engine (build.rs compiles kernels/*.cu only, not this folder).
#include "common.cuh"
#include "grid_dependency.cuh"
#include "mma.cuh"
#include "wgmma.cuh"

struct SelftestParams {
    int* out;         // [blockDim.x * gridDim.x] per-thread results
    const int* data;  // [4 * blockDim.x] source of the cp.async modes
    int* scratch;     // [1 + gridDim.x] zeros: the global-memory modes' counter and partials
    int mode;
};

extern "C" __global__ void emu_selftest(const __grid_constant__ SelftestParams p) {
    const int tid = threadIdx.x, lane = tid & 31, gid = blockIdx.x * blockDim.x + tid;
    __shared__ int counter;
    switch (p.mode) {
        case 0:  // shuffles: xor-reduction, broadcast, down, up
            p.out[gid] = (int)warp_sum(1.f) * 1000000 + __shfl_sync(0xffffffffu, lane * 7, 3) * 1000 +
                         __shfl_down_sync(0xffffffffu, lane, 1) * 10 + (__shfl_up_sync(0xffffffffu, lane, 1) == lane);
            break;
        case 1:  // __syncthreads orders shared memory; atomics count every thread
            if (tid == 0) counter = 0;
            __syncthreads();
            atomicAdd(&counter, 1);
            __syncthreads();
            p.out[gid] = counter;
            break;
        case 2:  // lane 0 waits at the block barrier, its warp at a shuffle that needs lane 0: a hang
            if (lane == 0) __syncthreads();
            else p.out[gid] = __shfl_sync(0xffffffffu, lane, 0);
            break;
        case 3:  // threads that exit early no longer hold a barrier back
            if (tid >= 64) return;
            __syncthreads();
            p.out[gid] = 2;
            break;
        case 4: {  // a cp.async read before its wait: the old (0xff-poisoned) shared memory when deferred
            DYNAMIC_SHARED(int, buf);
            cp_async16(smem_addr(buf + 4 * tid), p.data + 4 * tid, true);
            cp_async_commit();
            __syncthreads();
            p.out[gid] = buf[4 * tid];
            cp_async_wait<0>();
            break;
        }
        case 5:    // accumulators changed under an in-flight wgmma (one warpgroup): reported when deferred
        case 6:    // a thread exiting with a wgmma in flight: reported when deferred
        case 7: {  // its A registers changed before the wait: reported when deferred
            DYNAMIC_SHARED(unsigned char, tile);  // B [16 x 64] N-major: poison is fine, values unused
            float d[32] = {};
            uint32_t a[4] = {0, 0, 0, 0};
            wgmma_fence();
            wgmma_m64n64k16_rs_nb(d, a, wgmma_desc_sw128(smem_addr(tile), 1024, 1024));
            wgmma_commit();
            if (p.mode == 6) return;
            if (p.mode == 7) a[0] = (uint32_t)tid;
            else d[0] = 1.f;
            wgmma_wait<0>();
            p.out[gid] = d[1] == d[1];  // (NaN from the poison: not checked)
            break;
        }
        // The race check (emu/race.cpp). Modes 8, 9 and 11 race; mode 10 does the same accesses
        // ordered by a warp sync, a named barrier and an mbarrier phase, and must pass.
        case 8:  // a write read by another warp with no barrier between them
            if (tid == 0) counter = 7;
            if (tid == 32) p.out[gid] = counter;
            break;
        case 9:  // a write over a value other threads read, with no barrier between them
            if (tid == 0) counter = 1;
            __syncthreads();
            p.out[gid] = counter;
            if (tid == 0) counter = 2;
            break;
        case 10:
        case 11: {  // 11: the reader skips the mbarrier wait
            DYNAMIC_SHARED(int, buf);  // [0] warp-synced, [1] named barrier, [2] mbarrier; [4..5] the mbarrier
            const uint32_t bar = smem_addr(buf + 4);
            if (tid == 0) mbarrier_init(bar, 1);
            __syncthreads();
            if (tid == 0) buf[0] = 10;
            __syncwarp();
            if (tid == 5) p.out[gid] = buf[0];
            if (tid == 1) buf[1] = 11;
            if (tid < 64) named_barrier_sync(1, 64);
            if (tid == 40) p.out[gid] = buf[1];
            if (tid == 2) {
                buf[2] = 12;
                mbarrier_arrive(bar);
            }
            if (tid == 70) {
                if (p.mode == 10) mbarrier_wait(bar, 0);
                p.out[gid] = buf[2];
                if (p.mode == 11) mbarrier_wait(bar, 0);
            }
            break;
        }
        // The global-memory race check (emu/race_global.cpp). Modes 15, 17, 18, 19 and 20 fail.
        case 15:  // every block writes the same int
            if (tid == 0) p.out[0] = blockIdx.x;
            break;
        case 16:    // CUDA's "last block" pattern: each block's partial, a fence, an atomic; the last
        case 17:    // block to arrive fences and sums them. 17: the writers skip their fence;
        case 18: {  // 18: the last block skips its fence after the atomic
            __shared__ int last;
            if (tid == 0) p.scratch[1 + blockIdx.x] = blockIdx.x + 1;
            if (p.mode != 17) __threadfence();
            __syncthreads();
            if (tid == 0) {
                last = atomicAdd(&p.scratch[0], 1) == (int)gridDim.x - 1;
                if (p.mode != 18) __threadfence();
            }
            __syncthreads();
            if (last) {
                int sum = 0;
                for (int b = 0; b < (int)gridDim.x; ++b) sum += p.scratch[1 + b];
                p.out[gid] = sum;
            }
            break;
        }
        case 20:  // ld.global.nc of memory this launch wrote (ordered by a barrier): reported
        case 21:  // the same read through the coherent path: passes
            if (tid == 0) p.scratch[0] = 6;
            __syncthreads();
            if (tid == 32) p.out[gid] = p.mode == 20 ? __ldg(&p.scratch[0]) : __ldcg(&p.scratch[0]);
            break;
        // Launched as a programmatic dependent (the test sets the dependency hooks):
        case 22:  // a global write before griddepcontrol.wait: reported
            p.out[gid] = 1;
            grid_dependency_wait();
            break;
        case 23:  // a block whose threads all leave without the wait: reported
            if (blockIdx.x == 1) return;
            grid_dependency_wait();
            p.out[gid] = 2;
            break;
        case 24:  // threads leaving early while the others wait, then write: passes
            if (tid >= 32) return;
            grid_dependency_wait();
            p.out[gid] = 3;
            break;
        case 19:  // within a block: a global write read by another warp with no barrier between
            if (tid == 0) p.scratch[0] = 5;
            if (tid == 32) p.out[gid] = p.scratch[0];
            break;
        case 14: {  // a write past the launch's 4096 bytes of dynamic shared memory: reported
            DYNAMIC_SHARED(int, buf);
            buf[1024 + tid] = tid;
            break;
        }
        case 12:    // wgmma reads a tile written with st.shared and no fence.proxy.async: reported
        case 13: {  // the same with the fence: passes
            DYNAMIC_SHARED(unsigned char, tile);  // B [16 x 64] N-major, 2 KiB: 16 bytes a thread
            reinterpret_cast<uint4*>(tile)[tid] = make_uint4(0, 0, 0, 0);
            if (p.mode == 13) fence_proxy_async_shared();
            __syncthreads();
            float d[32] = {};
            uint32_t a[4] = {0, 0, 0, 0};
            wgmma_fence();
            wgmma_m64n64k16_rs_nb(d, a, wgmma_desc_sw128(smem_addr(tile), 1024, 1024));
            wgmma_commit();
            wgmma_wait<0>();
            p.out[gid] = d[0] == 0.f;
            break;
        }
    }
}
