//! Compiles every `kernels/*.cu` to PTX for sm_90a (H100/H200) and embeds it.
//!
//! The PTX is loaded at run time through the CUDA driver (cudarc), so the
//! binary builds and runs on machines without a GPU. nvcc is looked up in this
//! order: `$NVCC`, `$CUDA_HOME`/`$CUDA_PATH`, the project-local toolchain that
//! `scripts/setup.sh` installs, then `PATH`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The GPUs' driver (580, CUDA 13.0) accepts PTX ISA up to 9.0.
const MAX_PTX_ISA: (u32, u32) = (9, 0);
const LOCAL_TOOLCHAIN: &str = ".toolchain/cuda/nvidia/cu13";

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let kernels = root.join("kernels");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=CUDA_PATH");

    let mut sources = Vec::new();
    for entry in fs::read_dir(&kernels).expect("kernels/ is missing") {
        let path = entry.unwrap().path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("cu") => sources.push(path.clone()),
            Some("cuh") => {}
            _ => continue,
        }
        println!("cargo:rerun-if-changed={}", path.display());
    }
    sources.sort();

    let nvcc = find_nvcc(&root).unwrap_or_else(|| {
        panic!(
            "\n\nnvcc (CUDA 13.0) not found. Run `scripts/setup.sh` to install the pinned \
             toolchain into .toolchain/, or point NVCC / CUDA_HOME at a CUDA 13.0 install.\n\n"
        )
    });
    let bin = nvcc.parent().unwrap().to_path_buf();
    let cuda_root = bin.parent().unwrap().to_path_buf();
    // Tests run ptxas (resource check) and cuobjdump (SASS checks) from the same toolchain.
    println!("cargo:rustc-env=NEMO_CUDA_BIN={}", bin.display());

    let mut registry = String::from(
        "/// (module name, PTX text) for every kernels/*.cu, compiled for sm_90a.\n\
         pub const MODULES: &[(&str, &str)] = &[\n",
    );
    for src in &sources {
        let name = src.file_stem().unwrap().to_str().unwrap().to_string();
        let ptx = out.join(format!("{name}.ptx"));
        compile(&nvcc, &cuda_root, &kernels, src, &ptx);
        check_isa(&ptx);
        writeln!(registry, "    ({name:?}, include_str!({:?})),", ptx.display().to_string()).unwrap();
    }
    registry.push_str("];\n");
    fs::write(out.join("ptx_modules.rs"), registry).unwrap();
}

fn find_nvcc(root: &Path) -> Option<PathBuf> {
    let exe = |dir: PathBuf| dir.join("nvcc");
    let mut candidates = Vec::new();
    if let Some(p) = env::var_os("NVCC") {
        candidates.push(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(p) = env::var_os(var) {
            candidates.push(exe(PathBuf::from(p).join("bin")));
        }
    }
    candidates.push(exe(root.join(LOCAL_TOOLCHAIN).join("bin")));
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(exe));
    }
    candidates.into_iter().find(|p| p.is_file())
}

fn compile(nvcc: &Path, cuda_root: &Path, kernels: &Path, src: &Path, ptx: &Path) {
    let output = Command::new(nvcc)
        .args(["-ptx", "-std=c++17", "-O3", "-lineinfo"])
        // -gencode, not -arch=sm_90a: the shorthand also runs a plain sm_90 pass
        // that rejects wgmma/setmaxnreg.
        .arg("-gencode=arch=compute_90a,code=compute_90a")
        .arg("-I")
        .arg(kernels)
        .arg("-I")
        .arg(cuda_root.join("include/cccl"))
        .arg(src)
        .arg("-o")
        .arg(ptx)
        .output()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", nvcc.display()));
    if !output.status.success() {
        panic!(
            "\n\nnvcc failed on {}:\n{}\n{}\n",
            src.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn check_isa(ptx: &Path) {
    let text = fs::read_to_string(ptx).unwrap();
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(".version "))
        .unwrap_or_else(|| panic!("{}: no .version line", ptx.display()));
    let (major, minor) = version.trim().split_once('.').expect("PTX version is major.minor");
    let isa = (major.parse::<u32>().unwrap(), minor.parse::<u32>().unwrap());
    assert!(
        isa <= MAX_PTX_ISA,
        "{}: PTX ISA {version} is newer than the GPUs' driver accepts ({}.{}); use the CUDA 13.0 \
         nvcc from scripts/setup.sh",
        ptx.display(),
        MAX_PTX_ISA.0,
        MAX_PTX_ISA.1
    );
}
