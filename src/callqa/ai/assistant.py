"""Summaries, investigations and questions: the provider when one is configured, the offline answer otherwise.

An analysis never fails because of the model: any LlmError (after the provider's bounded retries) gives the
offline answer with the error noted. Everything sent out is masked first unless ``llm.mask_pii`` is off.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from callqa.ai import offline, prompts
from callqa.ai.providers import LlmError, Provider, Reply
from callqa.ai.tools import TOOLS, compact, run_tool
from callqa.config import LlmSettings
from callqa.pii import mask_value
from callqa.report import CallReport
from callqa.store import CallQuery, Store

# hook(provider, model, outcome, input_tokens, output_tokens): the API counts calls, tokens and errors
UsageHook = Callable[[str, str, str, int, int], None]

CONVERSATIONS = """
CREATE TABLE IF NOT EXISTS conversations (
    id          TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL,
    messages    TEXT NOT NULL
);
"""
_CALL_ID = re.compile(r"\b[0-9a-f]{16}\b")


@dataclass
class Answer:
    text: str
    provider: str
    model: str
    offline: bool
    error: str | None = None
    cited_calls: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0


class Assistant:
    def __init__(self, llm: LlmSettings, store: Store, provider: Provider | None, hook: UsageHook | None = None):
        self.llm, self.store, self.provider = llm, store, provider
        self.hook = hook or (lambda *a: None)
        with store.connect() as db:
            db.executescript(CONVERSATIONS)

    def _mask(self, value: Any) -> Any:
        return mask_value(value) if self.llm.mask_pii else value

    def _create(self, model: str, max_tokens: int, timeout: float, system: str, messages: list[dict[str, Any]],
                tools: list[dict[str, Any]] | None = None) -> Reply:  # fmt: skip
        assert self.provider is not None
        try:
            reply = self.provider.create(model=model, max_tokens=max_tokens, system=system, messages=messages,
                                         tools=tools, timeout=timeout)  # fmt: skip
        except LlmError as exc:
            self.hook(self.provider.name, model, exc.kind, 0, 0)
            raise
        self.hook(self.provider.name, model, "ok", reply.input_tokens, reply.output_tokens)
        return reply

    def _fallback(self, text: str, error: LlmError | None, cited: list[str] | None = None) -> Answer:
        return Answer(text=text, provider="offline", model="", offline=True,
                      error=None if error is None else f"language model unavailable: {error}",
                      cited_calls=cited or [])  # fmt: skip

    def _single(self, large: bool, system: str, payload: Any, fallback: str, cited: list[str]) -> Answer:
        """One request without tools (small or large model); the offline ``fallback`` when it cannot be had."""
        if self.provider is None:
            return self._fallback(fallback, None, cited)
        model = self.llm.large_model if large else self.llm.small_model
        max_tokens = self.llm.large_max_tokens if large else self.llm.small_max_tokens
        timeout = self.llm.large_timeout_s if large else self.llm.small_timeout_s
        text = json.dumps(self._mask(payload), separators=(",", ":"))
        try:
            r = self._create(model, max_tokens, timeout, system, [{"role": "user", "content": text}])
        except LlmError as exc:
            return self._fallback(fallback, exc, cited)
        if not r.text:
            return self._fallback(fallback, LlmError("the model returned no text", "malformed"), cited)
        return Answer(r.text, self.provider.name, r.model, False, cited_calls=cited, input_tokens=r.input_tokens,
                      output_tokens=r.output_tokens)  # fmt: skip

    def assess(self, report: CallReport) -> Answer:
        """A short assessment of one call by the small model."""
        return self._single(False, prompts.ASSESS, compact(report), offline.assess(report), [report.id])

    def history(self, reports: list[CallReport], days: float = 7.0) -> dict[str, int]:
        """Calls with the same finding codes in the days before the earliest of ``reports``."""
        if not reports:
            return {}
        start = min(r.sip.started_at or r.created_at if r.sip else r.created_at for r in reports).timestamp()
        ids = {r.id for r in reports}
        out: dict[str, int] = {}
        for code in sorted({f.code for r in reports for f in r.findings}):
            rows = self.store.search(CallQuery(finding=code, since=start - days * 86400, until=start, limit=1000))
            out[code] = sum(1 for row in rows if row.id not in ids)
        return out

    def investigate(self, reports: list[CallReport], question: str = "") -> Answer:
        history = self.history(reports)
        payload = {"question": question or "What went wrong with these calls, and why?",
                   "calls": [compact(r) for r in reports], "history_same_findings_7_days": history}  # fmt: skip
        return self._single(
            True, prompts.INVESTIGATE, payload, offline.investigate(reports, history), [r.id for r in reports]
        )

    # --- questions with tools, in conversations ---------------------------------------------------------

    def load_conversation(self, conversation_id: str, key_id: str) -> list[dict[str, Any]] | None:
        with self.store.connect() as db:
            row = db.execute("SELECT messages FROM conversations WHERE id = ? AND key_id = ?",
                             (conversation_id, key_id)).fetchone()  # fmt: skip
        return json.loads(row[0]) if row else None

    def save_conversation(self, conversation_id: str, key_id: str, messages: list[dict[str, Any]]) -> None:
        now = time.time()
        with self.store.connect() as db:
            db.execute("INSERT INTO conversations (id, key_id, created_at, updated_at, messages) VALUES (?,?,?,?,?) "
                       "ON CONFLICT(id) DO UPDATE SET messages = excluded.messages, updated_at = excluded.updated_at",
                       (conversation_id, key_id, now, now, json.dumps(messages)))  # fmt: skip

    def ask(self, question: str, key_id: str, conversation_id: str | None = None) -> tuple[str, Answer]:
        """Answer ``question`` (continuing a conversation when its id is given). Returns (conversation id,
        answer). Raises KeyError for an unknown conversation."""
        messages: list[dict[str, Any]] = []
        if conversation_id:
            loaded = self.load_conversation(conversation_id, key_id)
            if loaded is None:
                raise KeyError(conversation_id)
            messages = loaded
        conversation_id = conversation_id or secrets.token_hex(8)
        messages.append({"role": "user", "content": self._mask(question)})
        answer = self._ask_model(messages) if self.provider is not None else None
        if answer is None or answer.offline:
            text, cited = offline.ask(self.store, question)
            error = answer.error if answer else None
            answer = Answer(text, "offline", "", True, error=error, cited_calls=cited)
            messages.append({"role": "assistant", "content": text})
        self.save_conversation(conversation_id, key_id, messages)
        return conversation_id, answer

    def _ask_model(self, messages: list[dict[str, Any]]) -> Answer:
        """The tool loop: the model asks for tools, we run them (read-only) and send the results back."""
        assert self.provider is not None
        system = prompts.ASK.format(now=datetime.now(UTC).isoformat(timespec="seconds"))
        returned: list[str] = []
        calls: list[dict[str, Any]] = []
        tokens = [0, 0]
        start = len(messages)
        try:
            for _ in range(self.llm.max_tool_turns):
                r = self._create(self.llm.large_model, self.llm.large_max_tokens, self.llm.large_timeout_s,
                                 system, messages, TOOLS)  # fmt: skip
                tokens[0] += r.input_tokens
                tokens[1] += r.output_tokens
                messages.append({"role": "assistant", "content": r.content})
                if r.stop_reason != "tool_use" or not r.tool_uses:
                    text = r.text
                    cited = [i for i in dict.fromkeys(_CALL_ID.findall(text)) if i in returned]
                    return Answer(text, self.provider.name, r.model, False, cited_calls=cited, tool_calls=calls,
                                  input_tokens=tokens[0], output_tokens=tokens[1])  # fmt: skip
                results = []
                for use in r.tool_uses:
                    result, ids = run_tool(self.store, str(use.get("name")), use.get("input"))
                    returned += ids
                    calls.append({"name": use.get("name"), "input": use.get("input"), "calls_returned": len(ids)})
                    results.append({"type": "tool_result", "tool_use_id": use.get("id"),
                                    "content": json.dumps(self._mask(result), separators=(",", ":"))})  # fmt: skip
                messages.append({"role": "user", "content": results})
            raise LlmError(f"no answer after {self.llm.max_tool_turns} tool calls", "tool_loop")
        except LlmError as exc:
            del messages[start:]  # keep the stored conversation well-formed: drop the unfinished turn
            return Answer("", "offline", "", True, error=f"language model unavailable: {exc}")
