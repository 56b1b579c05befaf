"""POST /investigate and POST /ask: the larger model over stored reports, through read-only tools."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException

from callqa.api.deps import State, WriteKey
from callqa.api.routes.analyze import ERRORS
from callqa.api.routes.calls import _epoch
from callqa.api.schemas import AskOut, AskRequest, InvestigateOut, InvestigateRequest
from callqa.report import CallReport
from callqa.store import CallQuery

router = APIRouter(tags=["ai"])


@router.post("/investigate", response_model=InvestigateOut, responses=ERRORS)
async def investigate(state: State, key: WriteKey, body: InvestigateRequest) -> InvestigateOut:
    """Root-cause analysis of one call or a set of calls (by ids, or by filters such as a time window, a SIP
    host or a finding), with the history of similar calls, by the larger model (offline summary otherwise)."""
    reports: list[CallReport] = []
    for call_id in dict.fromkeys(body.call_ids):
        report = state.store.get(call_id) if 4 <= len(call_id) <= 64 else None
        if report is None:
            raise HTTPException(404, f"no stored call with id {call_id!r}")
        reports.append(report)
    if body.filters is not None:
        f = body.filters
        q = CallQuery(verdict=f.verdict, finding=f.finding, since=_epoch(f.since), until=_epoch(f.until),
                      text=f.text, limit=f.limit)  # fmt: skip
        for row in await asyncio.to_thread(state.store.search, q):
            found = state.store.get(row.id)
            if found is not None and all(r.id != found.id for r in reports):
                reports.append(found)
    if not reports:
        raise HTTPException(404, "no stored calls match: give call_ids or filters that match stored calls")
    answer = await asyncio.to_thread(state.assistant.investigate, reports, body.question)
    return InvestigateOut.model_validate({**answer.__dict__, "calls": len(reports)})


@router.post("/ask", response_model=AskOut, responses=ERRORS)
async def ask(state: State, key: WriteKey, body: AskRequest) -> AskOut:
    """A question in plain language about stored calls; pass ``conversation_id`` to continue a conversation.
    The model answers through read-only tools over the store and cites the calls it used."""
    try:
        conversation_id, answer = await asyncio.to_thread(
            state.assistant.ask, body.question, key.id, body.conversation_id
        )
    except KeyError:
        raise HTTPException(404, f"no conversation {body.conversation_id!r} for this API key") from None
    return AskOut.model_validate({**answer.__dict__, "conversation_id": conversation_id})
