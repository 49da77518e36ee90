//! The engine thread: it owns the [`Engine`] (and so the backend and its KV cache), takes
//! requests and cancellations from a channel, steps while there is work, and sends each
//! request's tokens and end to that request's own channel. When idle it sleeps on the channel.
//!
//! Everything that must happen between two steps happens here: a client gone (its channel
//! closed, or a `Cancel` from its handler) is cancelled before the next step, so its KV blocks
//! are free for that step; a stop string found in the text ends the request before the next
//! step, so no token is generated past it.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::metrics::Metrics;
use super::model::ServedModel;
use super::output::{FinalOutput, OutputProcessor, OutputSpec, Piece};
use crate::engine::BatchBackend;
use crate::sampling::TokenLogprobs;
use crate::scheduler::{Admission, Engine, Event, FinishReason, Limits, Request, RequestError, RequestId, Usage};

/// What handlers send the engine thread.
pub enum Command {
    Submit(Submission),
    /// The client of this ticket is gone (or its handler was dropped).
    Cancel(u64),
    /// Ends every request now (the shutdown bound ran out).
    CancelAll,
    /// Finish the work in hand, then return.
    Stop,
}

pub struct Submission {
    /// The handler's name for the request (the engine's id is not known until it is added).
    pub ticket: u64,
    pub request: Request,
    pub output: OutputSpec,
    pub arrived: Instant,
    pub events: UnboundedSender<GenEvent>,
}

/// What a request's channel carries: `Accepted` or `Rejected` first, then tokens, then one
/// `Finished` (the channel closes after it).
#[derive(Debug)]
pub enum GenEvent {
    Accepted,
    Rejected(RequestError),
    Token { token: u32, logprobs: Option<TokenLogprobs>, pieces: Vec<Piece> },
    Finished { reason: FinishReason, usage: Usage, output: FinalOutput },
}

/// Sizes of the running engine, for up-front checks and `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct EngineInfo {
    pub limits: Limits,
    pub max_running: usize,
    pub max_step_tokens: usize,
    /// Requests that may wait at once (`--max-waiting`; `usize::MAX`: unbounded).
    pub max_waiting: usize,
    pub device: &'static str,
}

/// One request in flight.
struct Active<'t> {
    ticket: u64,
    events: UnboundedSender<GenEvent>,
    output: OutputProcessor<'t>,
    arrived: Instant,
    last_token: Option<Instant>,
    /// Set when the output could not be decoded: the request was cancelled and ends with it.
    failure: Option<String>,
}

/// Runs the loop until `Stop` (or every sender is gone) and no work is left, or until the
/// backend is unusable: then every request has ended with the error, and the returned reason
/// tells the server to stop (a supervisor restarts it; serving errors forever helps no one).
pub fn run<B: BatchBackend>(
    mut engine: Engine<B>,
    inbox: Receiver<Command>,
    model: Arc<dyn ServedModel>,
    metrics: Arc<Metrics>,
) -> Option<String> {
    let tokenizer = model.tokenizer();
    let mut active: HashMap<RequestId, Active<'_>> = HashMap::new();
    let mut tickets: HashMap<u64, RequestId> = HashMap::new();
    let mut stopping = false;
    metrics.kv_blocks_total.store(engine.scheduler().pool().num_blocks() as u64, Relaxed);
    publish_gauges(&engine, &metrics);
    loop {
        if !engine.has_work() {
            if stopping {
                return None;
            }
            match inbox.recv() {
                Ok(cmd) => stopping |= apply(cmd, &mut engine, &mut active, &mut tickets, tokenizer),
                Err(_) => stopping = true,
            }
        }
        while let Ok(cmd) = inbox.try_recv() {
            stopping |= apply(cmd, &mut engine, &mut active, &mut tickets, tokenizer);
        }
        // A client may have gone while its request waited: cancel before the step.
        for (id, a) in &active {
            if a.events.is_closed() && a.failure.is_none() {
                engine.cancel(*id);
            }
        }
        if !engine.has_work() {
            publish_gauges(&engine, &metrics);
            continue;
        }
        let steps_before = engine.steps();
        let started = Instant::now();
        let events = engine.step();
        if engine.steps() > steps_before {
            metrics.steps.fetch_add(1, Relaxed);
            metrics.step_duration.observe(started.elapsed().as_secs_f64());
        }
        // The step has already freed the blocks of what finished: say so before the clients
        // hear of it (a client that reads /metrics next must see it), and again after routing
        // (which may cancel).
        publish_gauges(&engine, &metrics);
        for event in events {
            route(event, &mut engine, &mut active, &mut tickets, &metrics);
        }
        publish_gauges(&engine, &metrics);
        if let Some(why) = engine.unusable() {
            eprintln!("nemo: {why}; every request in flight ended with this error; the server stops (restart it)");
            return Some(why.to_string());
        }
    }
}

/// Applies one command; true when it asks the loop to stop.
fn apply<'t, B: BatchBackend>(
    cmd: Command,
    engine: &mut Engine<B>,
    active: &mut HashMap<RequestId, Active<'t>>,
    tickets: &mut HashMap<u64, RequestId>,
    tokenizer: &'t crate::tokenizer::Tokenizer,
) -> bool {
    match cmd {
        Command::Submit(s) => {
            if s.events.is_closed() {
                return false; // the client left before its request got here
            }
            match engine.add_request(s.request) {
                Ok(id) => {
                    let _ = s.events.send(GenEvent::Accepted);
                    tickets.insert(s.ticket, id);
                    let output = OutputProcessor::new(tokenizer, &s.output);
                    let a = Active { ticket: s.ticket, events: s.events, output, arrived: s.arrived, last_token: None, failure: None };
                    active.insert(id, a);
                }
                Err(e) => {
                    let _ = s.events.send(GenEvent::Rejected(e));
                }
            }
            false
        }
        Command::Cancel(ticket) => {
            if let Some(id) = tickets.get(&ticket) {
                engine.cancel(*id);
            }
            false
        }
        Command::CancelAll => {
            for id in active.keys() {
                engine.cancel(*id);
            }
            false
        }
        Command::Stop => true,
    }
}

fn route<B: BatchBackend>(
    event: Event,
    engine: &mut Engine<B>,
    active: &mut HashMap<RequestId, Active<'_>>,
    tickets: &mut HashMap<u64, RequestId>,
    metrics: &Metrics,
) {
    match event {
        Event::Token { id, index, token, logprobs } => {
            let Some(a) = active.get_mut(&id) else { return };
            let now = Instant::now();
            match a.last_token {
                None => metrics.time_to_first_token.observe((now - a.arrived).as_secs_f64()),
                Some(last) => metrics.inter_token_latency.observe((now - last).as_secs_f64()),
            }
            debug_assert_eq!(index == 0, a.last_token.is_none());
            a.last_token = Some(now);
            metrics.generation_tokens.fetch_add(1, Relaxed);
            if a.failure.is_some() {
                return;
            }
            match a.output.push(token) {
                Ok((pieces, stopped)) => {
                    let gone = a.events.send(GenEvent::Token { token, logprobs, pieces }).is_err();
                    if gone {
                        engine.cancel(id);
                    } else if stopped {
                        engine.finish_stopped(id);
                    }
                }
                Err(e) => {
                    a.failure = Some(format!("the generated token {token} could not be decoded: {e}"));
                    engine.cancel(id);
                }
            }
        }
        Event::Finished { id, reason, usage } => {
            let Some(mut a) = active.remove(&id) else { return };
            tickets.remove(&a.ticket);
            let reason = match a.failure.take() {
                Some(msg) => FinishReason::Error(msg),
                None => reason,
            };
            metrics.count_finished(reason.as_str());
            metrics.prompt_tokens.fetch_add(usage.prompt_tokens as u64, Relaxed);
            metrics.cached_prompt_tokens.fetch_add(usage.cached_tokens as u64, Relaxed);
            metrics.preemptions.fetch_add(usage.preemptions as u64, Relaxed);
            let (reason, output) = match a.output.finish() {
                Ok(output) => (reason, output),
                Err(e) => (FinishReason::Error(format!("the output could not be decoded: {e}")), FinalOutput::default()),
            };
            let _ = a.events.send(GenEvent::Finished { reason, usage, output });
        }
    }
}

fn publish_gauges<B: BatchBackend>(engine: &Engine<B>, metrics: &Metrics) {
    let s = engine.scheduler();
    metrics.waiting.store(s.num_waiting() as u64, Relaxed);
    metrics.running.store(s.num_running() as u64, Relaxed);
    metrics.kv_blocks_used.store(s.pool().num_used() as u64, Relaxed);
    metrics.kv_blocks_cached.store(s.pool().num_registered() as u64, Relaxed);
    let ratio = match s.config().admission {
        Admission::Reserve => s.reserve_ratio(),
        Admission::Optimistic => 0.0,
    };
    metrics.admission_reserve_ratio.store(ratio.to_bits(), Relaxed);
}

/// Reads the sizes a request is checked against from a built engine.
pub fn engine_info<B: BatchBackend>(engine: &Engine<B>) -> EngineInfo {
    let c = engine.scheduler().config();
    let model = engine.backend().config();
    EngineInfo {
        limits: Limits {
            vocab_size: model.vocab_size,
            max_context: model.max_context,
            block_size: c.block_size,
            num_blocks: c.num_blocks,
        },
        max_running: c.max_running,
        max_step_tokens: c.max_step_tokens,
        max_waiting: engine.max_waiting(),
        device: engine.backend().device(),
    }
}

/// Handed to the code that builds the engine on its own thread: it reports the engine's sizes
/// (or why it could not be built) and then runs the loop.
pub struct LoopContext {
    pub(super) inbox: Receiver<Command>,
    pub(super) ready: Sender<Result<EngineInfo, String>>,
    pub(super) model: Arc<dyn ServedModel>,
    pub(super) metrics: Arc<Metrics>,
    /// Why the loop ended on its own (the backend became unusable), for the server's error.
    pub(super) exit_reason: Arc<std::sync::Mutex<Option<String>>>,
}

impl LoopContext {
    /// Serves with `engine` until the server stops.
    pub fn run<B: BatchBackend>(self, engine: Engine<B>) {
        let _ = self.ready.send(Ok(engine_info(&engine)));
        if let Some(why) = run(engine, self.inbox, self.model, self.metrics) {
            *self.exit_reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        }
    }

    /// The engine could not be built: the server does not start, and says why.
    pub fn fail(self, reason: impl Into<String>) {
        let _ = self.ready.send(Err(reason.into()));
    }
}
