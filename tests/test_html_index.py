"""index.html of a results folder: the renderer's safety rules, and a real headless browser.

The browser test drives Debian's Chromium over the DevTools protocol (a tiny stdlib websocket
client below): the page loads, every <img> decodes (naturalWidth > 0), nothing is logged as
an error, no request leaves file://, and a screenshot is written (to ``$TAO_AOI_SCREENSHOT_DIR``
when set, for a person to look at). Chromium missing is a failure, never a skip.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tao_aoi import html_index
from tao_aoi.cli import run_cli
from tao_aoi.data_services.cli import main as ds_main
from conftest import LIGHTINGS, run_script, write_inference_csv, write_train_yaml

BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", "--mute-audio"]


# ----------------------------------------------------------------------------- fixtures

def _images(media: Path, rows) -> None:
    from PIL import Image, ImageDraw

    for n, r in enumerate(rows):
        folder = media / r["input_path"]
        folder.mkdir(parents=True, exist_ok=True)
        for k, light in enumerate(LIGHTINGS):
            im = Image.new("RGB", (64, 48), (40 + 9 * n % 200, 90 + 40 * k, 120))
            ImageDraw.Draw(im).rectangle((10 + k * 5, 10, 40, 30), outline=(250, 250, 250))
            im.save(folder / f"{r['object_name']}_{light}.jpg", quality=80)


def _rows(iteration: int):
    """25 samples; a few PASS rows score high (false alarms) and which ones differs between
    the two iterations, so the comparison has fixed, regressed and still-wrong samples."""
    labels = ["PASS"] * 14 + ["SHORT"] * 6 + ["MISSING"] * 5
    high = {0: {0, 3, 6}, 1: {3, 6, 9}}[iteration]  # 0 fixed, 9 regressed, 3 and 6 still wrong
    out = []
    for i, lab in enumerate(labels):
        score = (0.1 + 0.02 * i + (0.7 if i in high else 0.0) if lab == "PASS"
                 else 0.45 + 0.02 * i + 0.05 * iteration)
        out.append({"input_path": f"board{i % 3}/cam", "object_name": f"C{i:02d}", "label": lab,
                    "siamese_score": round(min(0.99, score), 4)})
    return out


def _gap_analysis(root: Path, name: str, rows, media: Path) -> Path:
    exp = root / name
    csv_path = write_inference_csv(exp / "inference" / "inference.csv", rows)
    train = write_train_yaml(exp / "train.yaml")
    results = exp / "rca_results" / "2025-03-01_120000"
    spec = exp / "spec.yaml"
    spec.write_text(yaml.safe_dump({"inference_results_dir": str(csv_path.parent),
                                    "train_config": str(train), "kpi_media_path": str(media),
                                    "results_dir": str(results), "top_k_per_label": 4}))
    assert run_cli(ds_main, "data_services.py", ["gap_analysis", "vcn_aoi", "-e", str(spec)]) == 0
    return results


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A real RCA folder (gap analysis, spot check, draft, report, iteration comparison) and a
    routing folder nested in it, made by the project's own tools."""
    root = tmp_path_factory.mktemp("html")
    media = root / "media"
    before_rows, after_rows = _rows(0), _rows(1)
    _images(media, after_rows)
    before = _gap_analysis(root, "exp_v1", before_rows, media)
    rca = _gap_analysis(root, "exp_v2", after_rows, media)
    train = root / "exp_v2" / "train.yaml"
    for script, args in (("spot_check.py", [rca, "--train-config", train]),
                         ("draft_report.py", [rca, "--inference-dir", root / "exp_v2" / "inference"]),
                         ("compare_iterations.py", [before, rca])):
        res = run_script(script, *args)
        assert res.returncode == 0, (script, res.stderr)
    draft = (rca / "RCA_Report.draft.md").read_text()
    report = html_index._COMMENT.sub("Written by the test in place of the agent.", draft)
    report += "\n" + (rca / "iteration_compare.md").read_text()
    (rca / "RCA_Report.md").write_text(report)
    route = rca / "routing_results" / "2025-03-01_121000"
    res = run_script("route_samples.py", "--gaps", rca / "kpi_gaps.parquet", "--out", route)
    assert res.returncode == 0, res.stderr
    (route / "Routing_Report.md").write_text("# Routing Report\n\n## 1. Verdict\n\nAll routed.\n\n"
                                             "See [the summary](routing_summary.txt).\n")
    for folder in (route, rca):
        res = run_script("build_index.py", folder, "--only")
        assert res.returncode == 0, res.stderr
    return {"rca": rca, "route": route, "before": before}


# ----------------------------------------------------------------------------- the page content

def test_rca_page_holds_report_numbers_figures_and_every_artifact(results):
    rca = results["rca"]
    page = (rca / "index.html").read_text()
    m = json.loads((rca / "metrics.json").read_text())
    assert "<script" not in page.lower()
    assert "Gap analysis (RCA) results" in page
    assert f"{m['recall']:.4f}" in page and f"TP = {m['confusion_matrix']['tp']}" in page
    for img in ("score_distribution.png", "rca_images/spot_check_sheet.png", "iteration_compare.png"):
        assert f'src="{img}"' in page, img
    assert "Change Since Last Iteration" in page
    cmp = json.loads((rca / "iteration_compare.json").read_text())
    assert [cmp["counts"][k] for k in ("fixed", "regressed", "still_misclassified")] == [1, 1, 2]
    for p in rca.rglob("*"):
        rel = p.relative_to(rca).as_posix()
        if p.is_file() and p.name != "index.html" and not rel.startswith("routing_results/"):
            assert f'href="{html_index.url(rel)}"' in page, rel
    # the nested routing folder is linked to its own page, not listed file by file
    assert 'href="routing_results/2025-03-01_121000/index.html"' in page
    assert "routing_results/2025-03-01_121000/mining_gaps.parquet" not in page
    # no absolute or remote src/href
    for attr in ("src", "href"):
        for v in __import__("re").findall(rf'{attr}="([^"]*)"', page):
            assert not v.startswith(("/", "file:", "http:", "https:", "//")), v


def test_routing_page_and_parent_refresh(results, tmp_path):
    route, rca = results["route"], results["rca"]
    page = (route / "index.html").read_text()
    assert "Routing results" in page and "routing_summary.txt" in page
    assert '<a href="routing_summary.txt">the summary</a>' in page
    before = (rca / "index.html").stat().st_mtime_ns
    time.sleep(0.01)
    written = html_index.refresh(route)
    assert [p.resolve() for p in written] == [(route / "index.html").resolve(),
                                              (rca / "index.html").resolve()]
    assert (rca / "index.html").stat().st_mtime_ns > before


def test_page_is_deterministic(results):
    rca = results["rca"]
    assert html_index.build_html(rca) == html_index.build_html(rca)


def test_not_a_results_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    res = run_script("build_index.py", tmp_path)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert "is not an RCA, routing or mining results folder" in res.stderr
    assert not (tmp_path / "index.html").exists()
    res = run_script("build_index.py", tmp_path / "missing")
    assert res.returncode == 2 and "is not a folder" in res.stderr


def test_markdown_is_escaped_and_links_stay_inside(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "plot.png").write_bytes(_png())
    (tmp_path / "fake.png").write_bytes(b"not an image")
    secret = tmp_path.parent / f"{tmp_path.name}_outside.png"
    secret.write_bytes(_png())
    (tmp_path / "escape.png").symlink_to(secret)
    md = "\n".join([
        "# Title <script>alert(1)</script>",
        "",
        "Text with <b>raw html</b>, **bold**, *it*, `co<de>` and snake_case_name.",
        "",
        "![ok](plot.png) ![fake](fake.png) ![up](../x.png) ![link](escape.png) "
        "![web](http://example.com/a.png) ![abs](/etc/hostname)",
        "",
        "[js](javascript:alert(1)) [web](https://example.com) [local](metrics.json) "
        "[gone](nope.txt)",
        "",
        "| a | b \\| c | `x|y` |", "|---|:-:|--:|", "| 1 | <i>2</i> | 3 |",
        "",
        "- one", "  - nested", "- two", "", "3. three", "4. four",
        "",
        "```", "<script>x</script>", "```",
        "",
        "<!-- AGENT: verdict | say <what> -->",
        "<!-- plain comment -->",
    ])
    out = html_index.render_markdown(md, tmp_path)
    assert "<script" not in out and "&lt;script&gt;" in out
    assert "&lt;b&gt;raw html&lt;/b&gt;" in out
    assert "<strong>bold</strong>" in out and "<em>it</em>" in out
    assert "<code>co&lt;de&gt;</code>" in out and "snake_case_name" in out
    assert out.count("<img ") == 1 and '<img src="plot.png" alt="ok">' in out
    assert "fake.png (not in this results folder)" in out
    assert "a web address: not fetched" in out
    assert "javascript" not in out.split("[js]")[0] or 'href="javascript' not in out
    assert 'href="javascript' not in out
    assert '<a href="https://example.com" rel="noopener noreferrer">web</a>' in out
    assert '<a href="metrics.json">local</a>' in out
    assert "nope.txt: not in this results folder" in out
    assert "<th>b | c</th>" in out.replace(' style="text-align:center"', "")
    assert "<code>x|y</code>" in out and "&lt;i&gt;2&lt;/i&gt;" in out
    assert "<ul><li>one<ul><li>nested</li></ul></li><li>two</li></ul>" in out
    assert '<ol start="3"><li>three</li><li>four</li></ol>' in out
    assert "<pre><code>&lt;script&gt;x&lt;/script&gt;</code></pre>" in out
    assert 'class="placeholder">to be written by the agent: verdict | say &lt;what&gt;' in out
    assert "plain comment" not in out


def test_symlinks_out_of_the_folder_are_never_followed(tmp_path):
    rca = tmp_path / "rca"
    rca.mkdir()
    (rca / "metrics.json").write_text(json.dumps({"threshold": 0.5, "recall": 1.0}))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("# TOP SECRET\n")
    (outside / "big.bin").write_bytes(b"x" * 10)
    (rca / "RCA_Report.md").symlink_to(outside / "secret.md")
    (rca / "data").symlink_to(outside)
    (rca / "inside_link.txt").symlink_to(rca / "metrics.json")
    page = html_index.build_html(rca)
    assert "TOP SECRET" not in page and "big.bin" not in page
    assert "Links that point outside this folder (not followed)" in page
    assert "<code>RCA_Report.md</code>" in page and "<code>data</code>" in page
    assert 'href="inside_link.txt"' in page
    assert "Report (" not in page  # the symlinked report is not rendered


def test_index_html_that_is_a_link_is_replaced_not_written_through(tmp_path):
    (tmp_path / "rca").mkdir()
    (tmp_path / "rca" / "metrics.json").write_text("{}")
    victim = tmp_path / "victim.html"
    victim.write_text("keep me")
    (tmp_path / "rca" / "index.html").symlink_to(victim)
    html_index.build(tmp_path / "rca")
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "rca" / "index.html").is_symlink()


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- the browser

def chromium() -> str:
    exe = os.environ.get("TAO_AOI_CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser")
    if not exe:
        pytest.fail("Chromium is not installed (the browser test needs it): "
                    "apt-get update && apt-get install -y chromium")
    return exe


class DevTools:
    """The smallest websocket client the DevTools protocol needs (RFC 6455, text frames)."""

    def __init__(self, ws_url: str, timeout: float = 30.0):
        rest = ws_url.split("://", 1)[1]
        hostport, path = rest.split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("DevTools closed the handshake")
            head += chunk
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        self.next_id = 0
        self.events: list[dict] = []

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("DevTools closed the socket")
            buf += chunk
        return buf

    def _recv_message(self) -> dict:
        data = b""
        while True:
            b1, b2 = self._recv_exact(2)
            n = b2 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            mask = self._recv_exact(4) if b2 & 0x80 else None
            payload = self._recv_exact(n)
            if mask:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            opcode = b1 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the connection")
            if opcode in (0x9, 0xA):  # ping/pong: not sent by Chromium here
                continue
            data += payload
            if b1 & 0x80:
                return json.loads(data.decode("utf-8"))

    def send(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        self.next_id += 1
        msg = json.dumps({"id": self.next_id, "method": method, "params": params or {}}).encode()
        head = bytearray([0x81])
        if len(msg) < 126:
            head.append(0x80 | len(msg))
        elif len(msg) < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", len(msg))
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", len(msg))
        mask = os.urandom(4)
        self.sock.sendall(bytes(head) + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(msg)))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = self._recv_message()
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)
        raise TimeoutError(method)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        for e in self.events:
            if e.get("method") == method:
                return e
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = self._recv_message()
            self.events.append(m)
            if m.get("method") == method:
                return m
        raise TimeoutError(method)

    def close(self):
        self.sock.close()


def open_in_browser(page: Path, profile: Path, shot: Path, width: int = 1280) -> dict:
    """Load ``page`` in headless Chromium; returns what the page and the browser reported."""
    exe = chromium()
    proc = subprocess.Popen([exe, *BROWSER_FLAGS, f"--user-data-dir={profile}",
                             "--remote-debugging-port=0", "--remote-allow-origins=*",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port_file = profile / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None:
                raise AssertionError(f"chromium exited {proc.returncode}: "
                                     f"{proc.stderr.read().decode(errors='replace')[-2000:]}")
            if time.monotonic() > end:
                raise AssertionError("chromium did not open its DevTools port in 60 s")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        target = next(t for t in targets if t.get("type") == "page")
        dt = DevTools(target["webSocketDebuggerUrl"])
        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                dt.send(f"{domain}.enable")
            dt.send("Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
            dt.send("Page.navigate", {"url": page.resolve().as_uri()})
            dt.wait_for("Page.loadEventFired", timeout=60)
            state = dt.send("Runtime.evaluate", {"returnByValue": True, "expression": """
                JSON.stringify({
                  ready: document.readyState, title: document.title,
                  h2: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
                  scripts: document.scripts.length,
                  height: document.documentElement.scrollHeight,
                  images: Array.from(document.images).map(i => ({src: i.getAttribute('src'),
                          complete: i.complete, width: i.naturalWidth}))})"""})
            info = json.loads(state["result"]["value"])
            height = min(int(info["height"]), 16000)
            dt.send("Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            png = dt.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                          timeout=60)
            shot.write_bytes(base64.b64decode(png["data"]))
            info["events"] = dt.events
        finally:
            dt.close()
        return info
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def problems_of(info: dict) -> list[str]:
    bad = []
    for e in info["events"]:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            bad.append(f"console {p['type']}: {p.get('args')}")
        elif m == "Runtime.exceptionThrown":
            bad.append(f"exception: {p.get('exceptionDetails')}")
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
            bad.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif m == "Network.loadingFailed":
            bad.append(f"failed load: {p.get('errorText')}")
        elif m == "Network.requestWillBeSent":
            u = p.get("request", {}).get("url", "")
            if not u.startswith(("file:", "data:")):
                bad.append(f"network request: {u}")
    return bad


@pytest.mark.parametrize("which", ["rca", "route"])
def test_page_loads_in_a_real_browser_with_every_image(results, tmp_path, which):
    folder = results[which]
    shots = Path(os.environ.get("TAO_AOI_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / f"index_{which}.png"
    info = open_in_browser(folder / "index.html", tmp_path / "profile", shot)
    assert info["ready"] == "complete"
    assert info["scripts"] == 0
    assert problems_of(info) == []
    broken = [i["src"] for i in info["images"] if not (i["complete"] and i["width"] > 0)]
    assert broken == []
    if which == "rca":
        srcs = {i["src"] for i in info["images"]}
        assert {"score_distribution.png", "rca_images/spot_check_sheet.png",
                "iteration_compare.png"} <= srcs
        spot = json.loads((folder / "rca_images" / "spot_check.json").read_text())["samples"]
        thumbs = {s["image"] for s in spot if s.get("image")}
        assert len(thumbs) >= 6 and thumbs <= srcs  # the report's spot-check thumbnails
        assert any("Change Since Last Iteration" in h for h in info["h2"] + [info["title"]]) or \
            "Change Since Last Iteration" in (folder / "index.html").read_text()
    from PIL import Image

    with Image.open(shot) as im:
        assert im.width == 1280 and im.height > 600
        # not a blank page: the header band is dark, the body light
        assert im.getpixel((10, 10))[2] < 120 and sum(im.getpixel((640, im.height - 5))[:3]) > 600


def test_a_missing_image_would_be_caught_by_the_browser_check(results, tmp_path):
    """The check itself works: a page with a broken <img> fails it."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>x</title></head>'
                    '<body><img src="nothing.png"></body></html>')
    info = open_in_browser(page, tmp_path / "profile", tmp_path / "broken_shot.png")
    assert [i["src"] for i in info["images"] if i["width"] == 0] == ["nothing.png"]
    assert problems_of(info)  # the failed load is reported too


def test_draft_only_folder_shows_the_draft_flagged(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"threshold": 0.25, "threshold_mode": "sweep"}))
    (tmp_path / "RCA_Report.draft.md").write_text(
        "# RCA Report\n\n## 1. Verdict\n\n<!-- AGENT: verdict | 2-4 sentences -->\n")
    page = html_index.build_html(tmp_path)
    assert "This is the <b>draft</b>" in page
    assert 'class="placeholder">to be written by the agent: verdict | 2-4 sentences' in page
    assert "0.250000 (sweep)" in page


def test_builder_runs_on_a_bare_python(results, tmp_path):
    """The packaging hook runs `python3 -S`: the builder must need nothing but the stdlib."""
    import sys

    shutil.copytree(results["route"], tmp_path / "route")
    res = subprocess.run([sys.executable, "-S", str(Path(__file__).parents[1] / "scripts" /
                                                    "build_index.py"), str(tmp_path / "route")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"wrote {tmp_path / 'route' / 'index.html'}"
