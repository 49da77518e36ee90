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
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::error::{ApiError, ServerError};
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
    let connections = Arc::new(Semaphore::new(config.max_connections));
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
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    state.metrics.count_response("(connection limit)", 503);
                    tokio::spawn(refuse(stream, config.max_connections));
                    continue;
                };
                let service = TowerToHyperService::new(app.clone());
                let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                let open = state.metrics.http_connections_open.clone();
                open.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let _ = connection.await;
                    open.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
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

/// Answers a connection past `--max-connections` with 503 and closes it, without reading its
/// request (a client sees an OpenAI-shaped error it can retry on, not a reset).
async fn refuse(mut stream: TcpStream, limit: usize) {
    let message = format!("too many open connections (the limit is {limit}); retry later");
    let body = ApiError::unavailable(message).body_json();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let write_then_drain = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes: closing with unread bytes would send a
        // reset, which may destroy the 503 before the client reads it.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write_then_drain).await;
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
