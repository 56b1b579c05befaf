"""POST /calls: a capture site (``callqa sniff --site NAME --central URL``) sends each finished call here."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, File, HTTPException, Response, UploadFile
from pydantic import BaseModel, Field

from callqa.api.deps import State, WriteKey
from callqa.api.routes.analyze import ERRORS
from callqa.service.ingest import MAX_REPORT_BYTES, Conflict, Invalid

router = APIRouter(tags=["sites"])


class CallReceived(BaseModel):
    id: str
    site: str
    status: Literal["stored", "already stored"] = Field(description="'already stored': a repeat, nothing changed")


@router.post("/calls", status_code=201, response_model=CallReceived,
             responses={**ERRORS, 200: {"model": CallReceived, "description": "a repeat: already stored"}})  # fmt: skip
async def receive_call(
    state: State,
    key: WriteKey,
    response: Response,
    report: Annotated[
        UploadFile, File(description="the call's CallReport (JSON) with its site; (site, id) is the idempotency key")
    ],  # fmt: skip
    audio: Annotated[list[UploadFile] | None, File(description="kept leg audio, '<index>-<role>.wav'")] = None,
) -> CallReceived:
    """Store a call a capture site analysed: 201 when stored now, 200 when it was already stored (a site sends
    again when it missed the answer), 409 when the id belongs to another site's or this service's call."""
    report_json = await report.read(MAX_REPORT_BYTES + 1)
    files = [(upload.filename or "", await upload.read()) for upload in audio or []]
    try:
        received = await asyncio.to_thread(state.site_calls.receive, report_json, files)
    except Invalid as exc:
        state.metrics.site_calls.labels("refused").inc()
        raise HTTPException(422, str(exc)) from None
    except Conflict as exc:
        state.metrics.site_calls.labels("refused").inc()
        raise HTTPException(409, str(exc)) from None
    if received.status == "stored":
        state.metrics.site_calls.labels("stored").inc()
        state.metrics.observe_report(received.report, cached=False)
    else:
        state.metrics.site_calls.labels("duplicate").inc()
        response.status_code = 200
    return CallReceived(id=received.report.id, site=received.report.site or "", status=received.status)
