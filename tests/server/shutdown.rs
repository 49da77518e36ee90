//! Shutdown (issue 7 item 4) in process; the real binary's SIGTERM is tested by the
//! openai-client suite. In-flight requests finish within the bound; past it they are
//! cancelled with an error the client sees; new connections are refused.

use std::io::BufReader;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use crate::harness::{chat_body, Options, TestServer};
use crate::http_client::*;

#[test]
fn requests_in_flight_finish_then_the_server_stops() {
    let s = TestServer::start(Options::default());
    s.knobs.step_delay_us.store(5_000, Ordering::SeqCst);
    let addr = s.addr;
    let body = chat_body("hi", json!({"max_tokens": 60, "ignore_eos": true, "stream": true}));
    let mut stream = connect(addr);
    send(&mut stream, "POST", "/v1/chat/completions", &[], body.to_string().as_bytes());
    let mut reader = BufReader::new(stream);
    assert_eq!(read_head(&mut reader).0, 200);
    let client = std::thread::spawn(move || {
        let mut text = String::new();
        while let Some(chunk) = read_chunk(&mut reader) {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    });
    s.wait_metric("nemo_requests_running", 1.0, Duration::from_secs(5));
    let mut s = s;
    let took = s.shutdown();
    let text = client.join().unwrap();
    let payloads = sse_payloads(&text);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let last: serde_json::Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length", "the stream finished normally: {text}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(std::net::TcpStream::connect(addr).is_err(), "the listener is closed");
}

#[test]
fn past_the_bound_requests_are_cancelled_with_an_error() {
    let mut opts = Options::default();
    opts.config.shutdown_timeout = Duration::from_millis(300);
    let mut s = TestServer::start(opts);
    s.knobs.step_delay_us.store(5_000, Ordering::SeqCst);
    let addr = s.addr;
    let whole = std::thread::spawn(move || {
        post_json(addr, "/v1/chat/completions", &chat_body("hi", json!({"max_tokens": 3000, "ignore_eos": true})))
    });
    let streamed = std::thread::spawn(move || {
        let body = chat_body("hi", json!({"max_tokens": 3000, "ignore_eos": true, "stream": true}));
        post_json(addr, "/v1/chat/completions", &body)
    });
    s.wait_metric("nemo_requests_running", 2.0, Duration::from_secs(5));
    let took = s.shutdown();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?} with a 0.3 s bound");
    let r = whole.join().unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.error_message().contains("shutting down"));
    let r = streamed.join().unwrap();
    let payloads = sse_payloads(&r.text());
    assert!(payloads[payloads.len() - 2].contains("shutting down"), "{payloads:?}");
}
