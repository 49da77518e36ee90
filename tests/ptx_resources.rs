//! Resource check of every embedded PTX module with the pinned toolchain's ptxas (no GPU needed):
//! fails on any spill or local-memory stack frame unless the kernel is listed below with a
//! reason, and writes the per-kernel register / shared-memory table to docs/kernels.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use nemo_engine::gpu::{ptx, Kernels};

/// Kernels allowed a stack frame (never spills), with the reason.
const ALLOWED_STACK: &[(&str, &str)] = &[(
    "rope_cos_sin_table_f32",
    "double-precision sincos keeps its Payne-Hanek reduction array on the stack; runs once at start-up",
)];

#[derive(Default, Debug)]
struct Resources {
    registers: u32,
    shared_bytes: u32,
    stack_bytes: u32,
    spill_stores: u32,
    spill_loads: u32,
}

fn ptxas() -> PathBuf {
    PathBuf::from(env!("NEMO_CUDA_BIN")).join("ptxas")
}

/// Parses `ptxas -v` output into per-entry resources.
fn parse(report: &str) -> BTreeMap<String, Resources> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let number_before = |line: &str, unit: &str| -> Option<u32> {
        let idx = line.find(unit)?;
        line[..idx].split_whitespace().last()?.parse().ok()
    };
    for line in report.lines() {
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            current = Some(rest.trim().to_string());
            continue;
        }
        let Some(name) = current.clone() else { continue };
        let r: &mut Resources = out.entry(name).or_default();
        if line.contains("stack frame") {
            r.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
            r.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
            r.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
        } else if line.contains("Used") && line.contains("registers") {
            r.registers = number_before(line, "registers").unwrap_or(0);
            r.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
        }
    }
    out
}

#[test]
fn every_kernel_compiles_without_spills_and_the_table_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let declared = Kernels::declared();
    let entries: Vec<&str> = declared.iter().flat_map(|(_, names)| names.iter().map(String::as_str)).collect();
    let mut table = String::from(
        "# Kernel resources (sm_90a)\n\nWritten by `tests/ptx_resources.rs` from `ptxas -arch=sm_90a -v` of the pinned \
         CUDA 13.0 toolchain. Static shared memory only; dynamic shared memory is set per launch by the wrapper.\n\n\
         | module | kernel | registers | static smem (B) | stack (B) | spill st/ld (B) | note |\n|---|---|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    for (module, text) in ptx::MODULES {
        assert!(text.contains(".target sm_90a"), "{module}: PTX is not for sm_90a");
        let ptx_path = dir.path().join(format!("{module}.ptx"));
        std::fs::write(&ptx_path, text).unwrap();
        let output = Command::new(ptxas())
            .args(["-arch=sm_90a", "-v", "-o"])
            .arg(dir.path().join(format!("{module}.cubin")))
            .arg(&ptx_path)
            .output()
            .expect("ptxas from scripts/setup.sh");
        let report = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "ptxas failed on {module}:\n{report}");
        for (name, r) in parse(&report) {
            if !entries.contains(&name.as_str()) {
                continue; // device functions (e.g. libdevice internals) are reported too
            }
            let allowed = ALLOWED_STACK.iter().find(|(k, _)| *k == name).map(|(_, why)| *why);
            if r.spill_stores + r.spill_loads > 0 {
                failures.push(format!("{name}: spills {} B stores / {} B loads", r.spill_stores, r.spill_loads));
            }
            if r.stack_bytes > 0 && allowed.is_none() {
                failures.push(format!("{name}: {} B stack frame (local memory)", r.stack_bytes));
            }
            writeln!(
                table,
                "| {module} | `{name}` | {} | {} | {} | {}/{} | {} |",
                r.registers,
                r.shared_bytes,
                r.stack_bytes,
                r.spill_stores,
                r.spill_loads,
                allowed.unwrap_or("")
            )
            .unwrap();
        }
    }
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/kernels.md");
    std::fs::write(&docs, table).unwrap();
    assert!(failures.is_empty(), "resource check failed:\n{}", failures.join("\n"));
}

#[test]
fn every_ptx_entry_has_a_typed_handle_and_vice_versa() {
    for (module, text) in ptx::MODULES {
        let mut in_ptx: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix(".visible .entry "))
            .map(|l| l.split('(').next().unwrap().trim())
            .collect();
        in_ptx.sort();
        let mut declared: Vec<String> = Kernels::declared()
            .into_iter()
            .find(|(m, _)| m == module)
            .unwrap_or_else(|| panic!("module {module} has no kernel_table! entry in src/gpu/runtime.rs"))
            .1;
        declared.sort();
        assert_eq!(in_ptx, declared, "module {module}: PTX entries vs kernel_table! and the decode table (src/gpu/kernels/decode_table.rs)");
    }
}

/// The Hopper GEMM really runs on Hopper's units: its sm_90a machine code (ptxas of the pinned
/// toolchain, disassembled by cuobjdump) holds warpgroup MMAs (HGMMA), TMA tensor loads (UTMALDG)
/// and the register hand-over between producer and consumers (USETMAXREG); and ptxas reports no
/// wgmma serialisation (what it prints when the accumulators must be moved between wgmmas).
#[test]
fn gemm_wgmma_sass_uses_hgmma_and_tma() {
    let sass = hopper_sass("gemm_wgmma");
    let count = |op: &str| sass.matches(op).count();
    assert!(count("HGMMA.64x256x16.F32.BF16") >= 4, "no 64x256x16 HGMMA in the SASS");
    assert!(count("UTMALDG.2D") >= 2, "no TMA tensor loads in the SASS");
    assert!(count("USETMAXREG") >= 2, "no setmaxnreg hand-over in the SASS");
    // And the older kernel stays on mma.sync (HMMA), so the comparison in the benchmark is real.
    let old = ptx::module("gemm").unwrap();
    assert!(!old.contains("wgmma"), "gemm.cu is the mma.sync baseline");
}

/// The Hopper prefill attention: S = Q K^T as 64x128x16 HGMMAs, O += P V as 64x128x16 (head_dim
/// 128) and 64x64x16 (head_dim 64) HGMMAs with P from registers, K/V by TMA; no serialisation and
/// no compiler-inserted warpgroup arrives between the P V wgmmas (ptxas C7519).
#[test]
fn attention_prefill_wgmma_sass_uses_hgmma_and_tma() {
    let sass = hopper_sass("attention_prefill_wgmma");
    let count = |op: &str| sass.matches(op).count();
    assert!(count("HGMMA.64x128x16.F32.BF16") >= 16, "no 64x128x16 HGMMA in the SASS");
    assert!(count("HGMMA.64x64x16.F32.BF16") >= 8, "no 64x64x16 HGMMA (head_dim 64) in the SASS");
    assert!(count("UTMALDG.2D") >= 4, "no TMA tensor loads in the SASS");
    // The ping-pong variant: consumers hand turns over with named barriers, and its softmax
    // exponentials sit between `wait_group 1` and `wait_group 0`, beside the P V wgmmas (in the
    // overlap variant ptxas hoists the second wait above them; docs/hopper.md).
    let pingpong = sass_function(&sass, "attention_prefill_wgmma_pingpong_bf16_hd128");
    assert!(pingpong.contains("BAR.ARV"), "no named-barrier hand-over in the ping-pong SASS");
    let wait1 = pingpong.find("WARPGROUP.DEPBAR.LE gsb0, 0x1").expect("a wait_group 1 in the ping-pong SASS");
    let wait0 = wait1 + pingpong[wait1..].find("WARPGROUP.DEPBAR.LE gsb0, 0x0").expect("a wait_group 0 after it");
    let beside = pingpong[wait1..wait0].matches("MUFU.EX2").count();
    assert!(beside >= 64, "only {beside} exponentials between wait_group 1 and 0: the softmax no longer overlaps P V");
}

/// The bandwidth-bound kernels move bf16 rows with 16-byte accesses (LDG.E.128 / STG.E.128):
/// copying a `bf16x8` through a pointer lets nvcc split it into four 4-byte accesses, which it
/// did in the GEMV's activation reads (580 loads where 145 do), RMSNorm and the embedding
/// gather before common.cuh's ld8 / st8. And the GEMV's dependent-launch prologue is there:
/// PREEXIT (launch_dependents), the L2 bulk prefetch (UBLKPF), then ACQBULK (the wait) before
/// its first activation load.
#[test]
fn bandwidth_kernels_use_16_byte_accesses_and_the_gemv_waits_before_reading() {
    let narrow = |sass: &str| sass.lines().filter(|l| l.contains("LDG.E ") || l.contains("STG.E ") || l.contains("LDG.E.CONSTANT ")).count();
    // (The embedding gather's one 4-byte load is its token id.)
    for (module, allowed) in [("rmsnorm", 0), ("embedding", 1)] {
        let sass = hopper_sass(module);
        assert_eq!(narrow(&sass), allowed, "{module}: 4-byte global accesses in the SASS:\n{sass}");
    }
    // What the kernel before wrote is read coherently (grid_dependency.cuh): RMSNorm's only
    // read-only loads are the two kernels' weights; the decode attention reads K coherently.
    let constant = |sass: &str| sass.matches("LDG.E.128.CONSTANT").count();
    assert_eq!(constant(&hopper_sass("rmsnorm")), 2, "RMSNorm reads its input through the non-coherent path");
    assert_eq!(constant(&hopper_sass("attention_decode")), 0, "the decode attention reads K through the non-coherent path");
    let sass = hopper_sass("gemv");
    for f in ["gemv_bf16", "gemv_multi_bf16"] {
        let body = sass_function(&sass, f);
        assert!(!body.lines().any(|l| l.contains("LDG.E ")), "{f}: 4-byte global loads in the SASS");
        let at = |op: &str| body.find(op).unwrap_or_else(|| panic!("{f}: no {op} in the SASS"));
        let (preexit, prefetch, wait, first_load) = (at("PREEXIT"), at("UBLKPF.L2"), at("ACQBULK"), at("LDG.E.128 "));
        assert!(preexit < wait && prefetch < wait && wait < first_load, "{f}: the dependent-launch prologue is out of order");
    }
}

/// The CUDA-core decode attention issues a step's K row and V chunks (16 + 16 16-byte loads per
/// lane at head_dim 128) before its first score FMA, so a step waits for memory once: the first
/// version's P.V loop waited once per key (docs/gpu-runs.md, 820a75b: 37-43 % of the copy
/// bandwidth). Checked at Nemo's G = 4 and the demo model's G = 3: some run of instructions
/// between two FMAs (the previous step's last P.V FMA and this step's first score FMA; the
/// RoPE prologue has FMAs of its own) issues all 32.
#[test]
fn decode_attention_issues_a_steps_loads_before_using_them() {
    let sass = hopper_sass("attention_decode");
    for f in ["attention_decode_bf16_hd128_g4", "attention_decode_bf16_hd128_g3"] {
        let body = sass_function(&sass, f);
        assert!(body.contains("FFMA"), "{f}: no FFMA");
        let loads = body.split("FFMA").map(|run| run.matches("LDG.E.128").count()).max().unwrap_or(0);
        assert!(loads >= 32, "{f}: at most {loads} 16-byte loads between two FMAs, want the step's 32");
    }
}

/// The SASS of one function of a cuobjdump listing.
fn sass_function<'a>(sass: &'a str, name: &str) -> &'a str {
    let start = sass.find(&format!("Function : {name}\n")).unwrap_or_else(|| panic!("{name} in the SASS"));
    let rest = &sass[start + 1..];
    &sass[start..start + 1 + rest.find("Function : ").unwrap_or(rest.len())]
}

/// ptxas (sm_90a) of an embedded module, failing on wgmma serialisation or injected warpgroup
/// arrives; returns its SASS from cuobjdump.
fn hopper_sass(module: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let text = ptx::module(module).unwrap_or_else(|| panic!("the {module} module is embedded"));
    let ptx_path = dir.path().join(format!("{module}.ptx"));
    let cubin = dir.path().join(format!("{module}.cubin"));
    std::fs::write(&ptx_path, text).unwrap();
    let out = Command::new(ptxas()).args(["-arch=sm_90a", "-v", "-o"]).arg(&cubin).arg(&ptx_path).output().expect("ptxas");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ptxas failed:\n{report}");
    assert!(!report.to_lowercase().contains("serializ"), "{module}: ptxas serialises the wgmmas:\n{report}");
    assert!(!report.contains("C7519"), "{module}: ptxas injects warpgroup arrives between wgmmas:\n{report}");
    let cuobjdump = PathBuf::from(env!("NEMO_CUDA_BIN")).join("cuobjdump");
    let sass = Command::new(&cuobjdump).arg("--dump-sass").arg(&cubin).output().expect("cuobjdump from scripts/setup.sh");
    assert!(sass.status.success(), "cuobjdump failed: {}", String::from_utf8_lossy(&sass.stderr));
    String::from_utf8_lossy(&sass.stdout).into_owned()
}
