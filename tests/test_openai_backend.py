"""OpenAIBackend against a real HTTP server on 127.0.0.1 that fakes `/v1/chat/completions`."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from data_gen.backends.base import Conversation, GenParams, ResponseCache, cached_chat
from data_gen.backends.openai import OpenAIBackend
from organisms.errors import UserError


@dataclass
class Seen:
    """One request as the server received it."""

    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeServer:
    """State and script of the fake server. Answers are the last user message, upper-cased."""

    url: str = ""
    delay_s: float = 0.0  # how long each answer takes (so requests overlap)
    # content of the last user message -> statuses (with optional headers) to answer before succeeding
    fail_first: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    fail_after: int | None = None  # after this many successes, answer every request with 400
    slow_first_s: dict[str, float] = field(default_factory=dict)  # content -> stall the first attempt this long
    seen: list[Seen] = field(default_factory=list)
    successes: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def contents(self) -> list[str]:
        """Last user message of every request received, in arrival order."""
        return [s.body["messages"][-1]["content"] for s in self.seen]

    def respond(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, str], dict[str, Any]]:
        content = body["messages"][-1]["content"]
        with self.lock:
            self.seen.append(Seen(body, headers))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            scripted = self.fail_first.get(content)
            failure = scripted.pop(0) if scripted else None
            stall = self.slow_first_s.pop(content, 0.0)
        try:
            time.sleep(self.delay_s + stall)
            if failure is not None:
                status, extra = failure
                return status, extra, {"error": {"message": f"scripted {status}"}}
            with self.lock:
                if self.fail_after is not None and self.successes >= self.fail_after:
                    return 400, {}, {"error": {"message": "context length exceeded"}}
                self.successes += 1
            answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content.upper()}}]}
            return 200, {}, answer
        finally:
            with self.lock:
                self.in_flight -= 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real inference server
    server: Any

    def do_POST(self) -> None:
        state: FakeServer = self.server.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        extra: dict[str, str] = {}
        if self.path != "/v1/chat/completions":
            status, payload = 404, {"error": {"message": f"no route {self.path}"}}
        else:
            status, extra, payload = state.respond(body, dict(self.headers))
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out and left
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server() -> Iterator[FakeServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state = FakeServer(url=f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key in the developer's environment must not leak into these requests."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def backend(server: FakeServer, **kwargs: Any) -> OpenAIBackend:
    kwargs = {"concurrency": 4, "backoff_s": 0.01, "timeout_s": 5, **kwargs}
    return OpenAIBackend(server.url, "fake-model", **kwargs)


def convs(*texts: str) -> list[Conversation]:
    return [[{"role": "system", "content": "be brief"}, {"role": "user", "content": t}] for t in texts]


PARAMS = GenParams(max_new_tokens=17, temperature=0.7, top_p=0.9, seed=3, stop=("\n\n", "END"))


def test_answers_in_input_order_with_expected_body(server: FakeServer) -> None:
    server.delay_s = 0.01
    texts = [f"question {i}" for i in range(20)]
    reported: dict[int, str] = {}

    answers = backend(server).chat(convs(*texts), PARAMS, on_result=reported.__setitem__)

    assert answers == [t.upper() for t in texts]
    assert reported == dict(enumerate(answers))
    assert sorted(server.contents()) == sorted(texts)
    body = server.seen[0].body
    assert body["model"] == "fake-model"
    assert body["messages"] == convs(body["messages"][-1]["content"])[0]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (17, 0.7, 0.9, 3)
    assert body["stop"] == ["\n\n", "END"]
    assert "repetition_penalty" not in body


def test_without_a_system_turn_the_instructions_open_the_first_user_turn(server: FakeServer) -> None:
    plain = backend(server)
    merged = backend(server, system_turn=False)  # a served model whose template has no system role
    assert merged.chat(convs("hi"), PARAMS) == ["BE BRIEF\n\nHI"]
    assert server.seen[0].body["messages"] == [{"role": "user", "content": "be brief\n\nhi"}]
    assert plain.identity != merged.identity and plain.identity == "openai:" + server.url.rstrip("/") + ":fake-model"


def test_empty_stop_is_not_sent(server: FakeServer) -> None:
    assert backend(server).chat(convs("hi"), GenParams()) == ["HI"]
    assert "stop" not in server.seen[0].body


def test_empty_batch_sends_nothing(server: FakeServer) -> None:
    assert backend(server).chat([], PARAMS) == []
    assert server.seen == []


@pytest.mark.parametrize(
    "status, headers", [(429, {"Retry-After": "0"}), (500, {}), (503, {"Retry-After": "0"})], ids=["429", "500", "503"]
)
def test_retryable_status_is_retried(server: FakeServer, status: int, headers: dict[str, str]) -> None:
    server.fail_first["flaky"] = [(status, headers)]

    answers = backend(server).chat(convs("steady", "flaky"), PARAMS)

    assert answers == ["STEADY", "FLAKY"]
    assert server.contents().count("flaky") == 2
    assert server.contents().count("steady") == 1


def test_timeout_is_retried(server: FakeServer) -> None:
    server.slow_first_s["slow"] = 1.0

    assert backend(server, timeout_s=0.3).chat(convs("slow"), PARAMS) == ["SLOW"]
    assert server.contents() == ["slow", "slow"]


def test_bad_request_is_not_retried(server: FakeServer) -> None:
    server.fail_first["bad"] = [(400, {})]

    with pytest.raises(UserError) as err:
        backend(server).chat(convs("bad"), PARAMS)

    message = str(err.value)
    assert "400" in message and "scripted 400" in message and server.url in message
    assert "\n" not in message
    assert server.contents() == ["bad"]


def test_gives_up_after_max_retries(server: FakeServer) -> None:
    server.fail_first["down"] = [(503, {})] * 10

    with pytest.raises(UserError, match=r"after 3 attempts .*HTTP 503"):
        backend(server, max_retries=2).chat(convs("down"), PARAMS)
    assert server.contents() == ["down"] * 3


def test_connection_refused_gives_up_with_url() -> None:
    with socket.socket() as s:  # a port nobody listens on once this closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"

    with pytest.raises(UserError, match="ConnectError") as err:
        OpenAIBackend(url, "m", max_retries=1, backoff_s=0.01).chat(convs("x"), PARAMS)
    assert url in str(err.value)


def test_api_key_sent_as_bearer_and_hidden(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SERVER_KEY", "sk-very-secret-123")
    b = backend(server, api_key_env="FAKE_SERVER_KEY")

    assert b.chat(convs("hi"), PARAMS) == ["HI"]
    assert server.seen[0].headers["Authorization"] == "Bearer sk-very-secret-123"
    assert "sk-very-secret" not in repr(b) and "sk-very-secret" not in str(b)
    assert "sk-very-secret" not in b.identity

    server.fail_first["bad"] = [(401, {})]
    with pytest.raises(UserError) as err:
        b.chat(convs("bad"), PARAMS)
    assert "401" in str(err.value) and "FAKE_SERVER_KEY" in str(err.value)
    assert "sk-very-secret" not in str(err.value)


@pytest.mark.parametrize("api_key_env", ["FAKE_SERVER_KEY", None])
def test_no_key_no_authorization_header(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch, api_key_env: str | None
) -> None:
    monkeypatch.delenv("FAKE_SERVER_KEY", raising=False)

    assert backend(server, api_key_env=api_key_env).chat(convs("hi"), PARAMS) == ["HI"]
    assert "Authorization" not in server.seen[0].headers


def test_identity_names_server_and_model(server: FakeServer) -> None:
    assert backend(server).identity == f"openai:{server.url}:fake-model"
    assert OpenAIBackend(server.url + "/", "fake-model").identity == backend(server).identity  # one server


def test_bad_base_url_is_a_user_error() -> None:
    with pytest.raises(UserError, match="http"):
        OpenAIBackend("localhost:8000/v1", "m")


def test_cache_resumes_across_processes(server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "responses.jsonl"
    first = [f"q{i}" for i in range(10)]
    assert cached_chat(backend(server), ResponseCache(path), convs(*first), PARAMS) == [t.upper() for t in first]
    assert len(server.seen) == 10

    # A new cache read from the file and a new backend, as after a restart.
    more = first + ["new a", "new b"]
    answers = cached_chat(backend(server), ResponseCache(path), convs(*more), PARAMS)

    assert answers == [t.upper() for t in more]
    assert sorted(server.contents()[10:]) == ["new a", "new b"]


def test_interrupted_build_requests_only_missing(server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "responses.jsonl"
    texts = [f"q{i}" for i in range(12)]
    server.delay_s = 0.01
    server.fail_after = 5  # then a permanent 400, as if the build were killed part-way

    with pytest.raises(UserError, match="400"):
        cached_chat(backend(server, concurrency=3), ResponseCache(path), convs(*texts), PARAMS)
    # Every answer the server gave was kept, including those still in flight when the batch failed.
    assert len(ResponseCache(path)) == server.successes == 5
    cached = {json.loads(line)["text"].lower() for line in path.read_text().splitlines()}
    before = len(server.seen)

    server.fail_after = None  # healthy again; a new cache and backend, as after a restart
    answers = cached_chat(backend(server, concurrency=3), ResponseCache(path), convs(*texts), PARAMS)

    assert answers == [t.upper() for t in texts]
    requested_again = server.contents()[before:]
    assert sorted(requested_again) == sorted(set(texts) - cached)
    assert len(requested_again) == 12 - 5


def test_failing_on_result_stops_the_batch(server: FakeServer) -> None:
    def explode(i: int, text: str) -> None:
        raise OSError("disk full")

    server.delay_s = 0.02  # so the batch is still running when the first answer fails to save
    with pytest.raises(OSError, match="disk full"):
        backend(server, concurrency=2).chat(convs(*[f"c{i}" for i in range(20)]), PARAMS, on_result=explode)
    assert len(server.seen) < 20


def test_ctrl_c_keeps_the_answers_already_in_flight(server: FakeServer) -> None:
    calls: list[int] = []
    saved: dict[int, str] = {}

    def save(i: int, text: str) -> None:
        calls.append(i)
        if len(calls) == 1:
            raise KeyboardInterrupt  # as if Ctrl-C arrived while the first answer was being saved
        saved[i] = text

    server.delay_s = 0.05
    with pytest.raises(KeyboardInterrupt):
        backend(server, concurrency=4).chat(convs(*[f"c{i}" for i in range(20)]), PARAMS, on_result=save)
    # every answer the server gave, except the one whose saving was interrupted, reached on_result
    assert 1 < server.successes < 20 and len(saved) == server.successes - 1
    assert all(text == f"C{i}" for i, text in saved.items())


def test_in_flight_never_exceeds_concurrency(server: FakeServer) -> None:
    server.delay_s = 0.05

    backend(server, concurrency=3).chat(convs(*[f"c{i}" for i in range(15)]), PARAMS)

    assert 1 < server.max_in_flight <= 3
