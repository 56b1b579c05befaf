"""GET /trends (rollups per group and time bucket, JSON or CSV) and GET /incidents (systemic faults)."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from callqa import incidents
from callqa.api.deps import ReadKey, State
from callqa.api.routes.analyze import ERRORS
from callqa.errors import InputError
from callqa.rollups import DIMENSIONS
from callqa.trends import group_trends, parse_time

router = APIRouter(tags=["trends"])
TimeText = Annotated[str | None, Query(max_length=40, description="24h, 7d, epoch seconds or an ISO date/time")]


def _range(since: str | None, until: str | None) -> tuple[float, float]:
    now = time.time()
    end = parse_time(until, now) if until else now
    return (parse_time(since, now) if since else end - 86400.0), end


@router.get("/trends", responses={200: {"content": {"text/csv": {}}}, **ERRORS})
async def get_trends(
    state: State,
    key: ReadKey,
    by: Annotated[str, Query(description=f"one of {', '.join(DIMENSIONS)}")] = "carrier",
    since: TimeText = None,
    until: TimeText = None,
    bucket: Annotated[Literal["15m", "1h", "1d"] | None, Query(description="default: from the range")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="groups with the most calls")] = 50,
    series: Annotated[bool, Query(description="each group's figures per bucket too")] = True,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Any:
    """Calls, verdicts, fault rates (one-way audio, dead air, no media, low MOS), the MOS distribution and
    loss/jitter percentiles per group and time bucket over [since, until) (default: the last 24 hours)."""
    start, end = _range(since, until)
    try:
        result = await asyncio.to_thread(group_trends, state.store, by, start, end, bucket, limit)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    if format == "csv":
        out = io.StringIO()
        csv.writer(out).writerows(result.csv_rows())
        return Response(out.getvalue(), media_type="text/csv")
    return JSONResponse(result.as_json(series=series))


@router.get("/incidents", responses=ERRORS)
async def get_incidents(
    state: State,
    key: ReadKey,
    status: Annotated[Literal["open", "closed"] | None, Query(description="only open or closed ones")] = None,
    since: TimeText = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Incidents (systemic faults of a group) with their evidence and worst calls, newest first."""
    start = parse_time(since, time.time()) if since else None
    found = await asyncio.to_thread(incidents.incidents, state.store, status, start, limit)
    return [{**i.as_json(), "summary": i.summary} for i in found]
