"""The web pages under /ui/: sign-in, the call list, a call's detail, trends, and the page's own assets.

Pages are rendered on the server from the package's templates; a little script adds the upload progress,
seeking from the transcript and the waveform, and the playhead. A browser signs in once with an API key and
then holds a session cookie (HttpOnly, SameSite=Lax); every form that changes something carries the
session's CSRF token. The JSON API's GET endpoints accept the same cookie, so the pages' audio players and
"JSON" links work; its POST endpoints still need the key itself.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from callqa.ai.tools import FINDING_CODES
from callqa.api.deps import State
from callqa.api.routes.analyze import _start
from callqa.api.routes.calls import _report, leg_file
from callqa.api.schemas import Assessment
from callqa.audio.envelope import wav_envelope
from callqa.callindex import SORTS, CallIndex, ListQuery, context_of
from callqa.report import CallReport
from callqa.trends import GROUPS, trends
from callqa.web import charts, views
from callqa.web.session import COOKIE, LOGIN_COOKIE, TTL_S, Session

WEB = Path(__file__).resolve().parents[2] / "web"
STATIC = WEB / "static"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
PAGE_SIZES = (25, 50, 100)
ENVELOPE_POINTS = 600
templates = Jinja2Templates(directory=str(WEB / "templates"))
templates.env.globals.update(when=views.when, clock=charts.clock, verdict_words=views.VERDICT_WORDS)

router = APIRouter(prefix="/ui", include_in_schema=False)


class SignIn(Exception):
    """Raised by a page that needs a session: the browser is sent to the sign-in page."""


def _session(request: Request, state: State) -> Session:
    session = state.sessions.get(request.cookies.get(COOKIE))
    if session is None:
        raise SignIn
    return session


def sign_in_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?{urlencode({'next': target})}", status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a path of these pages: never another site (//host) or scheme."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


def _render(request: Request, name: str, session: Session | None, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"session": session, **context})


def _same_origin(request: Request) -> bool:
    """A state-changing request must come from these pages: Origin (or Referer) names this host when sent."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # not sent (some privacy settings): the CSRF token alone decides

    def hostname(authority: str) -> str:  # without the port: a proxy may pass Host without it
        return authority.rsplit(":", 1)[0] if not authority.endswith("]") else authority

    sent = origin.split("://", 1)[-1].split("/", 1)[0]
    return hostname(sent).lower() == hostname(request.headers.get("host", "")).lower()


def _check_post(request: Request, session: Session, token: str | None) -> None:
    if not _same_origin(request) or not session.check_csrf(token or request.headers.get("x-csrf-token")):
        raise HTTPException(403, "invalid or missing CSRF token: reload the page and try again")


# --- sign-in ---------------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, state: State, next: str | None = None, error: str = "") -> HTMLResponse:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = _render(request, "login.html", None, next=_safe_next(next), csrf=token, error=error)
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/ui/")  # fmt: skip
    return response


@router.post("/login")
def login(request: Request, state: State, key: Annotated[str, Form(max_length=300)] = "",
          csrf: Annotated[str, Form(max_length=100)] = "", next: Annotated[str, Form(max_length=2000)] = "/ui/",
          ) -> Response:  # fmt: skip
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, csrf) or not _same_origin(request):
        retry = {"next": _safe_next(next), "error": "The form expired: please try again."}
        return RedirectResponse("/ui/login?" + urlencode(retry), 303)
    api_key = state.verify(key.strip())
    if api_key is None or api_key.revoked:
        time.sleep(0.2)  # a little friction for guessing (keys are 256-bit random: guessing cannot succeed)
        return _render(request, "login.html", None, next=_safe_next(next), csrf=expected,
                       error="This API key is not valid or was revoked.")  # fmt: skip
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(COOKIE, state.sessions.create(api_key.id), max_age=int(TTL_S), httponly=True,
                        samesite="lax", secure=request.url.scheme == "https", path="/")  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/ui/")
    return response


@router.post("/logout")
def logout(request: Request, state: State, csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    session = _session(request, state)
    _check_post(request, session, csrf)
    state.sessions.end(request.cookies.get(COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# --- the call list -----------------------------------------------------------------------------------------


def _day(value: str | None, end: bool = False) -> float | None:
    """A date input (YYYY-MM-DD, UTC) as epoch seconds; ``end`` gives the end of that day."""
    if not value:
        return None
    try:
        d = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return (d + timedelta(days=1 if end else 0)).timestamp()


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def list_query(params: dict[str, str]) -> tuple[ListQuery, int, int]:
    """The list's filters, order and page from the query string; values that do not parse are ignored."""
    size = int(params["per"]) if params.get("per", "").isdigit() and int(params["per"]) in PAGE_SIZES else 50
    page = max(1, min(int(params["page"]), 100_000)) if params.get("page", "").isdigit() else 1
    sort = params.get("sort", "time")
    q = ListQuery(
        verdict=params.get("verdict") if params.get("verdict") in ("good", "degraded", "failed") else None,
        finding=params.get("finding") if params.get("finding") in FINDING_CODES else None,
        since=_day(params.get("since")), until=_day(params.get("until"), end=True),
        text=(params.get("text") or "").strip()[:200] or None,
        agent=params.get("agent") or None, campaign=params.get("campaign") or None,
        carrier=params.get("carrier") or None, direction=params.get("direction") or None,
        mos_min=_number(params.get("mos_min")), mos_max=_number(params.get("mos_max")),
        sort=sort if sort in SORTS else "time",  # type: ignore[arg-type]
        descending=params.get("dir", "desc") != "asc", limit=size, offset=(page - 1) * size,
    )  # fmt: skip
    return q, page, size


@router.get("/", response_class=HTMLResponse)
async def call_list(request: Request, state: State) -> HTMLResponse:
    session = _session(request, state)
    params = dict(request.query_params)
    q, page, size = list_query(params)
    result = await asyncio.to_thread(CallIndex(state.store).page, q)
    kept = {k: v for k, v in params.items() if v and k not in ("page", "sort", "dir")}

    def link(**change: Any) -> str:
        return "/ui/?" + urlencode({**kept, "sort": q.sort, "dir": "desc" if q.descending else "asc", **change})

    def sort_link(name: str) -> str:
        flip = "asc" if q.sort == name and q.descending else "desc"
        return "/ui/?" + urlencode({**kept, "sort": name, "dir": flip})

    pages = max(1, -(-result.total // size))
    return _render(request, "calls.html", session, page=result, params=params, findings=FINDING_CODES,
                   number=page, pages=pages, link=link, sort_link=sort_link, sizes=PAGE_SIZES)  # fmt: skip


@router.post("/upload")
async def upload(request: Request, state: State, files: Annotated[list[UploadFile], File()],
                 csrf: Annotated[str, Form(max_length=100)] = "",
                 roles: Annotated[str | None, Form(max_length=50)] = None,
                 transcribe: Annotated[bool, Form()] = False) -> JSONResponse:  # fmt: skip
    """Start an analysis of uploaded files for a write key: the report's id at once (cache hit) or a job."""
    session = _session(request, state)
    _check_post(request, session, csrf)
    if not session.can_write:
        raise HTTPException(403, "uploading needs a write key")
    result = await _start(state, session.key_id, "analyze", files, None, None, None, roles or None, 0.0, transcribe)
    if isinstance(result, CallReport):
        return JSONResponse({"status": "done", "report_id": result.id, "url": f"/ui/calls/{result.id}"})
    job = json.loads(bytes(result.body))
    return JSONResponse({"status": job["status"], "job_id": job["id"]}, status_code=202)


@router.get("/jobs/{job_id}")
async def job_status(request: Request, state: State, job_id: str, wait: float = 0.0) -> JSONResponse:
    """A job's progress for the upload form: queued, running, done (with the call's page) or failed."""
    _session(request, state)
    job = await state.runner.wait(job_id, min(max(wait, 0.0), 20.0)) if wait > 0 else state.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    out: dict[str, Any] = {"status": job.status, "job_id": job.id, "elapsed_s": round(time.time() - job.created_at, 1)}
    if job.status == "done" and job.report_id:
        out.update(report_id=job.report_id, url=f"/ui/calls/{job.report_id}")
    if job.status == "failed":
        out["error"] = job.error or "analysis failed"
    return JSONResponse(out)


# --- one call ------------------------------------------------------------------------------------------------


async def _envelopes(state: State, report: CallReport) -> tuple[dict[int, tuple[list[float], float]], dict[int, str]]:
    """The peak envelope of each leg whose audio is available, and why the others' is not."""
    envelopes, missing = {}, {}
    for i in range(len(report.legs)):
        try:
            path = await leg_file(state, report, i)
            env, duration = await asyncio.to_thread(wav_envelope, path, ENVELOPE_POINTS)
            envelopes[i] = (env.tolist(), duration)
        except HTTPException as exc:
            missing[i] = str(exc.detail)
        except (OSError, ValueError, EOFError) as exc:
            missing[i] = f"the kept audio cannot be read: {exc}"
    return envelopes, missing


@router.get("/calls/{call_id}", response_class=HTMLResponse)
async def call_page(request: Request, state: State, call_id: str) -> HTMLResponse:
    session = _session(request, state)
    report = _report(state, call_id)
    envelopes, missing = await _envelopes(state, report)
    raw = json.loads(state.store.get_json(report.id) or "{}")
    loss_chart, jitter_chart = views.network_charts(report)
    roles = {leg.role: i for i, leg in enumerate(report.legs)}
    return _render(
        request, "call.html", session, report=report, problems=views.problems(report), context=context_of(raw),
        legs=views.leg_views(report, envelopes, state.settings.analysis.low_mos), missing=missing, roles=roles,
        ladder=views.sip_ladder(report), loss_chart=loss_chart, jitter_chart=jitter_chart,
    )  # fmt: skip


@router.post("/calls/{call_id}/assess")
async def assess(request: Request, state: State, call_id: str,
                 csrf: Annotated[str, Form(max_length=100)] = "") -> JSONResponse:  # fmt: skip
    """The AI assessment of a stored call (the small model, or the offline summary): for write keys."""
    session = _session(request, state)
    _check_post(request, session, csrf)
    if not session.can_write:
        raise HTTPException(403, "asking for an AI assessment needs a write key")
    report = _report(state, call_id)
    answer = await asyncio.to_thread(state.assistant.assess, report)
    return JSONResponse(Assessment.model_validate(answer.__dict__).model_dump(mode="json"))


# --- trends -------------------------------------------------------------------------------------------------

METRICS = {"median_mos": "median MOS", "low_mos": "low MOS, % of calls", "one_way": "one-way audio, % of calls",
           "dead_air": "dead air, % of calls", "calls": "calls"}  # fmt: skip


@router.get("/trends", response_class=HTMLResponse)
async def trends_page(request: Request, state: State) -> HTMLResponse:
    session = _session(request, state)
    params = dict(request.query_params)
    by = params.get("by", "") if params.get("by") in GROUPS else "agent"
    metric = params.get("metric", "") if params.get("metric") in METRICS else "median_mos"
    today_end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp() + 86400.0
    until = _day(params.get("until"), end=True) or today_end
    since = _day(params.get("since")) or until - 7 * 86400.0
    result = await asyncio.to_thread(trends, state.store, by, since, until)  # type: ignore[arg-type]
    series = []
    for k, g in enumerate(result.groups[:6]):
        pts = []
        for b in g.series:
            f = b.figures
            value = {"median_mos": f.median_mos, "low_mos": 100 * f.low_mos_share, "one_way": 100 * f.one_way_share,
                     "dead_air": 100 * f.dead_air_share, "calls": float(f.calls)}[metric]  # fmt: skip
            if f.calls and value is not None:
                pts.append((b.start + result.bucket_s / 2, value))
        series.append(charts.Series(g.key, points=pts, css=f"s{k % 6}"))
    ys = [y for s in series for _, y in s.points]
    y0, y1 = (1.0, 5.0) if metric == "median_mos" else (0.0, max(ys + [1.0]) * 1.1 if metric == "calls" else 100.0)
    chart = charts.line_chart(series, since, until, y0, y1, f"{METRICS[metric]} by {by}", height=220.0, epoch=True)
    day = datetime.fromtimestamp
    return _render(request, "trends.html", session, trends=result, by=by, metric=metric, metrics=METRICS,
                   groups=GROUPS, chart=chart, series=series,
                   since=day(since, UTC).strftime("%Y-%m-%d"),
                   until=day(until - 1, UTC).strftime("%Y-%m-%d"),
                   urlencode=urlencode)  # fmt: skip


# --- assets -------------------------------------------------------------------------------------------------


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    """The pages' stylesheet and script, from the package (no CDN)."""
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
        raise HTTPException(404, "no such asset")
    return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers={"Cache-Control": "max-age=3600"})


def install(app: FastAPI) -> None:
    """The pages' router, and the redirect to the sign-in page for a page opened without a session."""
    app.include_router(router)

    @app.exception_handler(SignIn)
    async def to_sign_in(request: Request, exc: SignIn) -> Response:
        if request.method == "GET":
            return sign_in_redirect(request)
        return JSONResponse({"detail": "signed out: sign in again"}, status_code=401)

    @app.get("/ui", include_in_schema=False)
    def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)
