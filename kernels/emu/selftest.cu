// Kernels that check the emulator itself (tests/gpu/emulated/selftest.rs); not part of the
// engine (build.rs compiles kernels/*.cu only, not this folder).
#include "common.cuh"

struct SelftestParams {
    int* out;  // [blockDim.x * gridDim.x] per-thread results
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
    }
}
