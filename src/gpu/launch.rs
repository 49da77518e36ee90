//! Launches that cudarc's launch builder cannot express, through `cuLaunchKernelEx`: the
//! programmatic dependent launch of kernels/grid_dependency.cuh (`NEMO_PDL=1`).

use std::ffi::c_void;

use cudarc::driver::{result, sys, CudaFunction, DriverError, LaunchConfig};

use super::Gpu;

impl Gpu {
    /// Launches `func(args)` after the kernel before it in the stream: as a programmatic
    /// dependent when the GPU was opened with PDL, else plainly (`cuLaunchKernel`, what cudarc's
    /// builder calls; event tracking is off). The decode step's kernels go through here; each
    /// waits in `griddepcontrol.wait` before touching its inputs or outputs.
    ///
    /// # Safety
    /// As for `launch_dependent`.
    pub(crate) unsafe fn launch_after_previous(&self, func: &CudaFunction, cfg: LaunchConfig, args: &mut [*mut c_void]) -> Result<(), DriverError> {
        if self.pdl {
            // SAFETY: the caller's guarantee.
            return unsafe { launch_dependent(self, func, cfg, args) };
        }
        self.ctx.bind_to_thread()?;
        // SAFETY: the caller's guarantee.
        unsafe { result::launch_kernel(func.cu_function(), cfg.grid_dim, cfg.block_dim, cfg.shared_mem_bytes, self.stream.cu_stream(), args) }
    }
}

/// The address of one kernel argument, as `cuLaunchKernelEx` takes them.
pub(crate) fn arg<T>(value: &T) -> *mut c_void {
    value as *const T as *mut c_void
}

/// Launches `func` on the GPU's stream as a programmatic dependent of the kernel before it: its
/// blocks may start once every block of that kernel has run `griddepcontrol.launch_dependents`
/// (or exited), and `griddepcontrol.wait` in `func` is where that kernel's writes become
/// visible. Inside a stream capture the dependency becomes a programmatic edge of the graph.
/// `args` holds the address of each kernel parameter in order (`arg`).
///
/// # Safety
/// As for cudarc's `launch`: `args` matches the kernel's parameters (types and order), every
/// address in them is valid for what the kernel does, and `func` neither reads the previous
/// kernel's outputs nor writes anything before its `griddepcontrol.wait` (grid_dependency.cuh).
pub(crate) unsafe fn launch_dependent(gpu: &Gpu, func: &CudaFunction, cfg: LaunchConfig, args: &mut [*mut c_void]) -> Result<(), DriverError> {
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
    // SAFETY: config and attr live across the call, which copies the parameter values; the
    // caller vouches for the arguments (above).
    unsafe { sys::cuLaunchKernelEx(&config, func.cu_function(), args.as_mut_ptr(), std::ptr::null_mut()) }.result()
}
