//! The GEMMs' block-to-tile order (kernels/tile_order.cuh), compiled for the host with g++ from
//! the very header the kernels include: every output tile is taken by exactly one block, for
//! Nemo's shapes and awkward ones, and the first wave of blocks on an H100 shares W tiles.

use std::path::Path;
use std::process::Command;

const PROGRAM: &str = r#"
#include <cstdio>
#include <vector>
#include "tile_order.cuh"

// Prints "bad ..." for every tile taken twice, missed or out of range; then, per case, the
// distinct M- and N-tiles of the first `wave` block ids.
int main() {
    const int cases[][2] = {{1, 1}, {1, 7}, {7, 1}, {15, 3}, {16, 16}, {17, 5}, {33, 224}, {32, 224},
                            {4, 48}, {128, 1024}, {129, 41}, {3, 512}, {200, 1}};
    // 16: TILE_GROUP in src/gpu/kernels/gemm.rs; 1: the old order (the lab's mma-n-major).
    for (int group : {16, 1})
    for (auto& c : cases) {
        const int tm = c[0], tn = c[1];
        std::vector<int> seen(tm * tn, 0);
        for (int id = 0; id < tm * tn; ++id) {
            TileIdx t = grouped_tile(id, tm, tn, group);
            if (t.m < 0 || t.m >= tm || t.n < 0 || t.n >= tn) { printf("bad range %d %d id %d\n", tm, tn, id); continue; }
            seen[t.m * tn + t.n]++;
        }
        for (int i = 0; i < tm * tn; ++i)
            if (seen[i] != 1) printf("bad count group %d: %d %d tile %d seen %d\n", group, tm, tn, i, seen[i]);
        const int wave = 132;
        std::vector<int> ms(tm, 0), ns(tn, 0);
        for (int id = 0; id < wave && id < tm * tn; ++id) {
            TileIdx t = grouped_tile(id, tm, tn, group);
            ms[t.m] = 1; ns[t.n] = 1;
        }
        int dm = 0, dn = 0;
        for (int v : ms) dm += v;
        for (int v : ns) dn += v;
        printf("case %d %d %d wave_m %d wave_n %d\n", group, tm, tn, dm, dn);
    }
    return 0;
}
"#;

#[test]
fn every_output_tile_is_taken_once_and_a_wave_shares_w_tiles() {
    let kernels = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let dir = tempfile::tempdir().unwrap();
    let (src, exe) = (dir.path().join("tile_order.cpp"), dir.path().join("tile_order"));
    std::fs::write(&src, PROGRAM).unwrap();
    let built = Command::new("g++")
        .args(["-std=c++17", "-O1", "-Wall", "-Werror", "-I"])
        .arg(&kernels)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("g++ (the host compiler nvcc also needs) runs");
    assert!(built.status.success(), "g++ failed:\n{}", String::from_utf8_lossy(&built.stderr));
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let bad: Vec<&str> = text.lines().filter(|l| l.starts_with("bad")).collect();
    assert!(bad.is_empty(), "{} bad tiles, first: {:?}", bad.len(), &bad[..bad.len().min(5)]);
    let wave = |group: usize, tm: usize, tn: usize| -> (usize, usize) {
        let line = text.lines().find(|l| l.starts_with(&format!("case {group} {tm} {tn} "))).unwrap();
        let v: Vec<usize> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        (v[3], v[4])
    };
    // gate/up at M = 4096 on the mma.sync kernel (128 x 128 tiles): 132 blocks cover 16 rows of
    // M-tiles and 9 W tiles; in the old order 1 row and 132 W tiles.
    assert_eq!(wave(16, 32, 224), (16, 9));
    assert_eq!(wave(1, 32, 224), (1, 132));
    // The LM head at M = 16384 (128 x 1024 tiles) and a short prompt (M = 512: 4 M-tiles).
    assert_eq!(wave(16, 128, 1024), (16, 9));
    assert_eq!(wave(16, 4, 48), (4, 33));
}
