"""Live events: a sniffer POSTs them to /live/events; WebSocket clients follow /ws/calls (every call) or
/ws/calls/{id} (one call). Browsers cannot set headers on a WebSocket, so the key may come as ``?token=``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field

from callqa.api.deps import State, WriteKey
from callqa.api.hub import QUEUE

router = APIRouter(tags=["live"])


class Events(BaseModel):
    events: list[dict[str, Any]] = Field(max_length=1000)


@router.post("/live/events", status_code=202)
async def post_events(state: State, key: WriteKey, body: Events) -> dict[str, int]:
    """Events from a live transcriber (``callqa sniff --transcribe --publish``), relayed to subscribers."""
    for event in body.events:
        state.hub.publish(event)
    return {"accepted": len(body.events)}


async def _follow(websocket: WebSocket, state: Any, call_id: str | None) -> None:
    token = websocket.query_params.get("token") or websocket.headers.get("authorization", "").removeprefix("Bearer ")
    key = state.verify(token) if token else None
    if key is None or key.revoked:
        await websocket.close(code=1008, reason="missing or invalid API key")
        return
    await websocket.accept()
    q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
    entry = (call_id, q)
    state.hub.subscribers.add(entry)
    try:
        while True:
            await websocket.send_json(await q.get())
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        state.hub.subscribers.discard(entry)


@router.websocket("/ws/calls")
async def follow_all(websocket: WebSocket) -> None:
    await _follow(websocket, websocket.app.state.callqa, None)


@router.websocket("/ws/calls/{call_id}")
async def follow_call(websocket: WebSocket, call_id: str) -> None:
    await _follow(websocket, websocket.app.state.callqa, call_id)
