#!/usr/bin/env python3
"""Drives `nemo serve` with the official OpenAI Python client (pinned in requirements.txt):
a real client nobody here wrote. Run by tests/server_openai.rs, one group per call:

    suite.py GROUP --nemo BIN [--model PATH]

Each group starts its own server (`--port 0`: the address is read from its stderr), checks,
stops it with SIGTERM and requires exit status 0. Exits non-zero on the first failure, with the
server's stderr. Groups:

  demo        the demo model: plain / streamed / logprobs chat, streamed == whole at
              temperature 0, the model's default temperature, completions, models, refusals
  tools       a scripted Mistral model (v3 template, Nemo's tekken): tool calls whole and as
              streamed deltas, the result sent back, tool_choice none
  load        64 concurrent streaming clients for a bounded time: no errors, KV usage back to 0
  disconnect  a client that closes a stream mid-way: cancelled, its KV blocks freed at once
  shutdown    SIGTERM drains in-flight requests and exits 0; past --shutdown-timeout they are
              cancelled with an error the client sees
  auth        --api-key: missing or wrong keys are refused, the right one works
  soak        32 clients, random lengths, cancellations, disconnects, bad requests, over a
              KV cache too small for all of them (preemption), for $NEMO_SOAK_SECONDS
              (default 90): zero failed valid requests, memory flat, every KV block returned
"""

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import typing
import urllib.error
import urllib.request

import openai
import pydantic


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


SERVERS = []  # every server started, for their logs on failure


class Server:
    def __init__(self, nemo, model, extra=()):
        SERVERS.append(self)
        # $NEMO_SERVE_DEVICE=cuda runs the same checks on the GPU backend.
        args = [nemo, "serve", "--port", "0", "--device", os.environ.get("NEMO_SERVE_DEVICE", "cpu")]
        if model:
            args += ["--model", model]
        args += list(extra)
        self.args = args
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = []
        ready = threading.Event()
        self.address = None
        self.name = None

        def read():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"serving `(.+)` on http://(\S+) ", line)
                if m:
                    self.name, self.address = m.group(1), m.group(2)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(120)
        if self.address is None:
            self.proc.kill()
            raise Failure("the server did not start:\n" + "".join(self.log))
        self.base = f"http://{self.address}"

    def client(self, api_key="unused", timeout=120.0):
        # No retries: a retried request would hide a failure.
        return openai.OpenAI(base_url=self.base + "/v1", api_key=api_key, max_retries=0, timeout=timeout)

    def metrics(self):
        with urllib.request.urlopen(self.base + "/metrics", timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def wait_metric(self, key, want, within):
        start = time.monotonic()
        while True:
            value = self.metrics()[key]
            if value == want:
                return time.monotonic() - start
            if time.monotonic() - start > within:
                raise Failure(f"{key} is {value}, not {want}, after {within} s")
            time.sleep(0.01)

    def raw(self, path, body, headers=None):
        """POST raw bytes; returns (status, parsed JSON body)."""
        req = urllib.request.Request(self.base + path, data=body, method="POST", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self, timeout=60):
        """SIGTERM; returns the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise Failure(f"the server did not exit within {timeout} s of SIGTERM")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def chat(client, model, content, **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **kw)


def stream_text(client, model, content, **kw):
    """Content, finish reason, usage and the chunks of a streamed chat answer."""
    chunks = list(chat(client, model, content, stream=True, **kw))
    check(chunks[0].choices[0].delta.role == "assistant", f"first chunk {chunks[0]}")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = [c.usage for c in chunks if c.usage is not None]
    check(len(finish) == 1, f"one finish reason, got {finish}")
    return text, finish[0], (usage[0] if usage else None), chunks


def expect_status(exc_type, call, says=None):
    try:
        call()
    except exc_type as e:
        if says is not None:
            check(says in str(e), f"expected {says!r} in {e}")
        return e
    raise Failure(f"expected {exc_type.__name__}")


# ---------------------------------------------------------------- groups


def group_demo(args):
    s = Server(args.nemo, args.model)
    try:
        c = s.client()
        models = c.models.list()
        check([m.id for m in models.data] == [s.name], f"models: {models}")
        q = "What is the capital of France?"

        # Plain, then streamed: the same text at temperature 0.
        r = chat(c, s.name, q, temperature=0, max_tokens=24)
        whole = r.choices[0].message.content
        check(r.object == "chat.completion" and r.choices[0].message.role == "assistant", f"{r}")
        check(whole and "Paris" in whole, f"the demo model knows: {whole!r}")
        check(r.choices[0].finish_reason in ("stop", "length"), f"{r}")
        check(r.usage.prompt_tokens > 10 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, f"{r.usage}")
        text, finish, usage, _ = stream_text(c, s.name, q, temperature=0, max_tokens=24, stream_options={"include_usage": True})
        check(text == whole, f"streamed {text!r} != whole {whole!r}")
        check(finish == r.choices[0].finish_reason, f"{finish} vs {r.choices[0].finish_reason}")
        check(usage is not None and usage.completion_tokens == r.usage.completion_tokens, f"usage {usage} vs {r.usage}")
        # The same prompt again: its whole KV blocks (all but the last token) came from the prefix cache.
        check(r.usage.prompt_tokens_details.cached_tokens == 0, f"{r.usage}")
        cached = usage.prompt_tokens_details.cached_tokens
        check(cached == (r.usage.prompt_tokens - 1) // 16 * 16 and cached > 0, f"cached {cached} of {r.usage.prompt_tokens}")

        # max_completion_tokens, length finish.
        r = chat(c, s.name, "Write a long poem about the sea.", temperature=0, max_completion_tokens=5)
        check(r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5, f"{r}")

        # Logprobs, whole and streamed, the same.
        r = chat(c, s.name, q, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3)
        entries = r.choices[0].logprobs.content
        check(len(entries) == r.usage.completion_tokens, f"{len(entries)} logprob entries")
        for e in entries:
            check(e.logprob <= 0 and len(e.top_logprobs) == 3, f"{e}")
            check(e.top_logprobs[0].token == e.token, f"greedy picks the top token: {e}")
        check(bytes(b for e in entries for b in e.bytes).decode() == r.choices[0].message.content, "the bytes spell the text")
        _, _, _, chunks = stream_text(c, s.name, q, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3)
        streamed = [e for ch in chunks if ch.choices and ch.choices[0].logprobs for e in ch.choices[0].logprobs.content]
        check([(e.token, round(e.logprob, 5)) for e in streamed] == [(e.token, round(e.logprob, 5)) for e in entries], "streamed logprobs")

        # The model's default temperature (0.3: the demo GGUF names none) applies when the
        # request gives none: same seed, same text as asking for 0.3.
        a = chat(c, s.name, "Say something.", seed=11, max_tokens=20).choices[0].message.content
        b = chat(c, s.name, "Say something.", seed=11, max_tokens=20, temperature=0.3).choices[0].message.content
        check(a == b, f"default temperature: {a!r} vs {b!r}")

        # Completions, whole and streamed.
        r = c.completions.create(model=s.name, prompt="The capital of France is", max_tokens=8, temperature=0, logprobs=2)
        check(r.object == "text_completion" and len(r.choices[0].logprobs.tokens) == r.usage.completion_tokens, f"{r}")
        parts = list(c.completions.create(model=s.name, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True))
        check("".join(p.choices[0].text for p in parts if p.choices) == r.choices[0].text, "streamed completion")

        # n choices, and a logit bias that forces one token (the client's own field types).
        r = chat(c, s.name, q, n=2, seed=3, max_tokens=5)
        check([ch.index for ch in r.choices] == [0, 1] and 2 <= r.usage.completion_tokens <= 10, f"n=2: {r}")
        r = chat(c, s.name, q, temperature=0, max_tokens=4, logprobs=True, logit_bias={"28": 100}, frequency_penalty=0.0)
        forced = {e.token for e in r.choices[0].logprobs.content}
        check(len(forced) == 1 and r.usage.completion_tokens == 4, f"logit_bias: {r}")

        # Structured outputs: the client's own parse() with a pydantic model (it sends a strict
        # json_schema response_format and validates what comes back), and vLLM's guided_choice.
        class City(pydantic.BaseModel):
            name: str
            country: typing.Literal["France", "Italy", "Spain"]
            has_river: bool
        r = c.chat.completions.parse(model=s.name, messages=[{"role": "user", "content": "Describe Paris as JSON."}],
                                     response_format=City, temperature=0, max_tokens=80)
        check(r.choices[0].finish_reason == "stop" and isinstance(r.choices[0].message.parsed, City), f"parse: {r}")
        r = chat(c, s.name, q, temperature=0.8, seed=5, max_tokens=10, n=3, extra_body={"guided_choice": ["Paris", "Lyon"]})
        check(all(ch.message.content in ("Paris", "Lyon") for ch in r.choices), f"guided_choice: {r}")
        expect_status(openai.BadRequestError, lambda: chat(c, s.name, q, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}), "invalid json_schema")

        # Refusals: the client raises the matching exception with our message.
        expect_status(openai.BadRequestError, lambda: chat(c, s.name, q, temperature=5), "temperature must be in [0, 2]")
        expect_status(openai.BadRequestError, lambda: chat(c, s.name, q, max_tokens=10**7), "context")
        expect_status(openai.NotFoundError, lambda: chat(c, "gpt-4o", q), "does not exist")
        tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
        expect_status(openai.BadRequestError, lambda: chat(c, s.name, q, tools=tools), "tools")
        expect_status(openai.BadRequestError, lambda: chat(c, s.name, q, n=200), "n must be in [1, 128]")
        expect_status(openai.BadRequestError, lambda: chat(c, s.name, q, presence_penalty=3), "presence_penalty")
        expect_status(openai.BadRequestError, lambda: chat(c, s.name, q, stop=[f"s{i}" for i in range(1000)]), "stop strings")
        status, body = s.raw("/v1/chat/completions", b'{"model": "x", "messages": [', {"Content-Type": "application/json"})
        check(status == 400 and "not valid JSON" in body["error"]["message"], f"{status} {body}")
        # Still serving.
        check(chat(c, s.name, q, temperature=0, max_tokens=3).choices[0].message.content, "serves after refusals")
    finally:
        code = s.stop()
    check(code == 0, f"exit status {code}")


TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}]


def group_tools(args):
    s = Server(args.nemo, args.model)
    try:
        c = s.client()
        messages = [{"role": "user", "content": "What is the weather in Paris?"}]
        r = c.chat.completions.create(model=s.name, messages=messages, tools=TOOLS, temperature=0)
        choice = r.choices[0]
        check(choice.finish_reason == "tool_calls", f"{r}")
        calls = choice.message.tool_calls
        check(len(calls) == 1 and calls[0].type == "function", f"{calls}")
        check(calls[0].function.name == "get_current_weather", f"{calls[0]}")
        check(json.loads(calls[0].function.arguments) == {"location": "Paris"}, f"{calls[0]}")
        check(re.fullmatch(r"[A-Za-z0-9]{9}", calls[0].id), f"id {calls[0].id}")
        check(choice.message.content is None, f"content {choice.message.content!r}")

        # Streamed: assembled from deltas the way OpenAI's docs show.
        assembled = {}
        finish = None
        for chunk in c.chat.completions.create(model=s.name, messages=messages, tools=TOOLS, temperature=0, stream=True):
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            for tc in delta.tool_calls or []:
                slot = assembled.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
            finish = chunk.choices[0].finish_reason or finish
        check(finish == "tool_calls", f"finish {finish}")
        check(list(assembled) == [0] and assembled[0]["name"] == "get_current_weather", f"{assembled}")
        check(json.loads(assembled[0]["arguments"]) == {"location": "Paris"}, f"{assembled}")
        check(re.fullmatch(r"[A-Za-z0-9]{9}", assembled[0]["id"] or ""), f"{assembled}")

        # The call and its result go back into the conversation.
        history = messages + [
            {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": json.dumps({"temperature": 21})},
        ]
        # (The scripted model knows no answer after a tool result: it just runs to max_tokens.)
        r = c.chat.completions.create(model=s.name, messages=history, tools=TOOLS, temperature=0, max_tokens=8)
        check(r.usage.prompt_tokens > 20 and r.choices[0].finish_reason in ("tool_calls", "stop", "length"), f"{r}")

        # tool_choice none: the tools are not shown and nothing is parsed.
        r = c.chat.completions.create(model=s.name, messages=messages, tools=TOOLS, tool_choice="none", temperature=0)
        check(r.choices[0].finish_reason == "stop" and not r.choices[0].message.tool_calls, f"{r}")
        check("get_current_weather" in r.choices[0].message.content, f"{r}")

        # A malformed history is refused with 400.
        bad = messages + [{"role": "tool", "tool_call_id": "nope", "content": "1"}]
        expect_status(openai.BadRequestError, lambda: c.chat.completions.create(model=s.name, messages=bad, tools=TOOLS))
        expect_status(openai.BadRequestError, lambda: c.chat.completions.create(model=s.name, messages=messages, tool_choice="required"), "needs `tools`")
        named = {"type": "function", "function": {"name": "nope"}}
        expect_status(openai.BadRequestError, lambda: c.chat.completions.create(model=s.name, messages=messages, tool_choice=named, tools=TOOLS), "not among the tools")
    finally:
        code = s.stop()
    check(code == 0, f"exit status {code}")


def group_load(args):
    clients, seconds = 64, float(os.environ.get("NEMO_LOAD_SECONDS", "20"))
    s = Server(args.nemo, args.model, ["--max-batch", "64"])
    errors, done, most_running = [], [0], [0]
    deadline = time.monotonic() + seconds
    stop_sampling = threading.Event()

    def sample():
        while not stop_sampling.is_set():
            most_running[0] = max(most_running[0], s.metrics()["nemo_requests_running"])
            time.sleep(0.05)

    def worker(i):
        c = s.client()
        rng = random.Random(i)
        while time.monotonic() < deadline:
            try:
                max_tokens = rng.randint(4, 32)
                text, finish, usage, _ = stream_text(
                    c, s.name, f"client {i}: " + "word " * rng.randint(1, 60),
                    max_tokens=max_tokens, temperature=0.8, seed=rng.randint(0, 2**31),
                    stream_options={"include_usage": True},
                )
                check(finish in ("stop", "length") and usage.completion_tokens <= max_tokens, f"{finish} {usage}")
                check(finish != "length" or usage.completion_tokens == max_tokens, f"{finish} {usage}")
                done[0] += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                errors.append(f"client {i}: {type(e).__name__}: {e}")
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop_sampling.set()
    sampler.join()
    try:
        check(not errors, f"{len(errors)} errors, first: {errors[:3]}")
        took = s.wait_metric("nemo_kv_blocks_used", 0, 10)
        m = s.metrics()
        check(m["nemo_requests_running"] == 0 and m["nemo_requests_waiting"] == 0, f"{m}")
        check(most_running[0] >= clients // 2, f"at most {most_running[0]} ran at once")
        print(f"load: {clients} clients, {done[0]} streamed requests in {seconds:.0f} s, "
              f"at most {most_running[0]:.0f} running at once, {m['nemo_generation_tokens_total']:.0f} tokens, "
              f"KV back to 0 {took:.2f} s after the last client")
    finally:
        code = s.stop()
    check(code == 0, f"exit status {code}")


def group_disconnect(args):
    s = Server(args.nemo, args.model)
    try:
        c = s.client()
        stream = chat(c, s.name, "Tell me everything.", max_tokens=20000, stream=True, extra_body={"ignore_eos": True})
        got = 0
        for _ in stream:
            got += 1
            if got == 5:
                break
        m = s.metrics()
        check(m["nemo_requests_running"] == 1 and m["nemo_kv_blocks_used"] > 0, f"running mid-stream: {m}")
        stream.close()  # the client goes away
        took = s.wait_metric("nemo_kv_blocks_used", 0, 5)
        m = s.metrics()
        check(m['nemo_requests_finished_total{reason="cancelled"}'] == 1, f"{m}")
        check(took < 1.0, f"blocks freed {took:.2f} s after the disconnect")
        print(f"disconnect: KV blocks freed {took * 1000:.0f} ms after the client closed the stream")
        # A timed-out whole request: the client gives up, the server cancels.
        try:
            chat(s.client(timeout=0.5), s.name, "Again.", max_tokens=20000, extra_body={"ignore_eos": True})
            raise Failure("expected a timeout")
        except openai.APITimeoutError:
            pass
        s.wait_metric("nemo_kv_blocks_used", 0, 5)
        check(s.metrics()['nemo_requests_finished_total{reason="cancelled"}'] == 2, "the timed-out request was cancelled")
    finally:
        code = s.stop()
    check(code == 0, f"exit status {code}")


def group_shutdown(args):
    # 1. In-flight requests finish after SIGTERM; new connections are refused; exit 0.
    s = Server(args.nemo, args.model)
    result = {}

    def consume():
        try:
            result["text"], result["finish"], _, _ = stream_text(
                s.client(), s.name, "Tell me a story.", max_tokens=48, temperature=0, extra_body={"ignore_eos": True})
        except Exception as e:  # noqa: BLE001
            result["error"] = repr(e)

    t = threading.Thread(target=consume)
    t.start()
    s.wait_metric("nemo_requests_running", 1, 30)
    s.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    time.sleep(0.3)
    try:
        urllib.request.urlopen(s.base + "/health", timeout=5)
        refused = False
    except (urllib.error.URLError, ConnectionError):
        refused = True
    t.join(60)
    code = s.proc.wait(60)
    took = time.monotonic() - started
    check(refused, "new connections are refused after SIGTERM")
    check("error" not in result and result.get("finish") == "length", f"the in-flight stream finished: {result}")
    check(code == 0, f"exit status {code}\n" + "".join(s.log))
    print(f"shutdown: in-flight stream finished, exit 0, {took:.2f} s after SIGTERM")

    # 2. Past the bound, requests are cancelled with an error the client sees; still exit 0.
    s = Server(args.nemo, args.model, ["--shutdown-timeout", "1"])
    errors = {}

    def long(kind):
        try:
            if kind == "stream":
                stream_text(s.client(), s.name, "Go on.", max_tokens=5000, extra_body={"ignore_eos": True})
            else:
                chat(s.client(), s.name, "Go on.", max_tokens=5000, extra_body={"ignore_eos": True})
            errors[kind] = None
        except openai.APIError as e:
            errors[kind] = str(e)

    threads = [threading.Thread(target=long, args=(k,)) for k in ("stream", "whole")]
    for t in threads:
        t.start()
    s.wait_metric("nemo_requests_running", 2, 30)
    started = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    code = s.proc.wait(30)
    took = time.monotonic() - started
    for t in threads:
        t.join(30)
    check(code == 0, f"exit status {code}")
    check(took < 1 + 5 + 2, f"exited {took:.1f} s after SIGTERM with a 1 s bound")
    check(all(errors.get(k) and "shutting down" in errors[k] for k in ("stream", "whole")), f"{errors}")
    print(f"shutdown: past the 1 s bound both requests were cancelled ({errors}); exit 0 after {took:.2f} s")


def group_auth(args):
    s = Server(args.nemo, args.model, ["--api-key", "test-key-123"])
    try:
        expect_status(openai.AuthenticationError, lambda: chat(s.client(api_key="wrong"), s.name, "hi", max_tokens=2), "invalid API key")
        status, body = s.raw("/v1/chat/completions", b"{}", {"Content-Type": "application/json"})
        check(status == 401 and body["error"]["code"] == "invalid_api_key", f"{status} {body}")
        r = chat(s.client(api_key="test-key-123"), s.name, "hi", max_tokens=2)
        check(r.usage.completion_tokens >= 1, f"{r}")
        with urllib.request.urlopen(s.base + "/health", timeout=5) as h:
            check(h.status == 200, "health needs no key")
    finally:
        code = s.stop()
    check(code == 0, f"exit status {code}")


def group_soak(args):
    seconds = float(os.environ.get("NEMO_SOAK_SECONDS", "90"))
    clients = 32
    # A KV cache of 4096 tokens: one request always fits (at most ~700 prompt + 2000 tokens),
    # 32 at once do not, so the engine queues and preempts.
    s = Server(args.nemo, args.model, ["--max-batch", "32", "--kv-tokens", "4096", "--admission", "optimistic"])
    stats = {"ok": 0, "cancelled_by_client": 0, "timed_out": 0, "refused_as_expected": 0}
    lock = threading.Lock()
    failures = []
    deadline = time.monotonic() + seconds
    words = ["alpha", "beta", "gamma", "delta", "Straße", "日本語", "🙂", "x" * 30, "\n", "naïve"]
    # Half the prompts start with one of three preambles (a shared system prompt), so the prefix
    # cache shares blocks between requests that are cancelled, preempted and disconnected.
    preambles = [" ".join(random.Random(p).choice(words) for _ in range(40)) for p in range(3)]

    def count(key):
        with lock:
            stats[key] += 1

    def worker(i):
        c = s.client()
        rng = random.Random(1000 + i)
        while time.monotonic() < deadline:
            prompt = " ".join(rng.choice(words) for _ in range(rng.randint(1, 250)))
            if rng.random() < 0.5:
                prompt = rng.choice(preambles) + "\n" + prompt
            max_tokens = rng.randint(1, 64)
            kw = {"max_tokens": max_tokens, "temperature": rng.choice([0, 0.3, 1.0]), "seed": rng.randint(0, 2**31)}
            if rng.random() < 0.2:
                kw["stop"] = [rng.choice(["a", "e", "the", "\n\n"])]
            roll = rng.random()
            try:
                if roll < 0.35:
                    _, finish, usage, _ = stream_text(c, s.name, prompt, stream_options={"include_usage": True}, **kw)
                    check(finish in ("stop", "length") and 1 <= usage.completion_tokens <= max_tokens, f"{finish} {usage}")
                    count("ok")
                elif roll < 0.6:
                    # A third of these under a grammar (docs/structured.md): what stops is valid.
                    guided = rng.choice([None, None, ("guided_choice", ["yes", "no", "naïve 日本語"]), ("guided_regex", "[a-z]{1,8}( [0-9]{1,3})?")])
                    if guided:
                        kw["extra_body"] = {guided[0]: guided[1]}
                        kw.pop("stop", None)
                    r = chat(c, s.name, prompt, logprobs=rng.random() < 0.3, **kw)
                    check(r.choices[0].finish_reason in ("stop", "length"), f"{r}")
                    check(1 <= r.usage.completion_tokens <= max_tokens, f"{r.usage}")
                    text = r.choices[0].message.content
                    if guided and r.choices[0].finish_reason == "stop":
                        ok = text in guided[1] if guided[0] == "guided_choice" else re.fullmatch(guided[1], text)
                        check(ok, f"{guided}: {text!r}")
                    count("ok")
                elif roll < 0.72:
                    r = c.completions.create(model=s.name, prompt=prompt, **kw)
                    check(r.choices[0].finish_reason in ("stop", "length"), f"{r}")
                    count("ok")
                elif roll < 0.85:
                    # Cancel mid-stream after a few chunks.
                    body = {"ignore_eos": True}
                    if rng.random() < 0.3:
                        body["guided_regex"] = "[a-z ]{1,4000}"  # cancelled under a grammar
                    stream = chat(c, s.name, prompt, stream=True, max_tokens=2000, extra_body=body)
                    keep = rng.randint(1, 8)
                    for n, _ in enumerate(stream):
                        if n >= keep:
                            break
                    stream.close()
                    count("cancelled_by_client")
                elif roll < 0.93:
                    # Give up on a whole answer: the client times out and disconnects.
                    try:
                        chat(s.client(timeout=rng.uniform(0.05, 0.5)), s.name, prompt, max_tokens=2000, extra_body={"ignore_eos": True})
                        count("ok")  # it finished in time after all
                    except openai.APITimeoutError:
                        count("timed_out")
                else:
                    # Bad requests: refused with 4xx, never counted as failures of valid ones.
                    kind = rng.randint(0, 3)
                    if kind == 0:
                        expect_status(openai.BadRequestError, lambda: chat(c, s.name, prompt, temperature=-1))
                    elif kind == 1:
                        expect_status(openai.NotFoundError, lambda: chat(c, "no-such-model", prompt))
                    elif kind == 2:
                        expect_status(openai.BadRequestError, lambda: chat(c, s.name, prompt, max_tokens=10**9))
                    else:
                        status, _ = s.raw("/v1/chat/completions", b'{"model": "\xff', {"Content-Type": "application/json"})
                        check(status == 400, f"invalid UTF-8 gave {status}")
                    count("refused_as_expected")
            except Exception as e:  # noqa: BLE001 - a failed valid request
                with lock:
                    failures.append(f"client {i}: {type(e).__name__}: {e}")

    rss = []

    def watch_memory():
        while time.monotonic() < deadline:
            rss.append((time.monotonic(), s.metrics()["process_resident_memory_bytes"]))
            time.sleep(1)

    started = time.monotonic()
    watcher = threading.Thread(target=watch_memory, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    watcher.join()
    try:
        freed = s.wait_metric("nemo_kv_blocks_used", 0, 10)
        m = s.metrics()
        check(not failures, f"{len(failures)} failed valid requests, first: {failures[:5]}")
        check(m["nemo_requests_running"] == 0 and m["nemo_requests_waiting"] == 0, f"{m}")
        # Memory flat: after the first quarter (allocator and caches warm), the resident size
        # may not grow by more than 10 % + 32 MB.
        warm = [v for t, v in rss if t - started >= seconds / 4]
        check(len(warm) >= 3, f"too few memory samples: {rss}")
        growth = warm[-1] - warm[0]
        check(growth <= 0.10 * warm[0] + 32e6, f"resident memory grew {warm[0] / 1e6:.0f} -> {warm[-1] / 1e6:.0f} MB")
        total = sum(stats.values())
        check(stats["ok"] > 0 and stats["cancelled_by_client"] > 0 and stats["refused_as_expected"] > 0, f"{stats}")
        finished = {r: m[f'nemo_requests_finished_total{{reason="{r}"}}'] for r in ("stop", "length", "cancelled", "error")}
        print(
            f"soak: {seconds:.0f} s, {clients} clients, {total} requests {stats}; "
            f"{m['nemo_generation_tokens_total']:.0f} tokens generated; finished {finished}; "
            f"preemptions {m['nemo_preemptions_total']:.0f}; "
            f"prompt tokens from the prefix cache {m['nemo_prefix_cache_hit_tokens_total']:.0f}; "
            f"RSS {rss[0][1] / 1e6:.0f} MB at start, {warm[0] / 1e6:.0f} MB warm, {warm[-1] / 1e6:.0f} MB at the end; "
            f"KV blocks all free {freed:.2f} s after the last client"
        )
        check(m['nemo_requests_finished_total{reason="error"}'] == 0, "no request ended in an engine error")
        check(m["nemo_preemptions_total"] > 0, "the soak should have filled the KV cache and preempted")
        check(m["nemo_prefix_cache_hit_tokens_total"] > 0, "the shared preambles should have come from the prefix cache")
    finally:
        code = s.stop()
    check(code == 0, f"exit status {code}")


GROUPS = {
    "demo": group_demo,
    "tools": group_tools,
    "load": group_load,
    "disconnect": group_disconnect,
    "shutdown": group_shutdown,
    "auth": group_auth,
    "soak": group_soak,
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("group", choices=sorted(GROUPS))
    p.add_argument("--nemo", required=True, help="the nemo binary")
    p.add_argument("--model", help="the model (default: the demo model)")
    args = p.parse_args()
    started = time.monotonic()
    try:
        GROUPS[args.group](args)
    except Exception as e:  # noqa: BLE001 - a Failure or anything unexpected
        for s in SERVERS:
            s.kill()
            print(f"--- stderr of {' '.join(s.args)} (last 40 lines)", file=sys.stderr)
            print("".join(s.log[-40:]), file=sys.stderr)
        print(f"FAILED {args.group}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    for s in SERVERS:
        s.kill()
    print(f"passed {args.group} in {time.monotonic() - started:.1f} s (openai {openai.__version__})")


if __name__ == "__main__":
    main()
