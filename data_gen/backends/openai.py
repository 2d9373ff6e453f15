"""Generation through any OpenAI-compatible `/v1/chat/completions` server (vLLM, TGI, llama.cpp, OpenAI).

Requests go out over httpx from a bounded
thread pool, so `chat()` stays a plain synchronous call while `concurrency` requests are in flight.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import threading
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, as_completed, wait
from datetime import datetime, timezone
from typing import Any

import httpx
from tqdm.auto import tqdm

from data_gen.backends.base import Conversation, GenParams, OnResult
from evals.generate import merge_system_turn
from organisms.errors import UserError

log = logging.getLogger(__name__)

# A server asking for a longer pause than this is more likely misconfigured than busy; waiting a
# minute and retrying again is still bounded by max_retries.
_MAX_RETRY_AFTER_S = 60.0
_MAX_BACKOFF_S = 60.0
# Fewer requests than this finish before a progress bar would tell anyone anything.
_PROGRESS_MIN = 5
# Server error bodies can be whole HTML pages; a one-line UserError keeps only the start.
_MAX_ERROR_CHARS = 300


class _Aborted(Exception):
    """A worker gave up because another request in the same batch failed for good."""


class OpenAIBackend:
    """A model served behind an OpenAI-compatible chat-completions endpoint.

    Args:
        base_url: The API root, e.g. "http://localhost:8000/v1"; "/chat/completions" is appended.
        model: The model name the server expects in the request body.
        api_key_env: Name of the environment variable holding the API key, read once here. When it is
            None or the variable is unset, no Authorization header is sent (local servers need none).
        concurrency: How many requests may be in flight at once.
        max_retries: Retries after the first attempt for 429, 5xx, timeouts and connection errors.
        timeout_s: Per-request timeout in seconds.
        backoff_s: First retry delay; it doubles each retry (with jitter) unless the server sends
            Retry-After.

    Raises:
        UserError: If base_url is not http(s) or a numeric setting is out of range.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 8,
        max_retries: int = 6,
        timeout_s: float = 120,
        backoff_s: float = 1.0,
        system_turn: bool = True,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UserError(f"OpenAI backend base_url must start with http:// or https://, got {base_url!r}")
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise UserError("OpenAI backend needs concurrency >= 1, max_retries >= 0, timeout_s > 0 and backoff_s >= 0")
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        # False: a served model whose chat template has no system role (Gemma, strict-alternation Mistral) gets
        # the system text at the start of the first user turn, as the local backend does by itself
        self.system_turn = system_turn
        self._url = base_url.rstrip("/") + "/chat/completions"
        # Kept private and out of __repr__: only the variable's name is ever shown.
        self._api_key = os.environ.get(api_key_env) if api_key_env else None

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
            f"concurrency={self.concurrency})"
        )

    @property
    def identity(self) -> str:
        """Backend, server and model, for cache keys (the key is deliberately not part of it)."""
        served = f"openai:{self.base_url.rstrip('/')}:{self.model}"  # .../v1 and .../v1/ are one server
        return served if self.system_turn else f"{served}:no-system-turn"  # other requests, other answers

    def chat(
        self, conversations: list[Conversation], params: GenParams, on_result: OnResult | None = None
    ) -> list[str]:
        """Answer each conversation with one chat-completions request, `concurrency` at a time.

        Args:
            conversations: Message lists, sent as `messages`.
            params: Decoding settings (max_new_tokens, temperature, top_p, seed, stop, repetition_penalty).
            on_result: Called as `on_result(i, text)` in the calling thread as each answer arrives.

        Returns:
            The answers, in input order.

        Raises:
            UserError: On a non-retryable HTTP error, a malformed answer, or retries exhausted. Requests
                already in flight are still collected (and reported to on_result) before it is raised, so
                a cache loses no answer that was paid for. The same holds for Ctrl-C (KeyboardInterrupt).
        """
        if not conversations:
            return []
        answers: list[str] = [""] * len(conversations)
        delivered: set[int] = set()
        abort = threading.Event()
        failure: Exception | None = None
        workers = min(self.concurrency, len(conversations))
        with (
            self._client() as client,
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-chat") as pool,
            tqdm(
                total=len(conversations), desc=self.model, unit="req", disable=len(conversations) < _PROGRESS_MIN
            ) as bar,
        ):
            futures: dict[Future[str], int] = {
                pool.submit(self._request, client, self._body(c, params), abort): i for i, c in enumerate(conversations)
            }
            try:
                for future in as_completed(futures):
                    try:
                        text = future.result()
                    except (_Aborted, CancelledError):
                        continue
                    except Exception as e:  # the first failure stops the batch; raised below
                        if failure is None:
                            failure = e
                            _stop(abort, futures)
                        continue
                    i = futures[future]
                    answers[i] = text
                    delivered.add(i)
                    if on_result is not None:
                        on_result(i, text)
                    bar.update(1)
            except BaseException as interrupt:
                # Ctrl-C or a failing on_result: start no more requests; the answers of those in flight were
                # paid for, so they still reach on_result (the cache) unless on_result itself is what failed.
                _stop(abort, futures)
                if on_result is not None and isinstance(interrupt, KeyboardInterrupt):
                    _deliver_in_flight(futures, delivered, on_result)
                raise
        if failure is not None:
            raise failure
        return answers

    def _client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        return httpx.Client(headers=headers, timeout=httpx.Timeout(self.timeout_s), limits=limits)

    def _body(self, conversation: Conversation, params: GenParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": conversation if self.system_turn else merge_system_turn(conversation),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        }
        # OpenAI rejects an empty stop list on some models; omitting it means the same thing.
        if params.stop:
            body["stop"] = list(params.stop)
        # Not in OpenAI's API, but vLLM and TGI honour it; sent only when it changes decoding, so the
        # cache key (which includes it) never claims a setting the server silently ignored by default.
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty
        return body

    def _request(self, client: httpx.Client, body: dict[str, Any], abort: threading.Event) -> str:
        """One conversation's answer, retrying what a busy or restarting server may fix by itself."""
        last = ""
        for attempt in range(self.max_retries + 1):
            if abort.is_set():
                raise _Aborted
            retry_after: float | None = None
            try:
                response = client.post(self._url, json=body)
            except httpx.TransportError as e:  # timeouts, refused or dropped connections
                last = f"{type(e).__name__}: {_one_line(str(e))}"
            else:
                if response.is_success:
                    return self._answer(response)
                if not _retryable(response.status_code):
                    raise UserError(self._http_error(response))
                last = f"HTTP {response.status_code}: {_server_message(response)}"
                retry_after = _retry_after_s(response.headers.get("Retry-After"))
            if attempt == self.max_retries:
                break
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            log.debug("%s: %s; retry %d/%d in %.2fs", self._url, last, attempt + 1, self.max_retries, delay)
            # wait() rather than sleep(): a failure elsewhere in the batch wakes this worker at once.
            if abort.wait(delay):
                raise _Aborted
        raise UserError(f"{self._url}: no answer after {self.max_retries + 1} attempts (last: {last})")

    def _backoff(self, attempt: int) -> float:
        # Jitter keeps `concurrency` workers that failed together from retrying in lockstep.
        return min(self.backoff_s * 2**attempt, _MAX_BACKOFF_S) * random.uniform(0.5, 1.5)

    def _answer(self, response: httpx.Response) -> str:
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            snippet = _one_line(response.text)[:_MAX_ERROR_CHARS]
            raise UserError(
                f"{self._url} answered HTTP {response.status_code} but not a chat completion: {snippet}"
            ) from None
        # Some servers send null content for an empty completion.
        return content if isinstance(content, str) else ""

    def _http_error(self, response: httpx.Response) -> str:
        message = f"{self._url} answered HTTP {response.status_code}: {_server_message(response)}"
        if response.status_code in (401, 403):
            hint = f"is ${self.api_key_env} set and valid?" if self.api_key_env else "does it need an API key?"
            message += f" ({hint})"
        return message


def _deliver_in_flight(futures: dict[Future[str], int], delivered: set[int], on_result: OnResult) -> None:
    """After an interrupt: wait for the requests already sent and hand each answer not yet delivered to
    `on_result`."""
    wait(futures)
    for future, i in futures.items():
        if i in delivered or future.cancelled() or future.exception() is not None:
            continue
        on_result(i, future.result())


def _stop(abort: threading.Event, futures: dict[Future[str], int]) -> None:
    """Stop a batch: no new requests start, and retrying workers wake up and give up."""
    abort.set()
    for future in futures:
        future.cancel()


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _server_message(response: httpx.Response) -> str:
    """The error text a server put in its body: OpenAI's {"error": {"message"}}, vLLM's {"message"}, or raw."""
    message: object = None
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        message = message or data.get("message") or data.get("detail")
    text = _one_line(str(message) if message else response.text)
    return text[:_MAX_ERROR_CHARS] or response.reason_phrase or "(empty body)"


def _retry_after_s(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), capped; None if absent or bad."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)
