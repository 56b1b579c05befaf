"""Live events: a sniffer POSTs them to /live/events; WebSocket clients follow /ws/calls (every call) or
/ws/calls/{id} (one call). Browsers cannot set headers on a WebSocket, so the key may come as ``?token=``."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field

from callqa.api.deps import State, WriteKey
from callqa.api.hub import CLOSED
from callqa.speech.redaction import redact_event

router = APIRouter(tags=["live"])


class Events(BaseModel):
    events: list[dict[str, Any]] = Field(max_length=1000)


@router.post("/live/events", status_code=202)
async def post_events(state: State, key: WriteKey, body: Events) -> dict[str, int]:
    """Events from a live transcriber (``callqa sniff --transcribe --publish``), relayed to subscribers."""
    mask = state.settings.analysis.redact_transcripts  # masked here too: a publisher may not have done it
    for event in body.events:
        state.hub.publish(redact_event(event) if mask else event)
    return {"accepted": len(body.events)}


async def _follow(websocket: WebSocket, state: Any, call_id: str | None) -> None:
    token = websocket.query_params.get("token") or websocket.headers.get("authorization", "").removeprefix("Bearer ")
    key = state.verify(token) if token else None
    if key is None or key.revoked:
        await websocket.close(code=1008, reason="missing or invalid API key")
        return
    await websocket.accept()
    closing = False
    with state.hub.subscribe(call_id) as q:
        # events go out while the client's side is watched: a client that leaves is forgotten at once, not
        # when the next event fails to reach it (which for a quiet call may be never)
        async with anyio.create_task_group() as tg:

            async def send() -> None:
                nonlocal closing
                with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                    while (event := await q.get()) is not CLOSED:
                        await websocket.send_json(event)
                    closing = True  # the hub closed: the service is shutting down
                tg.cancel_scope.cancel()

            async def watch() -> None:
                await _until_disconnect(websocket)
                tg.cancel_scope.cancel()

            tg.start_soon(send)
            tg.start_soon(watch)
    if closing:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.close(code=1001, reason="the service is shutting down")


async def _until_disconnect(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it disconnects."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass


@router.websocket("/ws/calls")
async def follow_all(websocket: WebSocket) -> None:
    await _follow(websocket, websocket.app.state.callqa, None)


@router.websocket("/ws/calls/{call_id}")
async def follow_call(websocket: WebSocket, call_id: str) -> None:
    await _follow(websocket, websocket.app.state.callqa, call_id)
