"""``index.html`` for a results folder: one static, offline page a person opens in a browser.

``scripts/build_index.py RESULTS_DIR`` (or :func:`refresh` from Python) writes
``RESULTS_DIR/index.html`` for an RCA (``<exp>/rca_results/<ts>/``), routing
(``.../routing_results/<ts>/``) or mining (``.../mining_results/<ts>/``) results folder, told
apart by the files present. The page shows the key numbers (metrics.json, the summaries), the
report rendered from its Markdown (the final report, else the draft, flagged as such) with its
images, the score plot, the spot-check sheet and samples, the iteration comparison when
``iteration_compare.md`` is there, links to nested results folders and to every artifact.

Rules (decisions):

* standard library only (the packaging hook runs ``python3 -S``); no JavaScript, no network:
  every ``src``/``href`` is a relative link inside the folder, except http(s)/mailto links the
  report itself holds, which stay plain links (never fetched to render the page);
* the Markdown renderer is ours and small (headings, paragraphs, emphasis, code, fenced code,
  tables, lists, block quotes, rules, images, links): every piece of text is HTML-escaped, raw
  HTML is shown as text, and draft ``<!-- AGENT: ... -->`` placeholders are shown visibly;
* nothing is followed out of the folder: a path (report image, link, listed file) is used only
  when its real location (every symlink resolved) lies inside the folder's real location;
  links that leave it are listed as such, never linked or read. An image is embedded only when
  it exists there and its first bytes are a PNG/JPEG/GIF/WebP/BMP signature, so the page never
  shows a broken image;
* the output is a function of the folder's files only (no clock), written atomically.
"""
from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence
from urllib.parse import quote, unquote, urlsplit

from tao_aoi.paths import is_within

INDEX_NAME = "index.html"
KINDS = ("rca", "routing", "mining")
TITLES = {"rca": "Gap analysis (RCA)", "routing": "Routing", "mining": "Mining"}
REPORTS = {"rca": ("RCA_Report.md", "RCA_Report.draft.md"), "routing": ("Routing_Report.md",),
           "mining": ("Mining_Report.md",)}
# files that make a folder a results folder of each kind (any one of them)
MARKERS = {
    "rca": ("metrics.json", "kpi_gaps.parquet", "unreachable_kpi.txt", "weak_samples_breakdown.txt",
            "RCA_Report.md", "RCA_Report.draft.md"),
    "routing": ("routing_summary.txt", "mining_gaps.parquet", "anomalygen_gaps.parquet",
                "Routing_Report.md"),
    "mining": ("mining_summary.txt", "mined.parquet", "Mining_Report.md"),
}
TEXT_FILES = {
    "rca": ("unreachable_kpi.txt", "threshold.txt", "weak_samples_breakdown.txt"),
    "routing": ("routing_summary.txt",),
    "mining": ("mining_summary.txt",),
}
FIGURES = (("score_distribution.png", "Score distribution with the chosen threshold"),
           ("rca_images/spot_check_sheet.png", "Spot-check sheet: the ten samples"),
           ("iteration_compare.png", "Score before vs after per sample"))
COMPARE_MD, COMPARE_JSON = "iteration_compare.md", "iteration_compare.json"
COMPARE_TITLE = "Change Since Last Iteration"
SPOT_JSON = "rca_images/spot_check.json"
MAX_TEXT = 256 * 1024        # bytes of a text file shown inline
MAX_LISTED = 2000            # artifact rows listed
MAX_DEPTH = 6                # folder depth listed
_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF87a", ".gif"),
                (b"GIF89a", ".gif"), (b"BM", ".bmp"))
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")


class NotResults(ValueError):
    """The folder is not an RCA, routing or mining results folder."""


# ----------------------------------------------------------------------------- the folder

class Folder:
    """A results folder; every path it hands out lies inside its real location."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.real = self.root.resolve()

    def inside(self, rel: str | os.PathLike) -> Path | None:
        """The real path of ``rel`` (relative to the folder, or absolute) when it exists and
        lies inside the folder after resolving every link; else None."""
        p = Path(rel)
        p = p if p.is_absolute() else self.root / p
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not is_within(real, self.real):
            return None
        return real

    def rel(self, real: Path) -> str:
        return real.relative_to(self.real).as_posix()

    def file(self, rel: str) -> Path | None:
        p = self.inside(rel)
        return p if p is not None and p.is_file() else None

    def text(self, rel: str, limit: int = MAX_TEXT) -> str | None:
        p = self.file(rel)
        if p is None:
            return None
        try:
            with open(p, "rb") as fh:
                data = fh.read(limit + 1)
        except OSError:
            return None
        cut = len(data) > limit
        text = data[:limit].decode("utf-8", errors="replace")
        return text + ("\n[... cut: the file is longer than the page shows]" if cut else "")

    def image(self, rel: str) -> str | None:
        """The relative URL of an image file inside the folder that a browser can decode."""
        p = self.file(rel)
        if p is None or p.suffix.lower() not in _IMAGE_EXT:
            return None
        try:
            with open(p, "rb") as fh:
                head = fh.read(16)
        except OSError:
            return None
        ok = any(head.startswith(m) for m, _ in _IMAGE_MAGIC) or (
            head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        return url(self.rel(p)) if ok else None


def url(rel_posix: str) -> str:
    return quote(rel_posix, safe="/")


def _kind_of(folder: Folder) -> str | None:
    for kind in KINDS:
        if any(folder.file(m) for m in MARKERS[kind]):
            return kind
    return None


def detect_kind(root: str | os.PathLike) -> str | None:
    """rca | routing | mining, by the files present (a report wins); None when none."""
    folder = Folder(root)
    if not folder.real.is_dir():
        return None
    for kind in KINDS:
        if any(folder.file(r) for r in REPORTS[kind] if not r.endswith(".draft.md")):
            return kind
    return _kind_of(folder)


# ----------------------------------------------------------------------------- Markdown

_ESC = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~<])")
_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_COMMENT = re.compile(r"<!--(.*?)-->", re.S)
_IMG = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"([^\"]*)\")?\s*\)")
_LINK = re.compile(r"\[((?:[^\[\]]|\[[^\]]*\])+)\]\(\s*<?([^)\s>]+)>?(?:\s+\"([^\"]*)\")?\s*\)")
_AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^(\s{0,3})(`{3,}|~{3,})\s*([\w+-]*)")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_ITEM = re.compile(r"^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(.*)$")


def slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    s, n = base, 2
    while s in used:
        s, n = f"{base}-{n}", n + 1
    used.add(s)
    return s


@dataclass
class Renderer:
    """Markdown -> safe HTML for one folder. Collects the images it embedded."""

    folder: Folder
    base: str = ""                 # folder of the Markdown file, relative to the root
    heading_shift: int = 1         # the page has its own <h1>
    ids: set[str] = field(default_factory=set)
    images: set[str] = field(default_factory=set)
    headings: list[tuple[int, str, str]] = field(default_factory=list)

    # --- links and images
    def _target(self, raw: str) -> tuple[str, Path | None]:
        """('local', real path) for a path inside the folder, ('web', None) for http(s)/mailto,
        ('anchor', None), or ('refused', None)."""
        parts = urlsplit(raw)
        if parts.scheme in ("http", "https", "mailto"):
            return "web", None
        if raw.startswith("#"):
            return "anchor", None
        if parts.scheme or parts.netloc:
            return "refused", None
        path = unquote(parts.path)
        if not path:
            return "refused", None
        rel = path if path.startswith("/") else str(PurePosixPath(self.base or ".") / path)
        real = self.folder.inside(rel)
        return ("local", real) if real is not None else ("refused", None)

    def image(self, alt: str, src: str, title: str | None) -> str:
        kind, real = self._target(src)
        ref = self.folder.image(str(real)) if kind == "local" else None
        if ref is None:
            why = ("a web address: not fetched" if kind == "web" else
                   "not in this results folder")
            return (f'<span class="noimg">[image {html.escape(alt or src)}: '
                    f'{html.escape(src)} ({why})]</span>')
        self.images.add(unquote(ref))
        t = f' title="{html.escape(title)}"' if title else ""
        return f'<img src="{html.escape(ref)}" alt="{html.escape(alt)}"{t}>'

    def link(self, inner_html: str, href: str, title: str | None) -> str:
        kind, real = self._target(href)
        t = f' title="{html.escape(title)}"' if title else ""
        if kind == "web":
            return f'<a href="{html.escape(href)}" rel="noopener noreferrer"{t}>{inner_html}</a>'
        if kind == "anchor":
            return f'<a href="{html.escape(href)}"{t}>{inner_html}</a>'
        if kind == "local":
            frag = urlsplit(href).fragment
            ref = url(self.folder.rel(real)) + (f"#{quote(frag)}" if frag else "")
            return f'<a href="{html.escape(ref)}"{t}>{inner_html}</a>'
        return (f'{inner_html} <span class="nolink">({html.escape(href)}: not in this results '
                f'folder)</span>')

    # --- inline
    def inline(self, text: str, links: bool = True) -> str:
        store: list[str] = []

        def keep(fragment: str) -> str:
            store.append(fragment)
            return f"\x00{len(store) - 1}\x00"

        text = text.replace("\x00", "")
        text = _CODE.sub(lambda m: keep(f"<code>{html.escape(m.group(2).strip())}</code>"), text)
        text = _COMMENT.sub(lambda m: keep(_placeholder(m.group(1))), text)
        text = _ESC.sub(lambda m: keep(html.escape(m.group(1))), text)
        text = _IMG.sub(lambda m: keep(self.image(m.group(1), m.group(2), m.group(3))), text)
        if links:
            text = _LINK.sub(lambda m: keep(self.link(self.inline(m.group(1), links=False),
                                                      m.group(2), m.group(3))), text)
            text = _AUTOLINK.sub(lambda m: keep(self.link(html.escape(m.group(1)), m.group(1),
                                                          None)), text)
        out = html.escape(text, quote=False)
        out = re.sub(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", r"<strong>\1</strong>", out)
        out = re.sub(r"(?<![\w])__(?=\S)(.+?)(?<=\S)__(?![\w])", r"<strong>\1</strong>", out)
        out = re.sub(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])", r"<em>\1</em>", out)
        out = re.sub(r"(?<![\w])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w])", r"<em>\1</em>", out)
        out = re.sub(r"~~(?=\S)(.+?)(?<=\S)~~", r"<del>\1</del>", out)
        out = re.sub(r"( {2,}|\\)\n", "<br>\n", out)
        for _ in range(3):  # tokens nest at most this deep (link text holding code)
            out = re.sub(r"\x00(\d+)\x00", lambda m: store[int(m.group(1))], out)
        return out

    # --- blocks
    def render(self, markdown: str) -> str:
        lines = markdown.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4).split("\n")
        return "\n".join(self._blocks(lines))

    def _blocks(self, lines: Sequence[str]) -> list[str]:
        out: list[str] = []
        i, n = 0, len(lines)
        while i < n:
            if not lines[i].strip():
                i += 1
                continue
            for block in (self._fenced_code, self._comment, self._heading, self._rule,
                          self._table_block, self._quote, self._list_block, self._paragraph):
                found = block(lines, i)
                if found is not None:
                    html_text, i = found
                    out.append(html_text)
                    break
        return out

    # each block reader: (its HTML, the index of the line after it), or None when the block
    # does not start at line i
    @staticmethod
    def _fenced_code(lines: Sequence[str], i: int) -> tuple[str, int] | None:
        m = _FENCE.match(lines[i])
        if not m:
            return None
        fence, lang = m.group(2), m.group(3)
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        cls = f' class="language-{html.escape(lang)}"' if lang else ""
        return f"<pre><code{cls}>{html.escape(chr(10).join(body))}</code></pre>", i + 1

    @staticmethod
    def _comment(lines: Sequence[str], i: int) -> tuple[str, int] | None:
        """An HTML comment on lines of its own: a draft placeholder box, any other dropped."""
        if not lines[i].lstrip().startswith("<!--"):
            return None
        j, chunk = i, []
        while j < len(lines):
            chunk.append(lines[j])
            if "-->" in lines[j]:
                break
            j += 1
        m = _COMMENT.fullmatch("\n".join(chunk).strip())
        if not m:
            return None
        box = _placeholder(m.group(1))
        return (f"<div>{box}</div>" if box else ""), j + 1

    def _heading(self, lines: Sequence[str], i: int) -> tuple[str, int] | None:
        m = _HEADING.match(lines[i])
        if not m:
            return None
        level = min(6, len(m.group(1)) + self.heading_shift)
        hid = slug(m.group(2), self.ids)
        self.headings.append((level, hid, m.group(2)))
        return f'<h{level} id="{hid}">{self.inline(m.group(2))}</h{level}>', i + 1

    @staticmethod
    def _rule(lines: Sequence[str], i: int) -> tuple[str, int] | None:
        return ("<hr>", i + 1) if _RULE.match(lines[i]) else None

    @staticmethod
    def _table_starts(lines: Sequence[str], i: int) -> bool:
        return bool("|" in lines[i] and i + 1 < len(lines) and _TABLE_SEP.match(lines[i + 1])
                    and "-" in lines[i + 1])

    def _table_block(self, lines: Sequence[str], i: int) -> tuple[str, int] | None:
        if not self._table_starts(lines, i):
            return None
        j = i + 2
        while j < len(lines) and lines[j].strip() and "|" in lines[j]:
            j += 1
        return self._table(lines[i], lines[i + 1], lines[i + 2:j]), j

    def _quote(self, lines: Sequence[str], i: int) -> tuple[str, int] | None:
        if not _QUOTE.match(lines[i]):
            return None
        body = []
        while i < len(lines) and lines[i].strip() and _QUOTE.match(lines[i]):
            body.append(_QUOTE.match(lines[i]).group(1))
            i += 1
        return "<blockquote>" + "\n".join(self._blocks(body)) + "</blockquote>", i

    def _list_block(self, lines: Sequence[str], i: int) -> tuple[str, int] | None:
        if not _ITEM.match(lines[i]):
            return None
        j, n = i, len(lines)
        while j < n and (_ITEM.match(lines[j]) or (lines[j].strip() and lines[j][:1] == " ")
                         or (not lines[j].strip() and j + 1 < n and _ITEM.match(lines[j + 1]))):
            j += 1
        return self._list(lines[i:j]), j

    def _paragraph(self, lines: Sequence[str], i: int) -> tuple[str, int]:
        body = []
        while i < len(lines) and lines[i].strip() and not self._starts_block(lines, i):
            body.append(lines[i].strip() if not lines[i].endswith("  ") else lines[i].lstrip())
            i += 1
        if not body:  # a line that looked like a block start but was not one
            body.append(lines[i].strip())
            i += 1
        return f"<p>{self.inline(chr(10).join(body))}</p>", i

    def _starts_block(self, lines: Sequence[str], i: int) -> bool:
        line = lines[i]
        return bool(_FENCE.match(line) or _HEADING.match(line) or _RULE.match(line)
                    or _QUOTE.match(line) or _ITEM.match(line)
                    or line.lstrip().startswith("<!--") or self._table_starts(lines, i))

    @staticmethod
    def _cells(line: str) -> list[str]:
        s = line.strip()
        if s.startswith("|"):
            s = s[1:]
        if s.endswith("|") and not s.endswith("\\|"):
            s = s[:-1]
        cells, cur, k, tick = [], [], 0, False
        while k < len(s):
            ch = s[k]
            if ch == "\\" and k + 1 < len(s) and s[k + 1] == "|":
                cur.append("\\|")  # kept escaped: the inline pass turns it into "|"
                k += 2
                continue
            if ch == "`":
                tick = not tick
            if ch == "|" and not tick:
                cells.append("".join(cur).strip())
                cur = []
            else:
                cur.append(ch)
            k += 1
        cells.append("".join(cur).strip())
        return cells

    def _table(self, head: str, sep: str, rows: Sequence[str]) -> str:
        aligns = []
        for c in self._cells(sep):
            c = c.strip()
            aligns.append("center" if c.startswith(":") and c.endswith(":") else
                          "right" if c.endswith(":") else "left" if c.startswith(":") else "")
        hcells = self._cells(head)
        width = len(hcells)

        def row(cells, tag):
            cells = (cells + [""] * width)[:width]
            tds = []
            for k, c in enumerate(cells):
                a = aligns[k] if k < len(aligns) and aligns[k] else ""
                style = f' style="text-align:{a}"' if a else ""
                tds.append(f"<{tag}{style}>{self.inline(c)}</{tag}>")
            return "<tr>" + "".join(tds) + "</tr>"

        body = "\n".join(row(self._cells(r), "td") for r in rows)
        return (f'<div class="tablewrap"><table>\n<thead>{row(hcells, "th")}</thead>\n'
                f"<tbody>\n{body}\n</tbody></table></div>")

    def _list(self, lines: Sequence[str]) -> str:
        """Nested lists by indentation; continuation lines join the item above."""
        items: list[list] = []  # [indent, ordered, start, text]
        for line in lines:
            if not line.strip():
                continue
            m = _ITEM.match(line)
            if m:
                marker = m.group(2)
                ordered = marker[0].isdigit()
                items.append([len(m.group(1)), ordered, int(marker[:-1]) if ordered else 1,
                              m.group(3)])
            elif items:
                items[-1][3] += "\n" + line.strip()
        out: list[str] = []
        stack: list[tuple[int, str]] = []  # (indent, tag)
        for indent, ordered, start, text in items:
            tag = "ol" if ordered else "ul"
            while stack and indent < stack[-1][0]:
                out.append(f"</li></{stack.pop()[1]}>")
            if stack and indent == stack[-1][0] and tag != stack[-1][1]:
                out.append(f"</li></{stack.pop()[1]}>")
            if not stack or indent > stack[-1][0]:
                attr = f' start="{start}"' if ordered and start != 1 else ""
                out.append(f"<{tag}{attr}>")
                stack.append((indent, tag))
            else:
                out.append("</li>")
            out.append(f"<li>{self.inline(text)}")
        while stack:
            out.append(f"</li></{stack.pop()[1]}>")
        return "".join(out)


def _placeholder(comment: str) -> str:
    """A draft's ``<!-- AGENT: id | what to write -->`` shown as a visible box; other comments
    are dropped, as a browser would."""
    text = comment.strip()
    if not text.startswith("AGENT:"):
        return ""
    return f'<span class="placeholder">to be written by the agent: {html.escape(text[6:].strip())}</span>'


def render_markdown(markdown: str, folder: str | os.PathLike | Folder, base: str = "",
                    heading_shift: int = 1) -> str:
    """Safe HTML of ``markdown`` whose relative links resolve against ``folder/base``."""
    f = folder if isinstance(folder, Folder) else Folder(folder)
    return Renderer(f, base, heading_shift).render(markdown)


# ----------------------------------------------------------------------------- the page parts

def _num(v, digits: int = 4) -> str:
    if isinstance(v, bool) or v is None:
        return html.escape(str(v)) if isinstance(v, bool) else "-"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "\n".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in r) + "</tr>" for r in rows)
    return (f'<div class="tablewrap"><table{c}><thead><tr>{th}</tr></thead><tbody>\n{body}\n'
            f"</tbody></table></div>")


def _json(folder: Folder, rel: str):
    text = folder.text(rel, limit=32 * 1024 * 1024)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return "unreadable"


def _metrics_html(folder: Folder) -> str:
    m = _json(folder, "metrics.json")
    if m is None:
        return ""
    if not isinstance(m, dict):
        return '<p class="warn">metrics.json is not readable JSON.</p>'
    parts = []
    mode = html.escape(str(m.get("threshold_mode", "-")))
    rows = [("Threshold", f"{_num(m.get('threshold'), 6)} ({mode})"),
            ("NO_PASS recall", _num(m.get("recall"))), ("Precision", _num(m.get("precision"))),
            ("F1", _num(m.get("f1"))), ("FAR (false-alarm rate)", _num(m.get("far"))),
            ("min_recall", _num(m.get("min_recall"))), ("Rows in CSV", _num(m.get("n_rows")))]
    parts.append(_table(("Metric", "Value"), rows, "narrow"))
    cm = m.get("confusion_matrix")
    if isinstance(cm, dict):
        parts.append(_table(("", "Predicted NO_PASS", "Predicted PASS"),
                            [("Actual NO_PASS", f"TP = {_num(cm.get('tp'))}", f"FN = {_num(cm.get('fn'))}"),
                             ("Actual PASS", f"FP = {_num(cm.get('fp'))}", f"TN = {_num(cm.get('tn'))}")],
                            "narrow"))
    if m.get("degenerate_threshold"):
        parts.append('<p class="warn">Degenerate threshold: it flags at least half of the PASS '
                     'rows (see metrics.json threshold_pinned_by).</p>')
    pl = m.get("per_label")
    if isinstance(pl, dict) and pl:
        rows = []
        for name, s in pl.items():
            if not isinstance(s, dict):
                continue
            total, wrong = s.get("total"), s.get("n_misclassified")
            rate = (f"{100.0 * wrong / total:.1f}%" if isinstance(total, int) and total
                    and isinstance(wrong, int) else "-")
            rows.append((html.escape(str(name)), _num(total), _num(wrong), rate,
                         _num(s.get("mean_weakness")), _num(s.get("median_weakness")),
                         _num(s.get("max_weakness"))))
        parts.append("<h3>Per label (whole CSV)</h3>")
        parts.append(_table(("Label", "Rows", "Misclassified", "Error rate", "Mean weakness",
                             "Median weakness", "Max weakness"), rows))
    curve = m.get("operating_curve")
    if isinstance(curve, list) and curve:
        rows = [(_num(p.get("min_recall")), _num(p.get("threshold"), 6), _num(p.get("recall")),
                 _num(p.get("far")), _num(p.get("precision")), _num(p.get("f1")),
                 _num(p.get("false_alarms"))) for p in curve if isinstance(p, dict)]
        parts.append("<h3>Operating curve (what each recall target costs)</h3>")
        parts.append(_table(("min_recall", "Threshold", "Recall", "FAR", "Precision", "F1",
                             "False alarms"), rows))
    return "\n".join(parts)


def _compare_numbers(folder: Folder) -> str:
    r = _json(folder, COMPARE_JSON)
    if not isinstance(r, dict) or not isinstance(r.get("counts"), dict):
        return ""
    c = r["counts"]
    rows = [(html.escape(k.replace("_", " ")), _num(c.get(k)))
            for k in ("shared", "fixed", "regressed", "still_misclassified", "relabeled",
                      "only_in_before", "only_in_after")]
    return _table(("Samples", "Count"), rows, "narrow")


def _spot_html(folder: Folder, renderer: Renderer) -> str:
    s = _json(folder, SPOT_JSON)
    if not isinstance(s, dict) or not isinstance(s.get("samples"), list):
        return ""
    rows = []
    for rec in s["samples"]:
        if not isinstance(rec, dict):
            continue
        ref = folder.image(str(rec.get("image", ""))) if rec.get("image") else None
        if ref:
            renderer.images.add(unquote(ref))
        img = (f'<img class="thumb" src="{html.escape(ref)}" alt="sample {_num(rec.get("rank"))}">'
               if ref else '<span class="noimg">no image</span>')
        rows.append((_num(rec.get("rank")), img, html.escape(str(rec.get("label", ""))),
                     html.escape(f"{rec.get('input_path', '')}/{rec.get('object_name', '')}"),
                     _num(rec.get("siamese_score")), _num(rec.get("weakness")),
                     html.escape(str(rec.get("status", ""))),
                     html.escape(str(rec.get("verdict", "") or "-"))))
    return _table(("#", "Image", "Label", "Sample", "Score", "Weakness", "Image status",
                   "Verdict"), rows)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@dataclass
class Listing:
    files: list[tuple[str, str]] = field(default_factory=list)      # (rel, html cell)
    nested: list[tuple[str, str, str]] = field(default_factory=list)  # (rel, kind, href)
    outside: list[str] = field(default_factory=list)
    more: int = 0


def _nested_href(folder: Folder, rel: str, kind: str) -> str | None:
    for name in (INDEX_NAME, *REPORTS[kind]):
        if folder.file(f"{rel}/{name}"):
            return url(f"{rel}/{name}")
    return None


def list_artifacts(folder: Folder) -> Listing:
    """Every file under the folder (links followed only when they stay inside), nested results
    folders linked rather than listed."""
    out = Listing()

    def add(rel: str, cell: str):
        if len(out.files) < MAX_LISTED:
            out.files.append((rel, cell))
        else:
            out.more += 1

    def walk(rel_dir: str, depth: int):
        d = folder.real / rel_dir if rel_dir else folder.real
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            if e.name.startswith(".") or (not rel_dir and e.name == INDEX_NAME):
                continue  # hidden and temp files (atomic writes), the page itself
            real = folder.inside(rel)
            if real is None:
                if e.is_symlink():
                    out.outside.append(rel)
                continue
            if real.is_dir():
                kind = detect_kind(real) if depth < MAX_DEPTH else None
                if kind is not None:
                    out.nested.append((rel, kind, _nested_href(folder, rel, kind) or url(rel)))
                    continue
                if depth < MAX_DEPTH and not e.is_symlink():
                    walk(rel, depth + 1)
                elif e.is_symlink():
                    add(rel + "/", f'<a href="{html.escape(url(rel))}/">{html.escape(rel)}/</a> (link)')
                continue
            try:
                size = _size(real.stat().st_size)
            except OSError:
                size = "?"
            link = " (link)" if e.is_symlink() else ""
            add(rel, f'<a href="{html.escape(url(rel))}">{html.escape(rel)}</a>{link} '
                     f'<span class="size">{size}</span>')

    walk("", 0)
    return out


# ----------------------------------------------------------------------------- the page

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2733;
background:#f4f6f8;line-height:1.45}
header{background:#1f3a56;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:1.5em}
header .path{font-family:monospace;font-size:.85em;opacity:.85;word-break:break-all}
nav{background:#fff;border-bottom:1px solid #d5dbe1;padding:8px 28px;font-size:.9em}
nav a{margin-right:14px}
main{padding:8px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #d5dbe1;border-radius:6px;padding:6px 20px 14px;margin:16px 0}
h2{border-bottom:2px solid #e3e8ee;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
th,td{border:1px solid #d5dbe1;padding:3px 8px;vertical-align:top;text-align:left}
th{background:#eef2f6}tbody tr:nth-child(even){background:#fafbfc}
table.narrow{min-width:320px}.tablewrap{overflow-x:auto}
img{max-width:100%;height:auto}img.thumb{width:96px;height:96px;image-rendering:pixelated}
td img{max-width:140px}
pre{background:#f0f2f4;padding:8px 12px;overflow-x:auto;font-size:.85em;border-radius:4px}
code{background:#f0f2f4;padding:0 3px;border-radius:3px;font-size:.9em}pre code{background:none;padding:0}
figure{margin:10px 0;display:inline-block;vertical-align:top;max-width:100%}
figcaption{font-size:.85em;color:#555}
.placeholder{display:inline-block;background:#fff4d6;border:1px dashed #c99a00;padding:2px 6px;color:#6b5000}
.noimg,.nolink{color:#8a4b00;font-size:.9em}.warn{color:#9b1c1c;font-weight:600}
.banner{background:#fff4d6;border:1px solid #c99a00;padding:8px 12px;border-radius:4px}
.size{color:#777;font-size:.85em}ul.files{columns:2;column-gap:32px;font-size:.9em}
blockquote{border-left:4px solid #d5dbe1;margin:6px 0;padding:2px 12px;color:#444}
"""


def _section(sid: str, title: str, body: str, nav: list[tuple[str, str]]) -> str:
    if not body.strip():
        return ""
    nav.append((sid, title))
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2>\n{body}\n</section>'


def build_html(root: str | os.PathLike) -> str:
    """The page of a results folder (raises NotResults when it is none)."""
    folder = Folder(root)
    kind = detect_kind(folder.root)
    if kind is None:
        raise NotResults(f"{root} is not an RCA, routing or mining results folder (it holds none "
                         f"of {', '.join(sorted({m for ms in MARKERS.values() for m in ms}))})")
    nav: list[tuple[str, str]] = []
    renderer = Renderer(folder, heading_shift=1)
    renderer.ids.update({"numbers", "comparison", "report", "figures", "spot-check", "nested",
                         "artifacts"})
    # the report first: it decides which images are already shown
    report_name, report_html = _report_html(folder, kind, renderer)
    sections = [_section("numbers", "Key numbers", _numbers_html(folder, kind), nav)]
    if not any(t.strip().lower().endswith(COMPARE_TITLE.lower()) for _, _, t in renderer.headings):
        sections.append(_section("comparison", COMPARE_TITLE, _comparison_html(folder, renderer), nav))
    if report_html:
        sections.append(_section("report", f"Report ({report_name})", report_html, nav))
    # until the final report is written (it shows its own spot check), the page shows the sheet
    spot = _spot_html(folder, renderer) if kind == "rca" and not (
        report_name and not report_name.endswith(".draft.md")) else ""
    sections.append(_section("figures", "Figures", _figures_html(folder, renderer), nav))
    sections.append(_section("spot-check", "Spot check", spot, nav))
    listing = list_artifacts(folder)
    if listing.nested:
        items = "".join(f'<li><a href="{html.escape(href)}">{html.escape(rel)}</a> '
                        f'({html.escape(TITLES[k])} results)</li>'
                        for rel, k, href in listing.nested)
        sections.append(_section("nested", "Later stages (nested results folders)",
                                 f"<ul>{items}</ul>", nav))
    sections.append(_section("artifacts", "All artifacts", _artifacts_html(listing), nav))
    return _page(f"{TITLES[kind]} results: {folder.real.name}", folder, nav, sections)


def _report_html(folder: Folder, kind: str, renderer: Renderer) -> tuple[str | None, str]:
    """(the report's name, its HTML): the final report, else the draft with a banner."""
    report_name = next((r for r in REPORTS[kind] if folder.file(r)), None)
    if not report_name:
        return None, ""
    text = folder.text(report_name) or ""
    banner = ""
    if report_name.endswith(".draft.md"):
        banner = ('<p class="banner">This is the <b>draft</b> (RCA_Report.draft.md): the '
                  'agent has not written RCA_Report.md yet; boxed items are still to be '
                  'written.</p>')
    return report_name, banner + renderer.render(text)


def _numbers_html(folder: Folder, kind: str) -> str:
    numbers = []
    if kind == "rca":
        numbers.append(_metrics_html(folder))
    for name in TEXT_FILES[kind]:
        t = folder.text(name)
        if t is not None:
            numbers.append(f"<h3>{html.escape(name)}</h3><pre>{html.escape(t)}</pre>")
    return "\n".join(numbers)


def _comparison_html(folder: Folder, renderer: Renderer) -> str:
    """iteration_compare.md under its numbers ("" without one); its own heading dropped."""
    compare_md = folder.text(COMPARE_MD)
    if compare_md is None:
        return ""
    return _compare_numbers(folder) + Renderer(folder, heading_shift=1, ids=renderer.ids,
                                               images=renderer.images).render(
        re.sub(rf"^#+\s+{COMPARE_TITLE}\s*\n", "", compare_md, count=1, flags=re.M))


def _figures_html(folder: Folder, renderer: Renderer) -> str:
    """The known figures the report did not already show."""
    figs = []
    for rel, caption in FIGURES:
        ref = folder.image(rel)
        if ref is None or unquote(ref) in renderer.images:
            continue
        renderer.images.add(unquote(ref))
        figs.append(f'<figure><a href="{html.escape(ref)}"><img src="{html.escape(ref)}" '
                    f'alt="{html.escape(caption)}"></a><figcaption>{html.escape(caption)} '
                    f'(<code>{html.escape(rel)}</code>)</figcaption></figure>')
    return "\n".join(figs)


def _artifacts_html(listing: Listing) -> str:
    files = "".join(f"<li>{cell}</li>" for _, cell in listing.files)
    extra = f"<p>... and {listing.more} more files.</p>" if listing.more else ""
    outside = ("<p>Links that point outside this folder (not followed): "
               + ", ".join(f"<code>{html.escape(o)}</code>" for o in listing.outside) + "</p>"
               if listing.outside else "")
    return f'<ul class="files">{files}</ul>{extra}{outside}'


def _page(title: str, folder: Folder, nav: list[tuple[str, str]], sections: list[str]) -> str:
    navhtml = " ".join(f'<a href="#{sid}">{html.escape(t)}</a>' for sid, t in nav)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<header><h1>{html.escape(title)}</h1>"
            f'<div class="path">{html.escape(str(folder.real))}</div></header>\n'
            f"<nav>{navhtml}</nav>\n<main>\n" + "\n".join(s for s in sections if s)
            + "\n</main>\n</body>\n</html>\n")


def build(root: str | os.PathLike) -> Path:
    """Write ``root/index.html`` (atomically; an existing link is replaced, never written
    through). Returns its path."""
    from tao_aoi import atomic

    page = build_html(root)
    dest = Path(root) / INDEX_NAME
    atomic.write_text(dest, page)
    return dest


def refresh(root: str | os.PathLike) -> list[Path]:
    """Build ``root``'s page, then rebuild the pages of the results folders it is nested in
    (``<parent>/<x>_results/<ts>/``) that already have one, so their links stay in step."""
    written = [build(root)]
    p = Path(root).resolve()
    while p.parent.name.endswith("_results"):
        q = p.parent.parent
        if not (q / INDEX_NAME).is_file() or detect_kind(q) is None:
            break
        written.append(build(q))
        p = q
    return written


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from tao_aoi.cli import OneLineParser, UsageError

    p = OneLineParser(
        prog="build_index.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write index.html into a results folder (RCA, routing or mining): the "
                    "report with its images, the score plot, the spot-check sheet, the key "
                    "tables, the iteration comparison and links to every artifact. Static and "
                    "offline: open it in any browser, no server needed.",
        epilog="example:\n  python3 scripts/build_index.py exp/rca_results/2025-01-10_101500")
    p.add_argument("results_dir", help="the results folder (<exp>/rca_results/<ts>/, "
                                       ".../routing_results/<ts>/ or .../mining_results/<ts>/)")
    p.add_argument("--only", action="store_true",
                   help="do not refresh the index.html of enclosing results folders")
    args = p.parse_args(argv)
    root = Path(args.results_dir)
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder")
    try:
        written = [build(root)] if args.only else refresh(root)
    except NotResults as exc:
        raise UsageError(str(exc)) from None
    for w in written:
        print(f"wrote {w}")
    return 0
