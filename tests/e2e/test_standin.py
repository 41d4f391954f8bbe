"""The stand-in model itself, over real HTTP (no claude binary needed)."""
from __future__ import annotations

import json
import urllib.request

from standin import DONE_TEXT, SIDE_TEXT, StandIn, bash, final, write


def post(url: str, body: dict, path: str = "/v1/messages?beta=true") -> tuple[str, str]:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.headers.get("Content-Type"), resp.read().decode()


def sse_events(raw: str) -> list[tuple[str, dict]]:
    out = []
    for chunk in raw.strip().split("\n\n"):
        name, data = chunk.split("\n", 1)
        out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def streamed_tool_input(events) -> dict:
    return json.loads("".join(d["delta"]["partial_json"] for n, d in events
                              if n == "content_block_delta"
                              and d["delta"]["type"] == "input_json_delta"))


TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]


def test_stream_plays_steps_in_conversation_order_and_records_requests():
    long_command = "echo " + "x" * 5000  # forces several input_json_delta chunks
    seen = []

    def look_at_result(req):
        seen.append(req.last_tool_result())
        return final("saw " + req.last_tool_result())

    with StandIn([bash(long_command), look_at_result]) as si:
        ctype, raw = post(si.url, {"stream": True, "tools": TOOLS,
                                   "messages": [{"role": "user", "content": "go"}]})
        assert ctype == "text/event-stream"
        events = sse_events(raw)
        names = [n for n, _ in events]
        assert names[0] == "message_start" and names[-1] == "message_stop"
        assert names.count("content_block_delta") >= 3
        assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
        assert streamed_tool_input(events)["command"] == long_command
        tool_id = events[1][1]["content_block"]["id"]

        convo = [{"role": "user", "content": "go"},
                 {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id,
                                                    "name": "Bash", "input": {}}]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id,
                                               "content": "xxxx"}]},
                 {"role": "system", "content": "PostToolUse:Bash hook additional context: HI"}]
        # a retry of the first request gets the same step again, not the next one
        _, again = post(si.url, {"stream": True, "tools": TOOLS, "messages": convo[:1]})
        assert streamed_tool_input(sse_events(again))["command"] == long_command
        _, raw2 = post(si.url, {"stream": False, "tools": TOOLS, "messages": convo})
        msg = json.loads(raw2)
        assert msg["stop_reason"] == "end_turn" and msg["content"][0]["text"] == "saw xxxx"
        _, raw3 = post(si.url, {"stream": False, "tools": TOOLS, "messages": convo + [
            {"role": "assistant", "content": "saw"}, {"role": "user", "content": "more"}]})
        assert json.loads(raw3)["content"][0]["text"] == DONE_TEXT

        _, side = post(si.url, {"stream": False, "messages": convo})  # no tools: side request
        assert json.loads(side)["content"][0]["text"] == SIDE_TEXT
        _, count = post(si.url, {"messages": convo}, "/v1/messages/count_tokens")
        assert json.loads(count)["input_tokens"] > 0

    assert seen == ["xxxx"]
    assert [r.step for r in si.requests] == [0, 0, 1, 2, None, None]
    assert "xxxx\nPostToolUse:Bash hook additional context: HI" == si.seen_after(0)
    assert si.find("additional context: HI") and not si.errors and not si.unknown


def test_step_errors_are_recorded_not_swallowed_and_server_stops():
    def broken(req):
        raise RuntimeError("boom")

    si = StandIn([broken, write("/tmp/x", "y")], max_lifetime=30).start()
    url = si.url
    _, raw = post(url, {"stream": False, "tools": TOOLS, "messages": []})
    assert "boom" in raw and si.errors == ["step 0: RuntimeError('boom')"]
    si.stop()
    try:
        post(url, {"messages": []})
    except OSError:
        pass
    else:
        raise AssertionError("stand-in still answering after stop()")
