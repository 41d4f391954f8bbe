"""A loopback stand-in for the Anthropic Messages API that plays a scripted model.

Standard library only. The real ``claude`` binary is pointed at it with
``ANTHROPIC_BASE_URL=http://127.0.0.1:<port>``; it then runs real tools (Bash, Write,
Read, Skill ...) and fires the plugin's real hooks, while every request it sends is
recorded so a test can assert what the model would have seen.

A scenario is a list of steps. The n-th step answers the first "main loop" request
(one that carries ``tools``) whose conversation holds n assistant turns, so a retried
request gets the same answer instead of skipping a step. A step is

* ``tool_use(name, input)``  -- the model calls a tool (``bash``/``write``/``edit``/``read``/
  ``skill`` are shorthands);
* ``final(text)``           -- the model ends its turn with text;
* a callable ``f(request) -> step`` that sees the request being answered (whose last
  user message holds the previous tool's result) and returns one of the above.

Requests without ``tools`` are side requests (session titles and the like): they get
plain text and do not advance the scenario. After the last step every main-loop
request ends the turn with ``"scenario finished"``.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import urlsplit

MODEL_DEFAULT = "claude-sonnet-4-5"
DONE_TEXT = "scenario finished"
SIDE_TEXT = "Scripted side answer"


# ----------------------------------------------------------------------------- steps
@dataclass
class Step:
    """One scripted model turn: a tool call (``tool`` set) or final text."""

    text: str = ""
    tool: str | None = None
    input: dict = field(default_factory=dict)


def tool_use(name: str, tool_input: dict, text: str = "") -> Step:
    return Step(text=text, tool=name, input=dict(tool_input))


def bash(command: str, description: str = "scripted command", timeout_ms: int | None = None) -> Step:
    args = {"command": command, "description": description}
    if timeout_ms:  # the Bash tool's own limit (default 2 minutes, at most 10)
        args["timeout"] = timeout_ms
    return tool_use("Bash", args)


def write(file_path: str, content: str) -> Step:
    return tool_use("Write", {"file_path": str(file_path), "content": content})


def edit(file_path: str, old_string: str, new_string: str) -> Step:
    """Claude Code's Edit tool; it refuses a file not Read in the session first."""
    return tool_use("Edit", {"file_path": str(file_path), "old_string": old_string,
                             "new_string": new_string})


def read(file_path: str) -> Step:
    return tool_use("Read", {"file_path": str(file_path)})


def skill(name: str) -> Step:
    return tool_use("Skill", {"skill": name})


def final(text: str = "All done.") -> Step:
    return Step(text=text)


StepLike = Step | Callable[["Recorded"], Step]


# -------------------------------------------------------------------------- recording
@dataclass
class Recorded:
    """One HTTP request the binary sent."""

    method: str
    path: str
    query: str
    headers: dict
    body: Any  # parsed JSON, or the raw text when it is not JSON
    step: int | None = None  # scenario step answered (main-loop requests only)

    @property
    def is_main(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("tools"))

    @property
    def text(self) -> str:
        """The whole body as one string (for substring searches)."""
        if isinstance(self.body, (dict, list)):
            return json.dumps(self.body, ensure_ascii=False)
        return str(self.body)

    def messages(self) -> list:
        return self.body.get("messages", []) if isinstance(self.body, dict) else []

    def tool_names(self) -> list[str]:
        return [t.get("name", "") for t in self.body.get("tools", [])] if self.is_main else []

    def text_after_turn(self, n: int) -> str:
        """All text in the messages that follow the model's ``n``-th turn (0-based): the
        tool result of step ``n`` plus every system reminder and hook context Claude Code
        added after it. Empty when the conversation has no such turn."""
        seen = -1
        out: list[str] = []
        for msg in self.messages():
            if seen >= n:
                out.extend(_texts(msg.get("content")))
            if msg.get("role") == "assistant":
                seen += 1
        return "\n".join(out) if seen >= n else ""

    def tool_results(self) -> list[str]:
        """Text of every tool_result block in the conversation, oldest first."""
        out = []
        for msg in self.messages():
            content = msg.get("content")
            if not isinstance(content, list):
                continue
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    out.append("\n".join(_texts(block.get("content"))))
        return out

    def last_tool_result(self) -> str:
        results = self.tool_results()
        return results[-1] if results else ""


def _texts(content) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if isinstance(content, dict):
        content = [content]
    out = []
    for block in content:
        if isinstance(block, str):
            out.append(block)
        elif isinstance(block, dict):
            if "text" in block:
                out.append(str(block["text"]))
            if "content" in block:
                out.extend(_texts(block["content"]))
    return out


# ----------------------------------------------------------------------------- server
class StandIn:
    """Scripted Messages API on 127.0.0.1. Use as a context manager or start()/stop().

    ``max_lifetime`` bounds the server: it shuts itself down after that many seconds
    even if nobody calls stop().
    """

    def __init__(self, steps: list[StepLike] | None = None, *, model: str = MODEL_DEFAULT,
                 max_lifetime: float = 900.0):
        self.steps: list[StepLike] = list(steps or [])
        self.model = model
        self.max_lifetime = max_lifetime
        self.requests: list[Recorded] = []
        self.unknown: list[str] = []  # "METHOD path" of requests we had no route for
        self.errors: list[str] = []   # exceptions raised by step callables
        self._lock = threading.Lock()
        self._ids = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # -- lifecycle
    @property
    def port(self) -> int:
        assert self._server is not None, "stand-in not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "StandIn":
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="standin", daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.max_lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> "StandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- queries for tests
    def main_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.is_main]

    def request_for_step(self, n: int) -> Recorded | None:
        """The (last) main-loop request that step ``n`` answered."""
        hits = [r for r in self.main_requests() if r.step == n]
        return hits[-1] if hits else None

    def after_step(self, n: int) -> Recorded | None:
        """The request that carries step ``n``'s tool result: the one answered by step n+1."""
        return self.request_for_step(n + 1)

    def seen_after(self, n: int) -> str:
        """What the model saw right after step ``n`` (its tool result, hook context,
        reminders): the new messages of the request answered by step ``n + 1``."""
        rec = self.after_step(n)
        return rec.text_after_turn(n) if rec is not None else ""

    def find(self, needle: str) -> list[Recorded]:
        return [r for r in self.requests if needle in r.text]

    def steps_done(self) -> int:
        done = [r.step for r in self.main_requests() if r.step is not None]
        return max(done) + 1 if done else 0

    # -- answering
    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}_standin{self._ids:04d}"

    def answer(self, rec: Recorded) -> Step:
        if not rec.is_main:
            return Step(text=SIDE_TEXT)
        n = sum(1 for m in rec.messages() if m.get("role") == "assistant")
        rec.step = n
        if n >= len(self.steps):
            return Step(text=DONE_TEXT)
        step = self.steps[n]
        if callable(step) and not isinstance(step, Step):
            try:
                step = step(rec)
            except Exception as exc:  # surfaced by the tests, not swallowed
                self.errors.append(f"step {n}: {exc!r}")
                return Step(text=f"stand-in step {n} raised {exc!r}")
        return step

    def message(self, step: Step, model: str) -> dict:
        content = []
        if step.text:
            content.append({"type": "text", "text": step.text})
        if step.tool:
            content.append({"type": "tool_use", "id": self._next_id("toolu"),
                            "name": step.tool, "input": step.input})
        return {"id": self._next_id("msg"), "type": "message", "role": "assistant",
                "model": model or self.model, "content": content,
                "stop_reason": "tool_use" if step.tool else "end_turn",
                "stop_sequence": None, "usage": _usage(10)}

    def sse(self, msg: dict) -> bytes:
        events = []

        def ev(name: str, data: dict) -> None:
            events.append(f"event: {name}\ndata: {json.dumps(data)}\n\n")

        start = dict(msg, content=[], stop_reason=None, usage=_usage(1))
        ev("message_start", {"type": "message_start", "message": start})
        for i, block in enumerate(msg["content"]):
            if block["type"] == "text":
                ev("content_block_start", {"type": "content_block_start", "index": i,
                                           "content_block": {"type": "text", "text": ""}})
                ev("content_block_delta", {"type": "content_block_delta", "index": i,
                                           "delta": {"type": "text_delta",
                                                     "text": block["text"]}})
            else:
                head = dict(block, input={})
                ev("content_block_start", {"type": "content_block_start", "index": i,
                                           "content_block": head})
                raw = json.dumps(block["input"])
                for k in range(0, len(raw), 2000):  # several deltas, as the real API does
                    ev("content_block_delta", {"type": "content_block_delta", "index": i,
                                               "delta": {"type": "input_json_delta",
                                                         "partial_json": raw[k:k + 2000]}})
            ev("content_block_stop", {"type": "content_block_stop", "index": i})
        ev("message_delta", {"type": "message_delta",
                             "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                             "usage": {"output_tokens": 10}})
        ev("message_stop", {"type": "message_stop"})
        return "".join(events).encode()


def _usage(output_tokens: int) -> dict:
    return {"input_tokens": 100, "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


class _Handler(BaseHTTPRequestHandler):
    standin: StandIn  # set on the subclass
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _record(self, method: str) -> Recorded:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        rec = Recorded(method, parts.path, parts.query, dict(self.headers), body)
        with self.standin._lock:
            self.standin.requests.append(rec)
        return rec

    def _send(self, code: int, payload: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("request-id", "req_standin")
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, obj: Any, code: int = 200) -> None:
        self._send(code, json.dumps(obj).encode())

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        rec = self._record("POST")
        si = self.standin
        path = rec.path.rstrip("/")
        if path == "/v1/messages/count_tokens":
            self._json({"input_tokens": max(1, len(rec.text) // 4)})
            return
        if path != "/v1/messages":
            si.unknown.append(f"POST {rec.path}")
            self._json({})
            return
        body = rec.body if isinstance(rec.body, dict) else {}
        step = si.answer(rec)
        msg = si.message(step, body.get("model", ""))
        if body.get("stream"):
            self._send(200, si.sse(msg), "text/event-stream")
        else:
            self._json(msg)

    def do_GET(self) -> None:  # noqa: N802
        rec = self._record("GET")
        path = rec.path.rstrip("/")
        if path == "/v1/models":
            m = self.standin.model
            self._json({"data": [{"type": "model", "id": m, "display_name": m,
                                  "created_at": "2025-01-01T00:00:00Z"}],
                        "has_more": False, "first_id": m, "last_id": m})
            return
        self.standin.unknown.append(f"GET {rec.path}")
        self._json({})

    def do_HEAD(self) -> None:  # noqa: N802
        self._record("HEAD")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

