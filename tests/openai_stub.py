"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, shared by the test files.

``StubServer`` answers each ``POST /v1/chat/completions`` with the next scripted response
(``add``); when the script is empty it asks its ``answer`` function, which by default fails the
request with HTTP 500 so a test that under-scripts sees the error. Besides JSON bodies, a
response can be a transport fault: :data:`DROP` closes the connection without answering and
:class:`RawBody` sends bytes as they are (e.g. JSON cut off mid-object).

``search_answer`` plays a well-behaved model for a whole search: it picks an edit the Designer's
constrained schema allows and writes a short reflection for the Reflector.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def completion(
    content: str | None,
    *,
    finish: str = "stop",
    refusal: str | None = None,
    cached_tokens: int | None = None,
) -> dict:
    """Return a chat-completions body with one choice (``cached_tokens``: as llama.cpp reports)."""
    usage: dict[str, Any] = {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050}
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": finish,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
            }
        ],
        "usage": usage,
    }


def error_body(message: str, kind: str = "error") -> dict:
    """Return an OpenAI-style error body."""
    return {"error": {"message": message, "type": kind, "code": None}}


class _Drop:
    """Close the connection without sending a response."""

    def __repr__(self) -> str:
        return "DROP"


DROP = _Drop()


@dataclass(frozen=True)
class RawBody:
    """Send ``data`` as the body, unchanged (``Content-Length`` matches it)."""

    data: bytes


#: ``answer(request_body, n)`` -> ``(status, payload[, delay_s[, headers]])``; ``n`` counts chat
#: requests from 0.
Answer = Callable[[dict, int], tuple]


def _no_script(body: dict, n: int) -> tuple[int, Any]:
    return 500, error_body(f"the stub has no scripted response for chat request {n}")


class StubServer:
    """A scripted OpenAI chat-completions endpoint on 127.0.0.1 (one response per request)."""

    def __init__(self, answer: Answer = _no_script) -> None:
        self.responses: deque = deque()
        self.requests: list[dict] = []
        self.answer = answer
        self.chat_requests = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: object, headers: dict | None = None) -> None:
                if body is DROP:
                    self.close_connection = True
                    return
                data = body.data if isinstance(body, RawBody) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _record(self, body: dict | None) -> None:
                stub.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )

            def do_GET(self) -> None:  # /v1/models, for check_model
                self._record(None)
                with stub._lock:
                    scripted = stub.responses.popleft() if stub.responses else None
                status, body, _, _ = scripted or (200, None, 0, None)
                self._reply(
                    status, body or {"object": "list", "data": [{"id": "m", "object": "model"}]}
                )

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._record(body)
                with stub._lock:
                    n = stub.chat_requests
                    stub.chat_requests += 1
                    scripted = stub.responses.popleft() if stub.responses else None
                if scripted is None:
                    status, payload, *rest = stub.answer(body, n)
                    delay = rest[0] if rest else 0.0
                    headers = rest[1] if len(rest) > 1 else None
                else:
                    status, payload, delay, headers = scripted
                time.sleep(delay)
                payload = payload(self) if callable(payload) else payload
                try:
                    self._reply(status, payload, headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def add(
        self, status: int, body: object, *, delay: float = 0.0, headers: dict | None = None
    ) -> None:
        """Queue one response: ``body`` is JSON-able, ``DROP``, a ``RawBody`` or f(handler)."""
        self.responses.append((status, body, delay, headers))

    def chat_bodies(self) -> list[dict]:
        """Return the bodies of the chat requests received so far, in order."""
        return [r["body"] for r in self.requests if r["body"] is not None]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _pick(schema: dict, n: int) -> dict:
    """Return the n-th (cycling) object the Designer's edit schema admits, without rationale."""
    options = schema.get("anyOf") or [schema]
    fields = options[n % len(options)]["properties"]
    edit = {}
    for name, spec in fields.items():
        if name == "rationale":
            continue
        if "const" in spec:
            edit[name] = spec["const"]
        elif "enum" in spec:
            edit[name] = spec["enum"][(n // len(options)) % len(spec["enum"])]
    return edit


def search_answer(body: dict, n: int) -> tuple[int, Any]:
    """Answer a Designer request with an allowed edit and a Reflector request with a reflection."""
    response_format = (body.get("response_format") or {}).get("json_schema") or {}
    if response_format.get("name") == "Reflection":
        reply = {
            "what_changed": f"edit {n}",
            "why": "the proxy counts parameters",
            "suggestion": f"SUGGESTION-{n}: try a convolution on another edge",
        }
    else:
        reply = {**_pick(response_format.get("schema") or {}, n), "rationale": f"stub edit {n}"}
    return 200, completion(json.dumps(reply))
