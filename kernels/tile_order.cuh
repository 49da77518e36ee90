// The order in which a GEMM's blocks take their output tiles. Block ids count tiles in groups of
// `group` M-tiles, M fastest within a group: the ~132 blocks in flight on an H100 then cover a
// few N-tiles of many M-tiles, so they share W tiles (and A tiles) through L2. Numbering N
// fastest instead makes every wave stream all of W for one row of M-tiles: W is read M / BM times
// from DRAM (9.4 GB for gate/up at M = 4096, 3 ms at 3 TB/s against 1.5 ms of arithmetic).
// Plain host/device code: tests/tile_order.rs compiles this header with g++ and checks that every
// tile is taken exactly once.
#pragma once

#ifndef __CUDACC__
#define TILE_ORDER_FN inline
#else
#define TILE_ORDER_FN __host__ __device__ __forceinline__
#endif

struct TileIdx {
    int m, n;  // the output tile's row of M-tiles and column of N-tiles
};

// Tiles of a tiles_m x tiles_n grid, one per block id in [0, tiles_m * tiles_n).
TILE_ORDER_FN TileIdx grouped_tile(int id, int tiles_m, int tiles_n, int group) {
    const int per_group = group * tiles_n;
    const int g = id / per_group;
    const int first_m = g * group;
    const int rows = tiles_m - first_m < group ? tiles_m - first_m : group;  // the last group may be short
    const int r = id - g * per_group;
    return TileIdx{first_m + r % rows, r / rows};
}
// The wrappers pass `group` (TILE_GROUP in src/gpu/kernels/gemm.rs: 16, so 16 x 128 rows of A,
// 21 MB at K = 5120, stay in the 50 MB L2 while the group's N-tiles go by); 1 gives the old
// order, N fastest (the lab's `mma-n-major`).
