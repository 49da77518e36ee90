//! The listener: HTTP/1.1 connections through hyper with bounded headers and a header read
//! timeout, the axum router as the service, and the shutdown sequence.
//!
//! Shutdown (SIGTERM, SIGINT, or [`super::RunningServer::shutdown`]): stop accepting, answer
//! new requests on open connections with 503, let requests in flight finish for up to
//! `shutdown_timeout`, then cancel what is left (clients get an error, not a hang) and give
//! the connections a few seconds to say so. Then the engine thread finishes and the process
//! exits 0.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::error::ServerError;
use super::routes::{router, AppState};

/// How long connections get to deliver the cancellation errors after the drain bound.
const AFTER_CANCEL: Duration = Duration::from_secs(5);

/// Serves until `stop` resolves or the engine thread ends; then drains.
pub async fn serve(listener: TcpListener, state: AppState, stop: impl Future<Output = ()>) -> Result<(), ServerError> {
    let config = state.config.clone();
    let app = router(state.clone());
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_header_size(config.max_header_bytes)
        .max_headers(config.max_headers);
    tokio::pin!(stop);
    let engine = state.engine.clone();
    let engine_exit = engine.exited();
    tokio::pin!(engine_exit);
    let mut engine_died = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        eprintln!("nemo: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let service = TowerToHyperService::new(app.clone());
                let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            _ = &mut stop => break,
            _ = &mut engine_exit => {
                engine_died = true;
                break;
            }
        }
    }
    drop(listener);
    state.draining.store(true, Ordering::SeqCst);
    let in_flight = state.metrics.running.load(Ordering::Relaxed) + state.metrics.waiting.load(Ordering::Relaxed);
    eprintln!(
        "nemo: shutting down: no new connections; {in_flight} request(s) in flight get up to {} s to finish",
        config.shutdown_timeout.as_secs_f64()
    );
    let mut closed = tokio::spawn(graceful.shutdown());
    if tokio::time::timeout(config.shutdown_timeout, &mut closed).await.is_err() {
        eprintln!("nemo: shutdown bound reached: cancelling the requests still running");
        state.engine.cancel_all();
        if tokio::time::timeout(AFTER_CANCEL, &mut closed).await.is_err() {
            eprintln!("nemo: some connections did not close; exiting anyway");
        }
    }
    if engine_died {
        let why = state.engine.exit_reason().unwrap_or_else(|| "the engine thread ended while serving".into());
        return Err(ServerError::EngineDied(why));
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            eprintln!("nemo: warning: cannot listen for SIGTERM/SIGINT; stop the server with SIGKILL");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => eprintln!("nemo: SIGTERM received"),
        _ = int.recv() => eprintln!("nemo: SIGINT received"),
    }
}
