use cudarc::driver::DriverError;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No usable GPU: no libcuda, no device, or the driver refused to start.
    #[error("no usable CUDA GPU: {0}")]
    Unavailable(String),
    #[error("CUDA driver error in {context}: {source}")]
    Driver { context: String, source: DriverError },
    /// A wrapper's argument check failed: the launch would have read or written out of bounds.
    #[error("{kernel}: {what}")]
    BadArgument { kernel: &'static str, what: String },
    /// Not enough device memory for what was asked; the message says how to shrink it.
    #[error("not enough GPU memory: {0}")]
    OutOfMemory(String),
    #[error("PTX module `{0}` is not embedded in this binary")]
    MissingModule(String),
}

impl GpuError {
    pub(crate) fn driver(context: impl Into<String>) -> impl FnOnce(DriverError) -> GpuError {
        let context = context.into();
        move |source| GpuError::Driver { context, source }
    }
}

pub type Result<T> = std::result::Result<T, GpuError>;
