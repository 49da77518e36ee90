//! The async side of the engine thread: starting it, submitting a request and reading its
//! events. A [`Generation`] cancels its request when dropped before the end, which is what
//! turns a client that goes away (hyper drops the response body, axum the handler future)
//! into a cancelled sequence whose KV blocks are freed before the next step.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::engine_loop::{Command, EngineInfo, GenEvent, LoopContext, Submission};
use super::error::ServerError;
use super::metrics::Metrics;
use super::model::ServedModel;
use super::output::OutputSpec;
use crate::scheduler::{Request, RequestError};

#[derive(Clone)]
pub struct EngineHandle {
    commands: Sender<Command>,
    info: EngineInfo,
    next_ticket: Arc<AtomicU64>,
    /// False once the engine thread has returned (or died).
    alive: Arc<AtomicBool>,
    /// Notified when the engine thread returns.
    exited: Arc<tokio::sync::Notify>,
    /// Why it returned on its own, if it said.
    exit_reason: Arc<std::sync::Mutex<Option<String>>>,
}

/// Why a submission did not start generating.
#[derive(Debug)]
pub enum SubmitError {
    Rejected(RequestError),
    /// The engine thread is gone.
    Stopped,
}

/// Starts the engine thread. `build` runs on it: it makes the engine (the backend may only
/// live on the thread that made it) and calls [`LoopContext::run`], or [`LoopContext::fail`].
/// Returns once the engine is built.
pub fn spawn_engine<F>(
    model: Arc<dyn ServedModel>,
    metrics: Arc<Metrics>,
    build: F,
) -> Result<(EngineHandle, JoinHandle<()>), ServerError>
where
    F: FnOnce(LoopContext) + Send + 'static,
{
    let (commands, inbox) = mpsc::channel();
    let (ready, ready_rx) = mpsc::channel();
    let alive = Arc::new(AtomicBool::new(true));
    let exited = Arc::new(tokio::sync::Notify::new());
    let down = Down { alive: alive.clone(), exited: exited.clone() };
    let exit_reason = Arc::new(std::sync::Mutex::new(None));
    let ctx = LoopContext { inbox, ready, model, metrics, exit_reason: exit_reason.clone() };
    let thread = std::thread::Builder::new()
        .name("nemo-engine".into())
        .spawn(move || {
            let _down = down; // also when `build` panics
            build(ctx)
        })?;
    match ready_rx.recv() {
        Ok(Ok(info)) => {
            let next_ticket = Arc::new(AtomicU64::new(0));
            Ok((EngineHandle { commands, info, next_ticket, alive, exited, exit_reason }, thread))
        }
        Ok(Err(reason)) => Err(ServerError::EngineStart(reason)),
        Err(_) => {
            let why = match thread.join() {
                Err(panic) => panic_message(&panic),
                Ok(()) => "it returned without reporting".into(),
            };
            Err(ServerError::EngineStart(why))
        }
    }
}

/// Marks the engine thread as gone when it ends, however it ends.
struct Down {
    alive: Arc<AtomicBool>,
    exited: Arc<tokio::sync::Notify>,
}

impl Drop for Down {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::SeqCst);
        self.exited.notify_one();
    }
}

pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => format!("panicked: {s}"),
        (_, Some(s)) => format!("panicked: {s}"),
        _ => "panicked".into(),
    }
}

impl EngineHandle {
    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Why the engine thread returned on its own (None while it runs, or when it just stopped).
    pub fn exit_reason(&self) -> Option<String> {
        self.exit_reason.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Resolves when the engine thread has returned.
    pub async fn exited(&self) {
        self.exited.notified().await
    }

    /// Queues `request`; resolves once the engine has accepted or refused it.
    pub async fn submit(&self, request: Request, output: OutputSpec, arrived: Instant) -> Result<Generation, SubmitError> {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (events, mut rx) = unbounded_channel();
        let submission = Submission { ticket, request, output, arrived, events };
        self.commands.send(Command::Submit(submission)).map_err(|_| SubmitError::Stopped)?;
        // From here on, dropping this future (the client left) cancels the request.
        let mut guard = CancelGuard { ticket, commands: self.commands.clone(), armed: true };
        match rx.recv().await {
            Some(GenEvent::Accepted) => Ok(Generation { events: rx, guard }),
            Some(GenEvent::Rejected(e)) => {
                guard.armed = false;
                Err(SubmitError::Rejected(e))
            }
            _ => Err(SubmitError::Stopped),
        }
    }

    /// Ends every request now (the shutdown bound ran out).
    pub fn cancel_all(&self) {
        let _ = self.commands.send(Command::CancelAll);
    }

    /// The engine thread finishes the work in hand, then returns.
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }
}

/// A running request's events. `None` from [`Generation::next`] before `Finished` means the
/// engine thread is gone.
pub struct Generation {
    events: UnboundedReceiver<GenEvent>,
    guard: CancelGuard,
}

impl Generation {
    pub async fn next(&mut self) -> Option<GenEvent> {
        let event = self.events.recv().await;
        if matches!(event, Some(GenEvent::Finished { .. }) | None) {
            self.guard.armed = false;
        }
        event
    }
}

/// Sends `Cancel` for its ticket when dropped while the request may still run.
struct CancelGuard {
    ticket: u64,
    commands: Sender<Command>,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.commands.send(Command::Cancel(self.ticket));
        }
    }
}
