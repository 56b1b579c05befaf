"""Request and response bodies of the HTTP API (the CallReport itself is the core contract in callqa.report)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from callqa.ai.tools import FINDING_CODES
from callqa.report import CallReport

Verdict = Literal["good", "degraded", "failed"]


class Assessment(BaseModel):
    text: str
    provider: str = Field(description="anthropic, openai or offline")
    model: str = ""
    offline: bool = Field(description="true when no language model produced the text")
    error: str | None = Field(None, description="why the language model was not used, when it failed")
    cited_calls: list[str] = []
    input_tokens: int = 0
    output_tokens: int = 0


class AiAnalysis(BaseModel):
    report: CallReport
    assessment: Assessment


class JobOut(BaseModel):
    id: str
    kind: Literal["analyze", "ai-analyze"]
    status: Literal["queued", "running", "done", "failed"]
    created_at: float
    updated_at: float
    attempts: int
    source: str
    error: str | None = None
    error_code: int | None = None
    report: CallReport | None = None
    assessment: Assessment | None = None


class CallFilters(BaseModel):
    verdict: Verdict | None = None
    finding: Literal[FINDING_CODES] | None = None  # type: ignore[valid-type]
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = Field(None, max_length=200, description="substring of source, SIP From or SIP To")
    agent: str | None = Field(None, max_length=100, description="the agent (ViciDial user) who took the call")
    campaign: str | None = Field(None, max_length=100, description="campaign or in-group id")
    carrier: str | None = Field(None, max_length=100, description="trunk the call went out on")
    direction: Literal["inbound", "outbound"] | None = None
    limit: int = Field(20, ge=1, le=50)


class InvestigateRequest(BaseModel):
    call_ids: list[str] = Field(default=[], max_length=50, description="calls to investigate, or use filters")
    filters: CallFilters | None = None
    question: str = Field("", max_length=2000)


class InvestigateOut(Assessment):
    calls: int


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=2000)
    conversation_id: str | None = Field(None, max_length=64, pattern=r"^[0-9a-f]+$")


class ToolCall(BaseModel):
    name: str | None
    input: object = None
    calls_returned: int = 0


class AskOut(Assessment):
    conversation_id: str
    tool_calls: list[ToolCall] = []


class CallItem(BaseModel):
    id: str
    when: datetime
    verdict: str
    duration_s: float
    source: str
    sip_from: str
    sip_to: str
    findings: list[str]
    agent: str = ""
    campaign: str = ""
    carrier: str = ""
    direction: str = ""


class Problem(BaseModel):
    detail: str
