//! Launches that cudarc's launch builder cannot express, through `cuLaunchKernelEx`: the
//! programmatic dependent launch of kernels/grid_dependency.cuh (`NEMO_PDL=1`).

use std::ffi::c_void;

use cudarc::driver::{sys, CudaFunction, DriverError, LaunchConfig};

use super::Gpu;

/// Launches `func(params)` on the GPU's stream as a programmatic dependent of the kernel before
/// it: its blocks may start once every block of that kernel has run
/// `griddepcontrol.launch_dependents` (or exited), and `griddepcontrol.wait` in `func` is where
/// that kernel's writes become visible. Inside a stream capture the dependency becomes a
/// programmatic edge of the graph.
///
/// # Safety
/// As for cudarc's `launch`: `P` is the kernel's one by-value parameter (its `#[repr(C)]`
/// mirror), every address in it is valid for what the kernel does, and `func` reads the
/// previous kernel's outputs only after its `griddepcontrol.wait` (grid_dependency.cuh).
pub(crate) unsafe fn launch_dependent<P>(gpu: &Gpu, func: &CudaFunction, cfg: LaunchConfig, params: &P) -> Result<(), DriverError> {
    gpu.ctx.bind_to_thread()?;
    // SAFETY: a plain C union of integers and structs of integers; all-zero is a valid value.
    let mut value: sys::CUlaunchAttributeValue = unsafe { std::mem::zeroed() };
    value.programmaticStreamSerializationAllowed = 1;
    let mut attr = sys::CUlaunchAttribute {
        id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
        pad: [0; 4],
        value,
    };
    let config = sys::CUlaunchConfig {
        gridDimX: cfg.grid_dim.0,
        gridDimY: cfg.grid_dim.1,
        gridDimZ: cfg.grid_dim.2,
        blockDimX: cfg.block_dim.0,
        blockDimY: cfg.block_dim.1,
        blockDimZ: cfg.block_dim.2,
        sharedMemBytes: cfg.shared_mem_bytes,
        hStream: gpu.stream.cu_stream(),
        attrs: &mut attr,
        numAttrs: 1,
    };
    let mut args = [params as *const P as *mut c_void];
    // SAFETY: config, attr and args live across the call, which copies the parameter bytes;
    // the caller vouches for the parameters (above).
    unsafe { sys::cuLaunchKernelEx(&config, func.cu_function(), args.as_mut_ptr(), std::ptr::null_mut()) }.result()
}
