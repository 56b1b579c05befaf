"""GET /calls, /calls/{id}, /calls/{id}/audio/{leg}: browse stored results and listen to a leg."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, Response

from callqa.ai.tools import row_json
from callqa.api.deps import ReadKey, State
from callqa.api.routes.analyze import ERRORS
from callqa.api.schemas import CallFilters, CallItem
from callqa.audio.decode import decode_file
from callqa.audio.wav import write_wav
from callqa.errors import CallqaError
from callqa.report import CallReport
from callqa.service.jobs import audio_dir
from callqa.service.recordings import leg_audio_path
from callqa.store import CallQuery

router = APIRouter(tags=["calls"])


def _epoch(t: datetime | None) -> float | None:
    return None if t is None else (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


@router.get("/calls", response_model=list[CallItem], responses=ERRORS)
async def list_calls(state: State, key: ReadKey, filters: Annotated[CallFilters, Query()],
                     offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> list[CallItem]:  # fmt: skip
    """Stored calls, newest first (by SIP start for captured calls, else analysis time)."""
    q = CallQuery(verdict=filters.verdict, finding=filters.finding, since=_epoch(filters.since),
                  until=_epoch(filters.until), text=filters.text, agent=filters.agent, campaign=filters.campaign,
                  carrier=filters.carrier, direction=filters.direction, limit=filters.limit, offset=offset)  # fmt: skip
    rows = await asyncio.to_thread(state.store.search, q)
    return [CallItem.model_validate(row_json(r)) for r in rows]


def _report(state: State, call_id: str) -> CallReport:
    report = state.store.get(call_id) if 4 <= len(call_id) <= 64 else None
    if report is None:
        raise HTTPException(404, f"no stored call with id {call_id!r}")
    return report


@router.get("/calls/{call_id}", response_model=CallReport, responses=ERRORS)
def get_call(state: State, key: ReadKey, call_id: str) -> Response:
    """One stored report by id (or a unique id prefix of at least 4 characters)."""
    text = state.store.get_json(call_id) if 4 <= len(call_id) <= 64 else None
    if text is None:
        raise HTTPException(404, f"no stored call with id {call_id!r}")
    return Response(text, media_type="application/json")  # stored as validated JSON: served as it is


@router.get("/calls/{call_id}/audio/{leg}", response_class=FileResponse, responses=ERRORS)
async def get_audio(state: State, key: ReadKey, call_id: str, leg: str) -> FileResponse:
    """One leg as 16-bit PCM WAV; ``leg`` is its role (caller, agent, left, ...) or its index (0, 1)."""
    report = _report(state, call_id)
    index = next((i for i, lg in enumerate(report.legs) if lg.role == leg or str(i) == leg), None)
    if index is None:
        raise HTTPException(404, f"call {report.id} has no leg {leg!r} (legs: "
                                 f"{', '.join(lg.role for lg in report.legs) or 'none'})")  # fmt: skip
    path = await leg_file(state, report, index)
    return FileResponse(path, media_type="audio/wav", filename=f"{report.id}-{report.legs[index].role}.wav")


async def leg_file(state: State, report: CallReport, index: int) -> Path:
    """The kept WAV of a leg; for a call analysed from a local file, the leg is extracted once and kept (never
    for a capture site's call: its legs' sources are the site's, not files of this machine)."""
    lr = report.legs[index]
    path = leg_audio_path(audio_dir(state.settings), report.id, index, lr.role)
    if not path.is_file():
        source = Path(lr.source)
        # a capture site's report names files on the site, never here: its audio is what the site sent, or none
        if report.site is not None or not source.is_file():
            raise HTTPException(404, f"the audio of call {report.id} was not kept")
        try:  # analysed from a local file: extract the leg once and keep it
            decoded = await asyncio.to_thread(decode_file, source, state.settings.analysis.max_leg_duration_s)
        except CallqaError as exc:
            raise HTTPException(410, f"the source recording can no longer be read: {exc}") from None
        samples = decoded.samples[lr.channel] if lr.channel is not None else decoded.samples.mean(axis=0)
        await asyncio.to_thread(write_wav, path, samples, decoded.sample_rate)
    return path
