//! A client that goes away cancels its request, and its KV blocks are free at once (issue 7
//! item 3): mid-stream, while waiting for a whole answer, and while still queued.

use std::io::BufReader;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use crate::harness::{chat_body, Options, TestServer};
use crate::http_client::*;

fn slow_server(max_running: usize) -> TestServer {
    let s = TestServer::start(Options { max_running, ..Options::default() });
    s.knobs.step_delay_us.store(10_000, Ordering::SeqCst);
    s
}

fn long_body(stream: bool) -> serde_json::Value {
    chat_body("hi", json!({"max_tokens": 2000, "ignore_eos": true, "stream": stream}))
}

#[test]
fn closing_a_stream_cancels_it_and_frees_its_blocks() {
    let s = slow_server(64);
    let mut stream = connect(s.addr);
    send(&mut stream, "POST", "/v1/chat/completions", &[], long_body(true).to_string().as_bytes());
    let mut reader = BufReader::new(stream);
    let (status, _) = read_head(&mut reader);
    assert_eq!(status, 200);
    for _ in 0..5 {
        assert!(read_chunk(&mut reader).is_some());
    }
    assert_eq!(s.metric("nemo_requests_running"), 1.0);
    assert!(s.metric("nemo_kv_blocks_used") > 0.0);
    drop(reader); // the client goes away
    let took = s.wait_metric("nemo_kv_blocks_used", 0.0, Duration::from_secs(5));
    assert_eq!(s.metric("nemo_requests_finished_total{reason=\"cancelled\"}"), 1.0);
    assert_eq!(s.metric("nemo_requests_running"), 0.0);
    // A few steps of 10 ms at most: the next write fails and the next step runs without it.
    assert!(took < Duration::from_secs(1), "blocks freed after {took:?}");
}

#[test]
fn closing_while_waiting_for_a_whole_answer_cancels_it() {
    let s = slow_server(64);
    let mut stream = connect(s.addr);
    send(&mut stream, "POST", "/v1/chat/completions", &[], long_body(false).to_string().as_bytes());
    s.wait_metric("nemo_requests_running", 1.0, Duration::from_secs(5));
    drop(stream);
    let took = s.wait_metric("nemo_kv_blocks_used", 0.0, Duration::from_secs(5));
    assert_eq!(s.metric("nemo_requests_finished_total{reason=\"cancelled\"}"), 1.0);
    assert!(took < Duration::from_secs(1), "blocks freed after {took:?}");
}

#[test]
fn closing_while_queued_cancels_before_it_runs() {
    // One sequence at a time: the second request waits behind the first.
    let s = slow_server(1);
    let mut first = connect(s.addr);
    send(&mut first, "POST", "/v1/chat/completions", &[], long_body(true).to_string().as_bytes());
    s.wait_metric("nemo_requests_running", 1.0, Duration::from_secs(5));
    let mut second = connect(s.addr);
    send(&mut second, "POST", "/v1/chat/completions", &[], long_body(true).to_string().as_bytes());
    s.wait_metric("nemo_requests_waiting", 1.0, Duration::from_secs(5));
    let mut reader = BufReader::new(second);
    assert_eq!(read_head(&mut reader).0, 200);
    drop(reader);
    // Found by the next keep-alive write (1 s) or the engine's check of closed channels.
    s.wait_metric("nemo_requests_waiting", 0.0, Duration::from_secs(5));
    assert_eq!(s.metric("nemo_requests_finished_total{reason=\"cancelled\"}"), 1.0);
    assert_eq!(s.metric("nemo_requests_running"), 1.0, "the first request runs on");
    drop(first);
    s.wait_metric("nemo_kv_blocks_used", 0.0, Duration::from_secs(5));
}
