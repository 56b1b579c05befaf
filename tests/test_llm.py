"""The AI layer with the real SDKs against a fake provider on 127.0.0.1: requests, retries, fallbacks, tools."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fake_llm import FakeLlm, error, message
from fastapi.testclient import TestClient
from pydantic import SecretStr

from callqa.ai.assistant import Assistant
from callqa.ai.providers import Anthropic, ConfigError, LlmError, OpenAICompatible, make_provider, retrying
from callqa.api.keys import KeyStore
from callqa.api.main import create_app
from callqa.config import AnalysisSettings, LlmSettings, Settings
from callqa.report import CallReport, Finding, SipInfo
from callqa.service.metrics import Metrics
from callqa.service.recordings import analyze_recording
from callqa.store import Store

REPO = Path(__file__).resolve().parents[1]
AGENT, CUSTOMER = REPO / "examples" / "call-agent.wav", REPO / "examples" / "call-customer.wav"
LLM = LlmSettings(provider="anthropic", small_model="small-m", large_model="large-m", small_timeout_s=2.0,
                  large_timeout_s=2.0, max_retries=2)  # fmt: skip


@pytest.fixture
def fake():  # type: ignore[no-untyped-def]
    server = FakeLlm()
    yield server
    server.close()


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, CallReport]:
    """A store holding the example call, plus a captured-looking call with SIP identities and one-way audio."""
    tmp = tmp_path_factory.mktemp("llm")
    settings = Settings(db=tmp / "s.sqlite3", analysis=AnalysisSettings(nisqa=False))
    store = Store(settings.db)
    report, _ = analyze_recording([AGENT, CUSTOMER], settings, store=store)
    one_way = report.model_copy(update={
        "id": "1234abcd1234abcd", "cache_key": "x" * 64, "verdict": "failed",
        "sip": SipInfo(call_id="c1", from_="<sip:+15551234567@pbx.example>", to="<sip:4420794609@trunk1.example.net>",
                       started_at=datetime(2026, 11, 20, 10, 0, tzinfo=UTC)),
        "findings": [Finding(code="one_way_audio", severity="critical", leg="callee",
                             message="callee leg carries no speech; caller reached jane.doe@example.com")],
    })  # fmt: skip
    store.put(one_way)
    return store, one_way


def assistant(fake: FakeLlm, store: Store, metrics: Metrics | None = None, **llm: object) -> Assistant:
    settings = LLM.model_copy(update=llm)
    provider = Anthropic("test-key", fake.url, settings.max_retries)
    return Assistant(settings, store, provider, metrics.observe_llm if metrics else None)


def test_assessment_request_routing_and_masking(fake: FakeLlm, stored) -> None:  # type: ignore[no-untyped-def]
    store, report = stored
    metrics = Metrics()
    fake.reply(200, message("What: one-way audio.\nSide: callee.", model="small-m"))
    answer = assistant(fake, store, metrics).assess(report)
    assert answer.text.startswith("What: one-way audio") and not answer.offline and answer.model == "small-m"
    assert (answer.input_tokens, answer.output_tokens) == (120, 30)
    [req] = fake.requests
    assert req["path"] == "/v1/messages"
    assert "test-key" in (req["headers"].get("x-api-key", "") + req["headers"].get("authorization", ""))
    body = req["body"]
    assert body["model"] == "small-m" and body["max_tokens"] == LLM.small_max_tokens
    assert "call-quality engineer" in body["system"] and "tools" not in body
    sent = body["messages"][0]["content"]
    assert "one_way_audio" in sent and "trunk1.example.net" in sent
    assert "+15551234567" not in sent and "4420794609" not in sent and "jane.doe@example.com" not in sent
    assert "[PHONE]" in sent and "[EMAIL]" in sent
    assert json.loads(sent)["legs"][0]["speech_segments"] == len(report.legs[0].speech_segments)  # compacted
    assert metrics.llm_tokens.labels("anthropic", "small-m", "input")._value.get() == 120


def test_masking_can_be_turned_off(fake: FakeLlm, stored) -> None:  # type: ignore[no-untyped-def]
    store, report = stored
    fake.reply(200, message("ok"))
    assistant(fake, store, mask_pii=False).assess(report)
    assert "+15551234567" in fake.requests[0]["body"]["messages"][0]["content"]


def test_rate_limit_and_overload_are_retried_then_fall_back(fake: FakeLlm, stored) -> None:  # type: ignore[no-untyped-def]
    store, report = stored
    metrics = Metrics()
    fake.reply(429, error(429, "rate_limit_error"), {"retry-after-ms": "20"})
    fake.reply(529, error(529, "overloaded_error"), {"retry-after-ms": "20"})
    fake.reply(200, message("fine after retries"))
    a = assistant(fake, store, metrics)
    assert a.assess(report).text == "fine after retries" and len(fake.requests) == 3
    for _ in range(3):
        fake.reply(529, error(529, "overloaded_error"), {"retry-after-ms": "10"})
    answer = a.assess(report)
    assert len(fake.requests) == 6  # 1 + max_retries attempts, then the offline summary
    assert answer.offline and "529" in (answer.error or "") and answer.text.startswith("Offline summary")
    assert "one_way_audio" in answer.text and "callee" in answer.text
    assert metrics.llm_errors.labels("anthropic", "overloaded")._value.get() == 1


def test_a_long_retry_after_is_not_waited_for(fake: FakeLlm, stored) -> None:  # type: ignore[no-untyped-def]
    store, report = stored
    fake.reply(429, error(429, "rate_limit_error"), {"retry-after": "3600"})
    answer = assistant(fake, store).assess(report)
    assert answer.offline and "not waiting" in (answer.error or "") and len(fake.requests) == 1


def test_timeouts_and_malformed_replies_fall_back(fake: FakeLlm, stored) -> None:  # type: ignore[no-untyped-def]
    store, report = stored
    fake.reply(200, message("too late"), delay=1.5)
    answer = assistant(fake, store, small_timeout_s=0.5, max_retries=0).assess(report)
    assert answer.offline and "timed out" in (answer.error or "")
    fake.reply(200, b"{not json")
    answer = assistant(fake, store, max_retries=0).assess(report)
    assert answer.offline and answer.error
    fake.reply(200, {"unexpected": True})
    answer = assistant(fake, store, max_retries=0).assess(report)
    assert answer.offline and answer.error
    fake.reply(400, error(400, "invalid_request_error"))
    answer = assistant(fake, store).assess(report)
    assert answer.offline and "400" in (answer.error or "") and len(fake.requests) == 4  # 400 is not retried


def test_ask_runs_read_only_tools_and_cites_calls(fake: FakeLlm, stored) -> None:  # type: ignore[no-untyped-def]
    store, report = stored
    fake.reply(200, message(tools=[{"name": "count_calls", "input": {
        "finding": "one_way_audio", "since": "2026-11-20T00:00:00Z", "until": "2026-11-21T00:00:00Z",
        "group_by": "sip_to_host"}}]))  # fmt: skip
    fake.reply(200, message(f"trunk1.example.net had one-way audio in 1 call [{report.id}].", model="large-m"))
    a = assistant(fake, store)
    conversation, answer = a.ask("Which trunks had one-way audio yesterday?", key_id="k1")
    assert answer.cited_calls == [report.id] and not answer.offline and answer.tool_calls[0]["name"] == "count_calls"
    first, second = (r["body"] for r in fake.requests)
    assert first["model"] == second["model"] == "large-m"
    assert {t["name"] for t in first["tools"]} == {"search_calls", "count_calls", "get_call"}
    assert first["tools"][1]["input_schema"]["properties"]["group_by"]["enum"][0] == "verdict"
    assert "Yesterday" in first["system"] or "yesterday" in first["system"]
    assert second["messages"][1]["content"][0]["type"] == "tool_use"
    result = second["messages"][2]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_0"
    groups = json.loads(result["content"])["groups"]
    assert groups == [{"key": "trunk1.example.net", "calls": 1, "examples": [report.id]}]
    # the conversation continues with its history; another key cannot read it
    fake.reply(200, message("No other trunk."))
    _, follow = a.ask("Any others?", key_id="k1", conversation_id=conversation)
    assert follow.text == "No other trunk." and len(fake.requests[-1]["body"]["messages"]) == 5
    with pytest.raises(KeyError):
        a.ask("hi", key_id="k2", conversation_id=conversation)


def test_bad_tool_input_goes_back_to_the_model(fake: FakeLlm, stored) -> None:  # type: ignore[no-untyped-def]
    store, _ = stored
    fake.reply(200, message(tools=[{"name": "search_calls", "input": {"sql": "DROP TABLE reports"}}]))
    fake.reply(200, message("I cannot run that."))
    _, answer = assistant(fake, store).ask("drop everything", key_id="k")
    result = json.loads(fake.requests[1]["body"]["messages"][2]["content"][0]["content"])
    assert "invalid arguments" in result["error"] and "sql" in result["error"]
    assert store.get("1234abcd1234abcd") is not None


def test_ask_falls_back_offline_with_a_clean_conversation(fake: FakeLlm, stored) -> None:  # type: ignore[no-untyped-def]
    store, report = stored
    for _ in range(3):
        fake.reply(529, error(529, "overloaded_error"), {"retry-after-ms": "10"})
    a = assistant(fake, store)
    conversation, answer = a.ask("which calls had one-way audio?", key_id="k")
    assert answer.offline and "529" in (answer.error or "") and report.id in answer.cited_calls
    history = a.load_conversation(conversation, "k")
    assert [m["role"] for m in history or []] == ["user", "assistant"]


def test_investigate_uses_the_large_model_with_history(fake: FakeLlm, stored) -> None:  # type: ignore[no-untyped-def]
    store, report = stored
    fake.reply(200, message("Summary: NAT.", model="large-m"))
    answer = assistant(fake, store).investigate([report], "why?")
    body = fake.requests[0]["body"]
    assert body["model"] == "large-m" and "root-cause" in body["system"]
    payload = json.loads(body["messages"][0]["content"])
    assert payload["question"] == "why?" and payload["calls"][0]["id"] == report.id
    assert payload["history_same_findings_7_days"] == {"one_way_audio": 0}
    assert answer.text == "Summary: NAT." and answer.cited_calls == [report.id]


def test_openai_compatible_provider_round_trip(fake: FakeLlm, stored) -> None:  # type: ignore[no-untyped-def]
    store, report = stored
    fake.reply(200, {"model": "local", "choices": [{"finish_reason": "tool_calls", "message": {"role": "assistant",
                 "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                 "name": "get_call", "arguments": json.dumps({"id": report.id})}}]}}],
                 "usage": {"prompt_tokens": 50, "completion_tokens": 5}})  # fmt: skip
    fake.reply(429, {"error": "slow down"}, {"retry-after": "0.01"})
    fake.reply(200, {"model": "local", "choices": [{"finish_reason": "stop", "message": {
                 "role": "assistant", "content": f"Call [{report.id}] has one-way audio."}}]})  # fmt: skip
    settings = LLM.model_copy(update={"provider": "openai", "base_url": fake.url + "/v1"})
    provider = make_provider(settings)
    assert isinstance(provider, OpenAICompatible)
    _, answer = Assistant(settings, store, provider).ask("what is wrong with the failed call?", key_id="k")
    assert answer.cited_calls == [report.id] and answer.provider == "openai"
    first, _, third = (r["body"] for r in fake.requests)
    assert fake.requests[0]["path"] == "/v1/chat/completions"
    assert first["messages"][0]["role"] == "system" and first["tools"][0]["type"] == "function"
    assert third["messages"][2]["tool_calls"][0]["function"]["name"] == "get_call"
    assert third["messages"][3]["role"] == "tool" and third["messages"][3]["tool_call_id"] == "c1"
    assert json.loads(third["messages"][3]["content"])["id"] == report.id


def test_retry_backoff_is_bounded() -> None:
    waits: list[float] = []
    calls = iter([LlmError("x", "server_error"), LlmError("x", "connection"), LlmError("x", "timeout")])

    def call() -> str:
        raise next(calls)

    with pytest.raises(LlmError):
        retrying(call, 2, sleep=waits.append)
    assert len(waits) == 2 and 0.3 <= waits[0] <= 0.5 and 0.7 <= waits[1] <= 1.0


def test_key_file_must_not_be_readable_by_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    key = tmp_path / "key"
    key.write_text("sk-test\n")
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        make_provider(LlmSettings(api_key_file=key))
    env = {**os.environ, "CALLQA_LLM__API_KEY_FILE": str(key), "CALLQA_DB": str(tmp_path / "s.sqlite3")}
    env.pop("ANTHROPIC_API_KEY", None)
    run = subprocess.run([str(Path(os.sys.executable).parent / "callqa"), "serve", "--port", "1"], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2 and "chmod 600" in run.stderr
    os.chmod(key, 0o600)
    provider = make_provider(LlmSettings(api_key_file=key))
    assert isinstance(provider, Anthropic)
    assert make_provider(LlmSettings()) is None  # no key anywhere: offline
    with pytest.raises(ConfigError):
        make_provider(LlmSettings(provider="anthropic"))


def test_ai_analyze_through_the_api_with_the_fake_provider(fake: FakeLlm, tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "s.sqlite3", analysis=AnalysisSettings(nisqa=False),
                        llm=LLM.model_copy(update={"base_url": fake.url, "api_key": SecretStr("k")}))  # fmt: skip
    token = KeyStore(Store(settings.db)).create("write")
    auth = {"Authorization": f"Bearer {token}"}
    fake.reply(200, message("What: dead air of 13 s.\nSide: both.", model="small-m"))
    with TestClient(create_app(settings)) as client:
        files = [("files", (p.name, p.read_bytes(), "audio/wav")) for p in (AGENT, CUSTOMER)]
        r = client.post("/ai-analyze?wait=120", headers=auth, files=files)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["assessment"]["text"].startswith("What: dead air") and body["assessment"]["provider"] == "anthropic"
        assert body["report"]["findings"][0]["code"] == "dead_air"
        fake.reply(200, message("Calls: none."))
        ask = client.post("/ask", headers=auth, json={"question": "anything failed today?"})
        assert ask.status_code == 200 and ask.json()["text"] == "Calls: none."
        assert client.post("/ask", headers=auth, json={"question": "x", "conversation_id": "ab"}).status_code == 404
        metrics = client.get("/metrics", headers=auth).text
    assert 'callqa_llm_calls_total{model="small-m",outcome="ok",provider="anthropic"} 1.0' in metrics
    assert 'callqa_llm_tokens_total{direction="input",model="small-m",provider="anthropic"} 120.0' in metrics
