//! `nemo serve`.

use std::path::PathBuf;

use clap::Args;

use super::DeviceChoice;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[arg(long, value_name = "PATH", help = super::MODEL_HELP)]
    pub model: Option<PathBuf>,

    /// The address to listen on. The default reaches only this machine; 0.0.0.0 opens the
    /// server to the network (then set --api-key).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub host: String,

    /// The port; 0 picks a free one (the address is printed on stderr).
    #[arg(long, value_name = "N", default_value_t = 8000)]
    pub port: u16,

    /// Where to run: auto = the GPU when one is usable, else the CPU (with a notice).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,

    /// Tokens the KV cache holds, shared by all requests (default: the model's context on the
    /// GPU; on the CPU as many as fit in 4 GiB, at most the context). `max` (GPU): all the
    /// memory left after the weights and activations, for the most concurrent sequences.
    #[arg(long, value_name = "N|max", value_parser = super::parse_kv_tokens, allow_negative_numbers = true)]
    pub kv_tokens: Option<super::KvSize>,

    /// How the KV cache stores K and V: auto (bf16 on the GPU) or fp8 (e4m3, one scale per token
    /// and KV head: half the bytes a token, so twice the tokens; docs/fp8-kv.md). On the CPU,
    /// fp8 rounds the reference's f32 values as the GPU would store them.
    #[arg(long, value_name = "auto|fp8", default_value = "auto", value_parser = super::parse_kv_cache_dtype)]
    pub kv_cache_dtype: super::KvCacheDtype,

    /// Most sequences generating at once; more requests wait in a queue. The default is the
    /// throughput benchmark's (`nemo bench --mode throughput`), as vLLM's max_num_seqs.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_batch: usize,

    /// Most requests waiting for a place in the batch (preempted ones included); more are
    /// refused with 429, so a flood of requests costs bounded memory.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_waiting: u64,

    /// Compute every prompt in full, even the blocks an earlier request already computed (by
    /// default a prompt that starts like an earlier one, e.g. the same system prompt, reuses the
    /// K/V of the whole blocks they share).
    #[arg(long)]
    pub no_prefix_caching: bool,

    /// When a waiting request joins the batch: reserve (keep room for what the running ones are
    /// expected to generate; docs/scheduler.md, "Admission") or optimistic (whenever its next
    /// chunk fits; more at once, more preemptions).
    #[arg(long, value_enum, default_value_t = super::AdmissionChoice::Reserve)]
    pub admission: super::AdmissionChoice,

    /// Most tokens one engine step carries (long prompts are prefilled in chunks of this; the
    /// CUDA backend's limit and the throughput benchmark's budget).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_step_tokens: usize,

    /// Require `Authorization: Bearer KEY` on /v1/* (also read from $NEMO_API_KEY, which
    /// keeps the key out of the process list).
    #[arg(long, value_name = "KEY", env = "NEMO_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// The model name clients pass as `model` (default: the model file's or directory's name).
    #[arg(long, value_name = "NAME")]
    pub served_model_name: Option<String>,

    /// Most open HTTP connections (idle keep-alive ones included); one more is answered 503 and
    /// closed. The open-file limit is raised to fit when the system allows.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// Larger request bodies are refused with 413.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,

    /// After SIGTERM, how long requests in flight may run before they are cancelled.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub shutdown_timeout: f64,
}
