//! An OpenAI-compatible HTTP server over the scheduler's [`crate::scheduler::Engine`]
//! (docs/server.md): `/v1/chat/completions` (tools, logprobs, streaming), `/v1/completions`,
//! `/v1/models`, `/health`, `/metrics`.
//!
//! Threads: one engine thread owns the engine and steps it while there is work
//! ([`engine_loop`]); a tokio runtime runs the HTTP side ([`http`], [`routes`]). They talk
//! over channels: requests and cancellations in, each request's events out on its own channel
//! ([`engine_handle`]).
//!
//! - [`model`]: what the server needs from the model besides the engine ([`ServedModel`]).
//! - [`openai`]: request and response shapes; [`params`]: request fields -> engine request.
//! - [`output`], [`stop_strings`]: generated ids -> text and tool calls, stop strings.
//! - [`structured`]: `response_format` and vLLM's guided fields -> a grammar.
//! - [`sse`]: streaming; [`metrics`]: Prometheus text; [`error`]: OpenAI-shaped errors.

pub mod choices;
pub mod engine_handle;
pub mod engine_loop;
pub mod error;
mod fd_limit;
pub mod http;
pub mod metrics;
pub mod model;
pub mod openai;
pub mod output;
pub mod params;
pub mod routes;
pub mod sse;
pub mod stop_strings;
pub mod structured;
/// Nemo's tokenizer loaded once, for the server's unit and integration tests (not an API).
#[doc(hidden)]
pub mod test_support;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use engine_handle::{EngineHandle, Generation, SubmitError};
pub use engine_loop::{EngineInfo, GenEvent, LoopContext};
pub use error::{ApiError, ServerError};
pub use metrics::Metrics;
pub use model::{SamplingDefaults, ServedModel};

/// How the server listens and what it accepts.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// 127.0.0.1 unless told otherwise: nothing outside the machine reaches it by default.
    pub host: String,
    /// 0 picks a free port ([`RunningServer::addr`] says which).
    pub port: u16,
    /// When set, `/v1/*` needs `Authorization: Bearer <key>` (compared in constant time).
    pub api_key: Option<String>,
    /// Larger request bodies get 413 without being read.
    pub max_body_bytes: usize,
    /// Open connections at most; one more is answered 503 and closed at once (each costs a
    /// file descriptor and a task, idle keep-alive ones included).
    pub max_connections: usize,
    /// The request line and headers together (hyper answers 431 past it; at least 8192).
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// A client that has not sent its headers by then is disconnected (slow-loris).
    pub header_read_timeout: Duration,
    /// How long requests in flight may run on after SIGTERM before they are cancelled.
    pub shutdown_timeout: Duration,
    /// Interval of SSE comments while a stream has nothing to send (reveals gone clients).
    pub keepalive: Duration,
    /// Stop on SIGTERM / SIGINT (the command line); tests stop with [`RunningServer::shutdown`].
    pub handle_signals: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8000,
            api_key: None,
            max_body_bytes: 8 << 20,
            max_connections: 1024,
            max_header_bytes: 64 << 10,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(1),
            handle_signals: true,
        }
    }
}

/// A server running on its own threads.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub engine: EngineInfo,
    pub metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// Starts the shutdown sequence (as SIGTERM does).
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits until the server has shut down (after a signal or [`RunningServer::shutdown`]).
    pub fn wait(self) -> Result<(), ServerError> {
        match self.thread.join() {
            Ok(result) => result,
            Err(panic) => Err(ServerError::EngineDied(engine_handle::panic_message(&panic))),
        }
    }
}

/// Builds the engine on its thread (`build`, see [`engine_handle::spawn_engine`]), binds the
/// listener, and serves on a background thread. Errors here (no engine, port taken) mean
/// nothing was started.
pub fn start<F>(config: ServerConfig, model: Arc<dyn ServedModel>, build: F) -> Result<RunningServer, ServerError>
where
    F: FnOnce(LoopContext) + Send + 'static,
{
    // Connections, plus the model files, the engine's and the runtime's own descriptors.
    let want = config.max_connections as u64 + 128;
    if let Some(limit) = fd_limit::raise_to(want).filter(|&l| l < want) {
        eprintln!(
            "nemo: warning: the open-file limit is {limit}, below --max-connections {} + 128: connections past it \
             cannot be accepted; raise it (ulimit -n) or lower --max-connections",
            config.max_connections
        );
    }
    let metrics = Arc::new(Metrics::default());
    let (engine, engine_thread) = engine_handle::spawn_engine(model.clone(), metrics.clone(), build)?;
    let stop_engine = |engine: &EngineHandle, thread: JoinHandle<()>| {
        engine.stop();
        thread.join().map_err(|panic| ServerError::EngineDied(engine_handle::panic_message(&panic)))
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("nemo-http").build() {
        Ok(rt) => rt,
        Err(e) => {
            stop_engine(&engine, engine_thread)?;
            return Err(e.into());
        }
    };
    let bound = runtime.block_on(tokio::net::TcpListener::bind((config.host.as_str(), config.port)));
    let listener = match bound.and_then(|l| l.local_addr().map(|a| (l, a))) {
        Ok(pair) => pair,
        Err(source) => {
            stop_engine(&engine, engine_thread)?;
            return Err(ServerError::Bind { addr: format!("{}:{}", config.host, config.port), source });
        }
    };
    let (listener, addr) = listener;
    let info = *engine.info();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle_signals = config.handle_signals;
    let state = routes::AppState {
        model,
        engine: engine.clone(),
        metrics: metrics.clone(),
        config: Arc::new(config),
        draining: Arc::new(AtomicBool::new(false)),
        started: openai::unix_time(),
    };
    let thread = std::thread::Builder::new().name("nemo-server".into()).spawn(move || {
        let stop = async move {
            if handle_signals {
                tokio::select! {
                    _ = http::termination_signal() => {}
                    _ = stop_rx => {}
                }
            } else {
                let _ = stop_rx.await;
            }
        };
        let served = runtime.block_on(http::serve(listener, state, stop));
        let engine_done = stop_engine(&engine, engine_thread);
        runtime.shutdown_timeout(Duration::from_secs(1));
        served.and(engine_done)
    })?;
    Ok(RunningServer { addr, engine: info, metrics, stop: Some(stop_tx), thread })
}
