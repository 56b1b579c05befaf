"""A fake Messages API (and chat completions) server on 127.0.0.1: scripted replies, recorded requests.

Each scripted reply is (status, body, headers, delay_s); a body that is bytes is sent as it is (for malformed
replies). The real SDKs talk to it through their base URL.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Scripted = tuple[int, Any, dict[str, str], float]


def message(text: str = "", tools: list[dict[str, Any]] | None = None, model: str = "m") -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content += [{"type": "tool_use", "id": f"toolu_{i}", "name": t["name"], "input": t["input"]}
                for i, t in enumerate(tools or [])]  # fmt: skip
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": "tool_use" if tools else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 120, "output_tokens": 30}}  # fmt: skip


def error(status: int, kind: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": f"fake {kind}"}}


class FakeLlm:
    def __init__(self) -> None:
        self.script: list[Scripted] = []
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake.lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    fake.requests.append({"path": self.path, "headers": headers, "body": body})
                    reply = fake.script.pop(0) if fake.script else (500, error(500, "api_error"), {}, 0.0)
                status, payload, headers, delay = reply
                time.sleep(delay)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reply(self, status: int, payload: Any, headers: dict[str, str] | None = None, delay: float = 0.0) -> None:
        self.script.append((status, payload, headers or {}, delay))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
