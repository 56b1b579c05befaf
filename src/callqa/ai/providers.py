"""Providers behind one call: ``create(model, max_tokens, system, messages, tools, timeout) -> Reply``.

Messages and replies use the Anthropic Messages format (content blocks: text, tool_use, tool_result); the
OpenAI-compatible provider converts to and from chat completions, so a site can point callqa at a local model
server. Both retry 429, 529, 5xx, timeouts and connection errors a bounded number of times with exponential
backoff (or the server's Retry-After when it asks for at most ``MAX_RETRY_WAIT_S``; a longer wait fails at once)
and then raise :class:`LlmError`; callers fall back to the offline answer. The retry loop is ours, not the
SDK's, so a provider can never hold a request for longer than the timeouts and this cap allow.
"""

from __future__ import annotations

import json
import os
import random
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from callqa.config import LlmSettings
from callqa.errors import CallqaError

MAX_RETRY_WAIT_S = 5.0
T = TypeVar("T")
RETRYABLE = {"rate_limited", "overloaded", "timeout", "connection", "server_error"}


class LlmError(CallqaError):
    """The provider did not give a usable answer (after retries)."""

    def __init__(self, message: str, kind: str = "error", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind  # rate_limited, overloaded, timeout, connection, server_error, status, malformed
        self.retry_after = retry_after


def status_kind(code: int) -> str:
    transient = "server_error" if code >= 500 or code in (408, 409) else "status"
    return {429: "rate_limited", 529: "overloaded"}.get(code, transient)


def retry_after_s(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (numbers only), else None."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value is None:
            continue
        try:
            return float(value) * scale
        except (TypeError, ValueError):
            continue  # an HTTP date: use our own backoff
    return None


def retrying(call: Callable[[], T], max_retries: int, sleep: Callable[[float], None] = time.sleep) -> T:
    """``call`` with bounded retries on transient errors; exponential backoff with jitter between attempts."""
    for attempt in range(max_retries + 1):
        try:
            return call()
        except LlmError as exc:
            if exc.kind not in RETRYABLE or attempt == max_retries:
                raise
            wait = exc.retry_after
            if wait is None:
                wait = min(0.5 * 2**attempt, MAX_RETRY_WAIT_S) * (0.75 + 0.25 * random.random())
            if wait > MAX_RETRY_WAIT_S:
                raise LlmError(f"{exc} (the provider asked to wait {wait:g} s; not waiting)", exc.kind) from exc
            sleep(wait)
    raise AssertionError("unreachable")


class ConfigError(CallqaError):
    """The LLM configuration is unsafe or incomplete (the service refuses to start)."""


@dataclass
class Reply:
    content: list[dict[str, Any]]
    stop_reason: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def text(self) -> str:
        return "\n".join(b.get("text", "") for b in self.content if b.get("type") == "text").strip()

    @property
    def tool_uses(self) -> list[dict[str, Any]]:
        return [b for b in self.content if b.get("type") == "tool_use"]


class Provider(Protocol):
    name: str

    def create(self, *, model: str, max_tokens: int, system: str, messages: list[dict[str, Any]],
               tools: list[dict[str, Any]] | None, timeout: float) -> Reply: ...  # fmt: skip


def read_key_file(path: Path) -> str:
    """The key in ``path``; refused when other users may read or write the file."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read the LLM key file {path}: {exc}") from exc
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ConfigError(f"the LLM key file {path} is readable by other users: run chmod 600 {path}")
    key = path.read_text().strip()
    if not key:
        raise ConfigError(f"the LLM key file {path} is empty")
    return key


def resolve_key(llm: LlmSettings) -> str | None:
    if llm.api_key is not None:
        return llm.api_key.get_secret_value()
    env = "OPENAI_API_KEY" if llm.provider == "openai" else "ANTHROPIC_API_KEY"
    if os.environ.get(env):
        return os.environ[env]
    if llm.api_key_file is not None:
        return read_key_file(llm.api_key_file)
    return None


def make_provider(llm: LlmSettings) -> Provider | None:
    """The configured provider, or None for the offline summary. Raises ConfigError on unsafe settings."""
    if llm.provider == "offline":
        return None
    key = resolve_key(llm)
    if llm.provider == "openai":
        if not llm.base_url:
            raise ConfigError("the openai provider needs CALLQA_LLM__BASE_URL (the server's /v1 address)")
        return OpenAICompatible(llm.base_url, key, llm.max_retries)
    if key is None:
        if llm.provider == "anthropic":
            raise ConfigError("provider anthropic needs ANTHROPIC_API_KEY, CALLQA_LLM__API_KEY or an api_key_file")
        return None
    return Anthropic(key, llm.base_url, llm.max_retries)


class Anthropic:
    name = "anthropic"

    def __init__(self, api_key: str, base_url: str | None, max_retries: int) -> None:
        import anthropic

        self._sdk = anthropic
        self.client = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=0)
        self.max_retries = max_retries

    def create(self, *, model: str, max_tokens: int, system: str, messages: list[dict[str, Any]],
               tools: list[dict[str, Any]] | None, timeout: float) -> Reply:  # fmt: skip
        sdk = self._sdk
        kwargs: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "system": system,
                                  "messages": messages, "timeout": timeout}  # fmt: skip
        if tools:
            kwargs["tools"] = tools

        def once() -> Any:
            try:
                return self.client.messages.create(**kwargs)
            except sdk.APITimeoutError as exc:
                raise LlmError(f"{model} timed out after {timeout:g} s", "timeout") from exc
            except sdk.APIConnectionError as exc:
                raise LlmError(f"cannot reach the Anthropic API: {exc}", "connection") from exc
            except sdk.APIStatusError as exc:
                raise LlmError(f"Anthropic API answered HTTP {exc.status_code}: {exc.message}",
                               status_kind(exc.status_code), retry_after_s(exc.response.headers)) from exc  # fmt: skip
            except (sdk.AnthropicError, ValueError, TypeError, KeyError) as exc:
                raise LlmError(f"malformed reply from the Anthropic API: {exc}", "malformed") from exc

        resp = retrying(once, self.max_retries)
        try:
            content = [b.model_dump(mode="json", exclude_none=True) for b in resp.content]
            usage = resp.usage
            return Reply(content, str(resp.stop_reason or ""), str(resp.model or model),
                         int(usage.input_tokens or 0), int(usage.output_tokens or 0))  # fmt: skip
        except (AttributeError, TypeError, ValueError) as exc:
            raise LlmError(f"malformed reply from the Anthropic API: {exc}", "malformed") from exc


class OpenAICompatible:
    """Chat completions (``POST {base_url}/chat/completions``) with tool calls, converted to content blocks."""

    name = "openai"

    def __init__(self, base_url: str, api_key: str | None, max_retries: int) -> None:
        import httpx

        self._httpx = httpx
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, trust_env=False)
        self.max_retries = max_retries

    def create(self, *, model: str, max_tokens: int, system: str, messages: list[dict[str, Any]],
               tools: list[dict[str, Any]] | None, timeout: float) -> Reply:  # fmt: skip
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens,
                                "messages": [{"role": "system", "content": system}, *to_openai(messages)]}  # fmt: skip
        if tools:
            body["tools"] = [
                {"type": "function",
                 "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]}}
                for t in tools
            ]  # fmt: skip
        httpx = self._httpx

        def once() -> Reply:
            try:
                resp = self.client.post("/chat/completions", json=body, timeout=timeout)
            except httpx.TimeoutException as exc:
                raise LlmError(f"{model} timed out after {timeout:g} s", "timeout") from exc
            except httpx.HTTPError as exc:
                raise LlmError(f"cannot reach the model server: {exc}", "connection") from exc
            if resp.status_code != 200:
                raise LlmError(f"model server answered HTTP {resp.status_code}", status_kind(resp.status_code),
                               retry_after_s(resp.headers))  # fmt: skip
            return from_openai(resp, model)

        return retrying(once, self.max_retries)


def to_openai(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            out.append({"role": m["role"], "content": content})
            continue
        if m["role"] == "assistant":
            text = "\n".join(b["text"] for b in content if b.get("type") == "text")
            calls = [{"id": b["id"], "type": "function",
                      "function": {"name": b["name"], "arguments": json.dumps(b.get("input", {}))}}
                     for b in content if b.get("type") == "tool_use"]  # fmt: skip
            msg: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
            continue
        for b in content:
            if b.get("type") == "tool_result":
                out.append({"role": "tool", "tool_call_id": b["tool_use_id"], "content": str(b.get("content", ""))})
            elif b.get("type") == "text":
                out.append({"role": "user", "content": b["text"]})
    return out


def from_openai(resp: Any, model: str) -> Reply:
    try:
        data = resp.json()
        choice = data["choices"][0]
        msg = choice["message"]
        content: list[dict[str, Any]] = []
        if msg.get("content"):
            content.append({"type": "text", "text": str(msg["content"])})
        for call in msg.get("tool_calls") or []:
            args = call["function"].get("arguments") or "{}"
            content.append({"type": "tool_use", "id": str(call["id"]), "name": str(call["function"]["name"]),
                            "input": json.loads(args) if isinstance(args, str) else args})  # fmt: skip
        stop = "tool_use" if choice.get("finish_reason") == "tool_calls" or msg.get("tool_calls") else "end_turn"
        usage = data.get("usage") or {}
        return Reply(content, stop, str(data.get("model") or model),
                     int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))  # fmt: skip
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise LlmError(f"malformed reply from the model server: {exc}", "malformed") from exc
