"""Read-only tools the model may call to answer questions: typed parameters, bound into fixed queries.

The model never writes SQL. Each tool validates its input (unknown fields, wrong types and out-of-range
values are reported back to the model as a tool error) and returns compact JSON with call ids to cite.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from callqa.report import CallReport
from callqa.store import CallQuery, CallRow, Store, host_of

FINDING_CODES = ("no_audio", "no_speech", "one_way_audio", "no_media", "dead_air", "clipping", "low_level", "low_mos",
                 "mixed_legs", "packet_loss", "high_jitter", "no_transcript", "required_phrase_missing",
                 "forbidden_phrase")  # fmt: skip
Verdict = Literal["good", "degraded", "failed"]
GroupBy = Literal[
    "verdict",
    "finding",
    "day",
    "hour",
    "sip_from_host",
    "sip_to_host",
    "source_host",
    "agent",
    "campaign",
    "carrier",
    "direction",
]


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Verdict | None = None
    finding: Literal[FINDING_CODES] | None = None  # type: ignore[valid-type]
    since: datetime | None = Field(None, description="ISO 8601; calls starting at or after this time")
    until: datetime | None = Field(None, description="ISO 8601; calls starting before this time")
    text: str | None = Field(None, max_length=200, description="substring of the source, SIP From or SIP To")
    agent: str | None = Field(None, max_length=100, description="call-center agent (ViciDial user) who took the call")
    campaign: str | None = Field(None, max_length=100, description="ViciDial campaign or in-group id")
    carrier: str | None = Field(None, max_length=100, description="trunk (carrier) the call went out on")
    direction: Literal["inbound", "outbound"] | None = None

    def query(self, limit: int) -> CallQuery:
        def epoch(t: datetime | None) -> float | None:
            return None if t is None else (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()

        return CallQuery(verdict=self.verdict, finding=self.finding, since=epoch(self.since),
                         until=epoch(self.until), text=self.text, agent=self.agent, campaign=self.campaign,
                         carrier=self.carrier, direction=self.direction, limit=limit)  # fmt: skip


class SearchCalls(Filters):
    limit: int = Field(20, ge=1, le=50)


class CountCalls(Filters):
    group_by: GroupBy


class GetCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=4, max_length=64, pattern=r"^[0-9a-f]+$")


def row_json(r: CallRow) -> dict[str, Any]:
    return {"id": r.id, "when": datetime.fromtimestamp(r.when, UTC).isoformat(timespec="seconds"),
            "verdict": r.verdict, "duration_s": round(r.duration_s, 1), "source": r.source,
            "sip_from": r.sip_from, "sip_to": r.sip_to, "findings": list(r.findings), "agent": r.agent,
            "campaign": r.campaign, "carrier": r.carrier, "direction": r.direction}  # fmt: skip


def _group_key(r: CallRow, group_by: str) -> list[str]:
    t = datetime.fromtimestamp(r.when, UTC)
    match group_by:
        case "verdict":
            return [r.verdict]
        case "finding":
            return sorted(set(r.findings)) or ["none"]
        case "day":
            return [t.strftime("%Y-%m-%d")]
        case "hour":
            return [t.strftime("%Y-%m-%d %H:00")]
        case "sip_from_host":
            return [host_of(r.sip_from) or "unknown"]
        case "sip_to_host":
            return [host_of(r.sip_to) or "unknown"]
        case "agent" | "campaign" | "carrier" | "direction":
            return [getattr(r, group_by) or "unknown"]
        case _:
            return [host_of(r.source.split(" + ")[0]) or "local files"]


def compact(report: CallReport) -> dict[str, Any]:
    """A report without per-segment detail: what a model needs to reason about one call."""
    data = report.model_dump(mode="json", exclude={"settings", "cache_key", "timings", "models"})
    for leg in data["legs"]:
        segs, sils = leg.pop("speech_segments"), leg.pop("silences")
        leg["speech_segments"] = len(segs)
        leg["silences"] = len(sils)
        leg["longest_silence_s"] = round(max((s["end_s"] - s["start_s"] for s in sils), default=0.0), 2)
        for model in ("dnsmos", "nisqa"):
            if leg["mos"].get(model):
                leg["mos"][model].pop("windows", None)
    data["dtmf"] = "".join(d["digit"] for d in data.get("dtmf", []))
    return data


TOOLS: list[dict[str, Any]] = [
    {"name": "search_calls",
     "description": "List stored calls matching filters, newest first (id, time, verdict, source, SIP From/To, "
                    "finding codes, and agent, campaign, carrier, direction for call-center calls). Use it to find "
                    "calls to cite.",
     "input_schema": SearchCalls.model_json_schema()},
    {"name": "count_calls",
     "description": "Count stored calls matching filters, grouped by verdict, finding code, day, hour, SIP "
                    "From host, SIP To host (the trunk or PBX a call went to), source host, or the call center's "
                    "agent, campaign, carrier or direction (ViciDial calls). Returns the "
                    "groups with counts and up to 5 example call ids each.",
     "input_schema": CountCalls.model_json_schema()},
    {"name": "get_call",
     "description": "The quality report of one call by id: legs with levels, speech, MOS (DNSMOS, NISQA), RTP "
                    "network statistics, SIP dialog and findings.",
     "input_schema": GetCall.model_json_schema()},
]  # fmt: skip

COUNT_SCAN_LIMIT = 5000


def run_tool(store: Store, name: str, args: Any) -> tuple[dict[str, Any], list[str]]:
    """Run one tool: (result JSON, call ids it returned). Bad input gives an ``error`` result, not an exception."""
    try:
        if name == "search_calls":
            q = SearchCalls.model_validate(args)
            rows = store.search(q.query(q.limit))
            return {"calls": [row_json(r) for r in rows], "count": len(rows)}, [r.id for r in rows]
        if name == "count_calls":
            c = CountCalls.model_validate(args)
            rows = store.search(c.query(COUNT_SCAN_LIMIT))
            counts: Counter[str] = Counter()
            examples: dict[str, list[str]] = {}
            for r in rows:
                for k in _group_key(r, c.group_by):
                    counts[k] += 1
                    if len(examples.setdefault(k, [])) < 5:
                        examples[k].append(r.id)
            groups = [{"key": k, "calls": n, "examples": examples[k]} for k, n in counts.most_common(50)]
            cited = [i for g in groups for i in g["examples"]]  # type: ignore[attr-defined]
            return {"group_by": c.group_by, "groups": groups, "calls_scanned": len(rows),
                    "truncated": len(rows) == COUNT_SCAN_LIMIT}, cited  # fmt: skip
        if name == "get_call":
            g = GetCall.model_validate(args)
            report = store.get(g.id)
            if report is None:
                return {"error": f"no stored call with id {g.id}"}, []
            return compact(report), [report.id]
        return {"error": f"unknown tool {name!r}"}, []
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        return {"error": f"invalid arguments for {name}: {problems}"}, []
