//! Server-sent events: the events of a request's [`Choices`] as `data: {json}` frames, then
//! `data: [DONE]`. The body owns the choices, so when the client goes away and hyper drops
//! the body, every choice is cancelled. While nothing is generated (a queued request) a
//! comment frame is sent now and then: clients ignore it, and writing it is what reveals a
//! client that left.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;

use super::choices::{ChoiceEvent, Choices};
use super::engine_loop::GenEvent;

/// Turns the events of a request's choices into SSE `data` payloads (JSON texts).
pub trait StreamFormat: Send + 'static {
    /// Payloads sent before any token (e.g. the chat role chunk of each choice).
    fn start(&mut self) -> Vec<String>;
    /// Payloads for one event of choice `index`; `true` when the stream must end now (an
    /// error payload ends it; the other choices are then cancelled).
    fn event(&mut self, index: usize, event: GenEvent) -> (Vec<String>, bool);
    /// Payloads after every choice has finished (the usage chunk, if asked).
    fn finish(&mut self) -> Vec<String>;
    /// The engine thread went away mid-stream: an error payload.
    fn engine_gone(&mut self) -> Vec<String> {
        vec![super::routes::generate::engine_gone().body_json()]
    }
}

enum Phase {
    Start,
    Streaming,
    Done,
}

struct State<F> {
    choices: Choices,
    format: F,
    phase: Phase,
    keepalive: Duration,
}

fn frames(payloads: Vec<String>, done: bool) -> Bytes {
    let mut out = String::new();
    for p in payloads {
        out.push_str("data: ");
        out.push_str(&p);
        out.push_str("\n\n");
    }
    if done {
        out.push_str("data: [DONE]\n\n");
    }
    Bytes::from(out)
}

pub fn sse_response<F: StreamFormat>(choices: Choices, format: F, keepalive: Duration) -> Response {
    let state = State { choices, format, phase: Phase::Start, keepalive };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        match st.phase {
            Phase::Done => None,
            Phase::Start => {
                st.phase = Phase::Streaming;
                let first = frames(st.format.start(), false);
                Some((Ok::<Bytes, std::convert::Infallible>(first), st))
            }
            Phase::Streaming => loop {
                tokio::select! {
                    event = st.choices.next() => {
                        let (payloads, done) = match event {
                            Some(ChoiceEvent::Event(index, event)) => st.format.event(index, event),
                            Some(ChoiceEvent::EngineGone) => (st.format.engine_gone(), true),
                            None => (st.format.finish(), true),
                        };
                        if done {
                            st.phase = Phase::Done;
                        }
                        if payloads.is_empty() && !done {
                            continue;
                        }
                        return Some((Ok(frames(payloads, done)), st));
                    }
                    _ = tokio::time::sleep(st.keepalive) => {
                        return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), st));
                    }
                }
            },
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
