//! An in-process server over stand-in backends and Nemo's real tokenizer and v3 template:
//! - [`Slow`]: the scheduler's fake model (logits hash the context read back through the
//!   block tables) with a delay per step and failures on demand;
//! - [`Scripted`]: after the last `[/INST]` it writes a fixed script of ids, so a real
//!   `[TOOL_CALLS]` output goes through the server's parser.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nemo_engine::engine::{check_batch, BatchBackend, CacheShape, EngineError, StepEntry};
use nemo_engine::model::ModelConfig;
use nemo_engine::scheduler::fake_backend::FakeBackend;
use nemo_engine::scheduler::{Admission, Engine, EngineOptions};
use nemo_engine::server::{self, RunningServer, SamplingDefaults, ServedModel, ServerConfig};
use nemo_engine::tokenizer::{encode_chat, ChatRequest, Tokenizer};

pub const VOCAB: usize = 131_072;
pub const INST_END: u32 = 4;
pub const TOOL_CALLS: u32 = 9;
pub const EOS: u32 = 2;

pub use nemo_engine::server::test_support::{tekken, tekken_grammars};
use nemo_engine::structured::Grammars;

/// Nemo's tokenizer and v3 template, served under the name "test-model".
pub struct TestModel {
    stop: Vec<u32>,
}

impl ServedModel for TestModel {
    fn name(&self) -> &str {
        "test-model"
    }
    fn tokenizer(&self) -> &Tokenizer {
        tekken()
    }
    fn encode_chat(&self, request: &ChatRequest) -> Result<Vec<u32>, String> {
        encode_chat(tekken(), request).map_err(|e| e.to_string())
    }
    fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, String> {
        tekken().encode_with(text, true, false).map_err(|e| e.to_string())
    }
    fn supports_tools(&self) -> bool {
        true
    }
    fn stop_token_ids(&self) -> &[u32] {
        &self.stop
    }
    fn sampling_defaults(&self) -> SamplingDefaults {
        SamplingDefaults::default()
    }
    fn grammars(&self) -> Option<&Grammars> {
        Some(tekken_grammars())
    }
}

/// Switches shared between a test and its backend.
#[derive(Default)]
pub struct Knobs {
    /// Sleep this many microseconds per step (a model that takes time).
    pub step_delay_us: AtomicU64,
    /// Fail the next step (then clear).
    pub fail_next: AtomicBool,
    /// After a failed step, say the device is gone for good (a sticky CUDA error).
    pub fail_fatally: AtomicBool,
    pub steps: AtomicU64,
}

/// The fake model, slowed and breakable.
pub struct Slow {
    inner: FakeBackend,
    knobs: Arc<Knobs>,
}

impl BatchBackend for Slow {
    fn config(&self) -> &ModelConfig {
        self.inner.config()
    }
    fn block_size(&self) -> usize {
        self.inner.block_size()
    }
    fn num_blocks(&self) -> usize {
        self.inner.num_blocks()
    }
    fn max_step_tokens(&self) -> usize {
        self.inner.max_step_tokens()
    }
    fn step(&mut self, batch: &[StepEntry<'_>]) -> Result<Vec<Option<Vec<f32>>>, EngineError> {
        self.knobs.steps.fetch_add(1, Ordering::SeqCst);
        let delay = self.knobs.step_delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        if self.knobs.fail_next.swap(false, Ordering::SeqCst) {
            return Err(EngineError::NoTokens); // stands for any backend failure (a CUDA error)
        }
        self.inner.step(batch)
    }
    fn check_usable(&mut self) -> Result<(), String> {
        match self.knobs.fail_fatally.load(Ordering::SeqCst) {
            true => Err("the device fell off the bus".into()),
            false => Ok(()),
        }
    }
    fn device(&self) -> &'static str {
        "fake"
    }
}

/// Writes `script` after the last `[/INST]` of the context, then EOS.
pub struct Scripted {
    config: ModelConfig,
    shape: CacheShape,
    slots: Vec<u32>,
    script: Vec<u32>,
}

impl BatchBackend for Scripted {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn block_size(&self) -> usize {
        self.shape.block_size
    }
    fn num_blocks(&self) -> usize {
        self.shape.num_blocks
    }
    fn max_step_tokens(&self) -> usize {
        self.shape.max_step_tokens
    }
    fn step(&mut self, batch: &[StepEntry<'_>]) -> Result<Vec<Option<Vec<f32>>>, EngineError> {
        check_batch(&self.config, self.shape, batch)?;
        let bs = self.shape.block_size;
        let slot = |table: &[u32], pos: usize| table[pos / bs] as usize * bs + pos % bs;
        let mut out = Vec::new();
        for e in batch {
            let start = e.ctx_len - e.tokens.len();
            for (i, &t) in e.tokens.iter().enumerate() {
                self.slots[slot(e.block_table, start + i)] = t;
            }
            if !e.want_logits {
                out.push(None);
                continue;
            }
            let context: Vec<u32> = (0..e.ctx_len).map(|p| self.slots[slot(e.block_table, p)]).collect();
            let after = context.iter().rposition(|&t| t == INST_END).map_or(0, |p| e.ctx_len - p - 1);
            let next = self.script.get(after).copied().unwrap_or(EOS);
            let mut logits = vec![0.0f32; self.config.vocab_size];
            logits[next as usize] = 30.0;
            out.push(Some(logits));
        }
        Ok(out)
    }
    fn device(&self) -> &'static str {
        "scripted"
    }
}

pub struct Options {
    pub config: ServerConfig,
    pub shape: CacheShape,
    pub max_running: usize,
    /// `Engine::with_max_waiting` (unbounded by default).
    pub max_waiting: usize,
    pub max_context: usize,
    /// `Some`: the scripted backend with this script; `None`: the slow fake model.
    pub script: Option<Vec<u32>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: ServerConfig { port: 0, handle_signals: false, ..ServerConfig::default() },
            shape: CacheShape { block_size: 16, num_blocks: 256, max_step_tokens: 512 },
            max_running: 64,
            max_waiting: usize::MAX,
            max_context: 4096,
            script: None,
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub knobs: Arc<Knobs>,
    server: Option<RunningServer>,
}

impl TestServer {
    pub fn start(opts: Options) -> TestServer {
        let knobs = Arc::new(Knobs::default());
        let k = knobs.clone();
        let model = Arc::new(TestModel { stop: vec![EOS] });
        let (shape, max_context, max_running, script) = (opts.shape, opts.max_context, opts.max_running, opts.script);
        let max_waiting = opts.max_waiting;
        let engine_opts = EngineOptions { max_running, max_step_tokens: shape.max_step_tokens, prefix_caching: true, admission: Admission::Optimistic };
        let server = server::start(opts.config, model, move |ctx| match script {
            None => {
                let inner = FakeBackend::new(VOCAB, max_context, shape);
                ctx.run(Engine::new(Slow { inner, knobs: k }, engine_opts).unwrap().with_max_waiting(max_waiting))
            }
            Some(script) => {
                let config = ModelConfig { vocab_size: VOCAB, max_context, ..ModelConfig::nemo_12b() };
                let slots = vec![0; shape.num_blocks * shape.block_size];
                ctx.run(Engine::new(Scripted { config, shape, slots, script }, engine_opts).unwrap().with_max_waiting(max_waiting))
            }
        })
        .expect("the server starts");
        TestServer { addr: server.addr, knobs, server: Some(server) }
    }

    /// Waits for the server to stop by itself; returns how it ended.
    pub fn wait_for_exit(&mut self) -> Result<(), nemo_engine::server::ServerError> {
        self.server.take().expect("running").wait()
    }

    /// Starts the shutdown sequence and waits for it; returns how long it took.
    pub fn shutdown(&mut self) -> Duration {
        let started = Instant::now();
        let mut server = self.server.take().expect("running");
        server.shutdown();
        server.wait().expect("a clean shutdown");
        started.elapsed()
    }

    pub fn metric(&self, series: &str) -> f64 {
        super::http_client::metric(self.addr, series)
    }

    /// Polls `series` until it equals `want` (or panics after `within`).
    pub fn wait_metric(&self, series: &str, want: f64, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let v = self.metric(series);
            if v == want {
                return started.elapsed();
            }
            assert!(started.elapsed() < within, "{series} is {v}, not {want}, after {within:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.shutdown();
            let _ = s.wait();
        }
    }
}

/// A chat request body for the test model.
pub fn chat_body(content: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut body = serde_json::json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": content}],
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}
