//! Faults (issue 9 item 3): a failing backend step fails that step's requests with a 5xx and
//! the server goes on, or, when the backend can never run again, fails them all and stops; a
//! KV cache too small for the load queues and preempts, never crashes, and gives every block back.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::json;

use crate::harness::{chat_body, Options, TestServer};
use crate::http_client::*;

/// A 200-token chat request on its own thread, whole or streamed.
fn long_chat(addr: SocketAddr, stream: bool) -> JoinHandle<Response> {
    let body = chat_body("hi", json!({"max_tokens": 200, "ignore_eos": true, "stream": stream}));
    std::thread::spawn(move || post_json(addr, "/v1/chat/completions", &body))
}

/// A stream that had started (200) and then failed: it ends with an error event, then [DONE],
/// as OpenAI's clients expect. Returns the event's message.
fn stream_error(r: &Response) -> String {
    assert_eq!(r.status, 200);
    let payloads = sse_payloads(&r.text());
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let error: serde_json::Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
    error["error"]["message"].as_str().unwrap_or_else(|| panic!("no error event: {payloads:?}")).to_string()
}

#[test]
fn a_failed_step_fails_its_requests_with_5xx_and_the_server_goes_on() {
    let s = TestServer::start(Options::default());
    s.knobs.step_delay_us.store(20_000, Ordering::SeqCst);
    let (whole, streamed) = (long_chat(s.addr, false), long_chat(s.addr, true));
    s.wait_metric("nemo_requests_running", 2.0, Duration::from_secs(10));
    s.knobs.fail_next.store(true, Ordering::SeqCst);

    let r = whole.join().unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    let message = r.error_message();
    assert!(message.contains("backend step failed"), "{message}");
    let message = stream_error(&streamed.join().unwrap());
    assert!(message.contains("backend step failed"), "{message}");

    s.knobs.step_delay_us.store(0, Ordering::SeqCst);
    assert_eq!(s.metric("nemo_kv_blocks_used"), 0.0);
    assert_eq!(s.metric("nemo_requests_finished_total{reason=\"error\"}"), 2.0);
    let r = post_json(s.addr, "/v1/chat/completions", &chat_body("again", json!({"max_tokens": 3})));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(s.addr, "/health").status, 200);
}

/// A step fails and the backend says it can never run again (a sticky CUDA error): every request
/// gets its error (the running stream an error event, the queued request 500 with the reason),
/// and the server stops by itself with the reason, so a supervisor restarts it instead of it
/// failing every request forever.
#[test]
fn an_unusable_backend_fails_every_request_and_stops_the_server() {
    let mut s = TestServer::start(Options { max_running: 1, ..Options::default() });
    s.knobs.step_delay_us.store(20_000, Ordering::SeqCst);
    let addr = s.addr;
    let streamed = long_chat(addr, true);
    s.wait_metric("nemo_requests_running", 1.0, Duration::from_secs(10));
    let queued = long_chat(addr, false);
    s.wait_metric("nemo_requests_waiting", 1.0, Duration::from_secs(10));
    s.knobs.fail_fatally.store(true, Ordering::SeqCst);
    s.knobs.fail_next.store(true, Ordering::SeqCst);

    let message = stream_error(&streamed.join().unwrap());
    assert!(message.contains("backend step failed"), "{message}");
    let r = queued.join().unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.error_message().contains("unusable after a failed step: the device fell off the bus"), "{}", r.text());
    let err = s.wait_for_exit().unwrap_err().to_string();
    assert!(err.contains("the device fell off the bus"), "{err}");
    // Nothing listens any more: a supervisor sees the process gone (the command exits non-zero).
    assert!(std::net::TcpStream::connect(addr).is_err(), "the listener is closed");
}

#[test]
fn an_exhausted_kv_cache_queues_and_preempts_and_every_answer_is_right() {
    // 12 blocks of 16 = 192 positions; 8 requests of ~20 + 80 tokens need ~800.
    let opts = Options {
        shape: nemo_engine::engine::CacheShape { block_size: 16, num_blocks: 12, max_step_tokens: 64 },
        ..Options::default()
    };
    let s = TestServer::start(opts);
    let bodies: Vec<_> = (0..8)
        .map(|i| chat_body(&format!("question {i}"), json!({"max_tokens": 80, "temperature": 0, "ignore_eos": true})))
        .collect();
    // Alone, each request has the cache to itself.
    let solo: Vec<String> = bodies
        .iter()
        .map(|b| post_json(s.addr, "/v1/chat/completions", b).json()["choices"][0]["message"]["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(s.metric("nemo_preemptions_total"), 0.0);
    let addr = s.addr;
    let handles: Vec<_> = bodies
        .into_iter()
        .map(|b| std::thread::spawn(move || post_json(addr, "/v1/chat/completions", &b)))
        .collect();
    for (h, want) in handles.into_iter().zip(&solo) {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["choices"][0]["message"]["content"].as_str().unwrap(), want);
    }
    assert!(s.metric("nemo_preemptions_total") > 0.0, "the load should have preempted");
    assert_eq!(s.metric("nemo_kv_blocks_used"), 0.0);
}
