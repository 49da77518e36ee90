//! The emulator itself (kernels/emu/selftest.cu): shuffles and atomics give what the GPU gives,
//! threads waiting on each other (a block barrier against a warp shuffle) are reported as a
//! deadlock, not a hang, and exited threads release barriers; with deferred completion a missing
//! cp.async wait reads old data and wgmma hazards are reported; shared-memory races, wgmma reads
//! of unfenced st.shared writes and accesses past the launch's dynamic shared memory are reported,
//! and the same accesses ordered by a warp sync, a named barrier or an mbarrier are not; global
//! memory shared by two blocks is reported unless a fence and an atomic order it, and so is a
//! non-coherent load (__ldg) of memory the launch writes.

use super::{in_deferred_mode, load, PrimaryOutputs};
use cudarc::driver::LaunchConfig;

#[repr(C)]
#[derive(Clone, Copy)]
struct SelftestParams {
    out: u64,
    data: u64,
    scratch: u64,
    mode: i32,
}

fn run(mode: i32, threads: u32, blocks: u32) -> (Result<(), String>, Vec<i32>) {
    run_with(mode, threads, blocks, &[])
}

/// `run`, as a programmatic dependent launch of a kernel that wrote `data` (poisoned until each
/// block's griddepcontrol.wait).
fn run_dependent(mode: i32, threads: u32, blocks: u32) -> (Result<(), String>, Vec<i32>) {
    let data = vec![0i32; 4];
    let primary = PrimaryOutputs::of(&[&data[..]]);
    let mut out = vec![-1i32; (threads * blocks) as usize];
    let mut scratch = vec![0i32; 1 + blocks as usize];
    let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 4096 };
    let p = SelftestParams { out: out.as_mut_ptr() as u64, data: data.as_ptr() as u64, scratch: scratch.as_mut_ptr() as u64, mode };
    let emu = load("emu/selftest");
    let r = emu.launch_args_after("emu_selftest", cfg, Some(&primary), |k: unsafe extern "C" fn(SelftestParams)| unsafe { k(p) });
    (r, out)
}

fn run_with(mode: i32, threads: u32, blocks: u32, data: &[i32]) -> (Result<(), String>, Vec<i32>) {
    let mut out = vec![-1i32; (threads * blocks) as usize];
    let mut scratch = vec![0i32; 1 + blocks as usize];
    let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 4096 };
    let p = SelftestParams {
        out: out.as_mut_ptr() as u64,
        data: data.as_ptr() as u64,
        scratch: scratch.as_mut_ptr() as u64,
        mode,
    };
    let r = load("emu/selftest").launch("emu_selftest", cfg, p);
    (r, out)
}

#[test]
fn emulated_shuffles_and_atomics_behave_as_on_the_gpu() {
    let (r, out) = run(0, 64, 2);
    r.unwrap();
    for (i, &v) in out.iter().enumerate() {
        let lane = (i % 32) as i32;
        let down = if lane == 31 { 31 } else { lane + 1 }; // out of range: own value
        let up_equal = i32::from(lane == 0); // lane 0 keeps its own value
        assert_eq!(v, 32 * 1_000_000 + 21 * 1000 + down * 10 + up_equal, "thread {i}");
    }
    let (r, out) = run(1, 96, 3);
    r.unwrap();
    assert!(out.iter().all(|&v| v == 96), "{out:?}");
}

#[test]
fn emulated_threads_waiting_on_each_other_are_reported_as_a_deadlock() {
    let (r, _) = run(2, 128, 1);
    let err = r.unwrap_err();
    assert!(err.contains("deadlock in block (0,0,0)") && err.contains("__syncthreads"), "{err}");
    // The emulator is usable again after a deadlock.
    let (r, out) = run(3, 128, 2);
    r.unwrap();
    assert!(out.iter().enumerate().all(|(i, &v)| v == if i % 128 < 64 { 2 } else { -1 }), "{out:?}");
}

#[test]
fn emulated_async_hazards_show_only_when_completion_is_deferred() {
    // A cp.async read before cp.async.wait_group sees the copy at issue, the old bytes deferred.
    let data: Vec<i32> = (0..4 * 64).collect();
    let (r, out) = run_with(4, 64, 1, &data);
    r.unwrap();
    assert!(out.iter().enumerate().all(|(i, &v)| v == 4 * i as i32), "{out:?}");
    in_deferred_mode(|| {
        let (r, out) = run_with(4, 64, 1, &data);
        r.unwrap();
        assert!(out.iter().all(|&v| v == -1), "{out:?}");
    });
    // wgmma accumulators or A registers written before the wait, and an exit before it: errors
    // when deferred.
    for mode in 5..=7 {
        run_with(mode, 128, 1, &data).0.unwrap();
    }
    in_deferred_mode(|| {
        let err = run_with(5, 128, 1, &data).0.unwrap_err();
        assert!(err.contains("accumulators changed while the wgmma was in flight"), "{err}");
        let err = run_with(6, 128, 1, &data).0.unwrap_err();
        assert!(err.contains("exits with a wgmma in flight"), "{err}");
        let err = run_with(7, 128, 1, &data).0.unwrap_err();
        assert!(err.contains("A registers changed while the wgmma was in flight"), "{err}");
    });
}

#[test]
fn emulated_shared_memory_races_are_reported_and_ordered_accesses_are_not() {
    let err = run(8, 64, 1).0.unwrap_err();
    assert!(err.contains("shared-memory race: thread 32 of block (0,0,0) reads static shared memory") && err.contains("which thread 0 wrote"), "{err}");
    let err = run(9, 64, 1).0.unwrap_err();
    assert!(err.contains("shared-memory race: thread 0 of block (0,0,0) writes static shared memory") && err.contains("read"), "{err}");
    let (r, out) = run(10, 96, 2);
    r.unwrap();
    for (i, want) in [(5, 10), (40, 11), (70, 12)] {
        assert_eq!(out[i], want, "thread {i}");
    }
    // (The fibers happen to run the read first, so it is reported from the write's side.)
    let err = run(11, 96, 1).0.unwrap_err();
    assert!(err.contains("thread 2 of block (0,0,0) writes dynamic shared memory at byte 8, which thread 70 read"), "{err}");
}

#[test]
fn emulated_wgmma_reads_of_unfenced_st_shared_are_reported() {
    let err = run(12, 128, 1).0.unwrap_err();
    assert!(err.contains("proxy fence missing: wgmma reads dynamic shared memory") && err.contains("no fence.proxy.async"), "{err}");
    let (r, out) = run(13, 128, 1);
    r.unwrap();
    assert!(out.iter().all(|&v| v == 1), "{out:?}");
}

#[test]
fn emulated_shared_memory_past_the_launchs_size_is_reported() {
    // run() asks for 4096 bytes of dynamic shared memory; the kernel writes int 1024 onwards.
    let err = run(14, 32, 1).0.unwrap_err();
    assert!(err.contains("at byte 4096 of dynamic shared memory, past the 4096 bytes the launch asked for"), "{err}");
}

#[test]
fn emulated_global_memory_races_are_reported_and_the_last_block_pattern_is_not() {
    let err = run(15, 32, 3).0.unwrap_err();
    assert!(
        err.contains("global-memory race: thread 0 of block (1,0,0) writes global memory")
            && err.contains("which thread 0 of block (0,0,0) wrote"),
        "{err}"
    );
    // Partials 1 + 2 + 3 + 4, summed by the last block (the fibers run block 3 last).
    let (r, out) = run(16, 64, 4);
    r.unwrap();
    assert!(out[..3 * 64].iter().all(|&v| v == -1) && out[3 * 64..].iter().all(|&v| v == 10), "{out:?}");
    for mode in [17, 18] {
        let err = run(mode, 64, 4).0.unwrap_err();
        assert!(
            err.contains("of block (3,0,0) reads global memory")
                && err.contains("which thread 0 of block (0,0,0) wrote"),
            "mode {mode}: {err}"
        );
    }
    let err = run(20, 64, 1).0.unwrap_err();
    assert!(err.contains("non-coherent load: thread 32 of block (0,0,0) reads with ld.global.nc global memory"), "{err}");
    let (r, out) = run(21, 64, 1);
    r.unwrap();
    assert_eq!(out[32], 6);
    let err = run(19, 64, 1).0.unwrap_err();
    assert!(
        err.contains("global-memory race: thread 32 of block (0,0,0) reads global memory") && err.contains("which thread 0 wrote"),
        "{err}"
    );
}

/// Programmatic dependent launches (kernels/grid_dependency.cuh): a global write before
/// griddepcontrol.wait could land under the still-running primary's accesses, and a block whose
/// threads all leave without the wait could complete before the primary (later kernels rely on
/// a grid's completion implying its primary's); both are reported. Threads that leave early
/// while the rest of their block waits are fine.
#[test]
fn emulated_dependent_launches_that_write_early_or_never_wait_are_reported() {
    let err = run_dependent(22, 64, 2).0.unwrap_err();
    assert!(err.contains("a global write before griddepcontrol.wait in a dependent launch"), "{err}");
    let err = run_dependent(23, 64, 2).0.unwrap_err();
    assert!(err.contains("a block of a dependent launch ended without reaching griddepcontrol.wait") && err.contains("block (1,0,0)"), "{err}");
    let (r, out) = run_dependent(24, 64, 2);
    r.unwrap();
    assert!(out.iter().enumerate().all(|(i, &v)| v == if i % 64 < 32 { 3 } else { -1 }), "{out:?}");
    // Without the dependency hooks the same kernels are ordinary launches.
    for mode in [22, 23] {
        run(mode, 64, 2).0.unwrap();
    }
}
