"""The report's document model and its two renderers (HTML, Markdown), formatting and figure helpers.

:mod:`study.report` (the study report) and :mod:`study.publish` (the published results page) fill
a :class:`Doc` with headings, paragraphs, :class:`Table` and :class:`Figure` blocks; :func:`render_html`
and :func:`render_md` turn it into a page. Nothing here reads a study: content lives in the callers.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from evaluation.metrics import registry as metric_registry

FORMATS = ("html", "md")
DPI = 110
# Okabe–Ito colours (colour-blind safe), plus a line style and a marker per penalty, so the
# curves stay distinguishable in black-and-white print.
_STYLES = {
    "none": ("#000000", "-", "o"),
    "gradient": ("#0072B2", "--", "s"),
    "consistency": ("#D55E00", "-.", "^"),
    "smoothness": ("#009E73", ":", "D"),
    "locality": ("#CC79A7", (0, (6, 2)), "v"),
    "fidelity": ("#E69F00", (0, (3, 1, 1, 1, 1, 1)), "P"),
    "symmetry": ("#56B4E9", (0, (1, 1)), "X"),
}
_EXTRA = [("#999999", (0, (8, 2, 2, 2)), "h"), ("#882255", (0, (2, 3)), "*"), ("#44AA99", "-", "<")]
METRIC_LABELS = metric_registry.labels()  # metric -> label: evaluation/metrics/registry.py


def style(penalty: str, order: Sequence[str] = ()) -> dict:
    """Matplotlib keywords (color, linestyle, marker) of ``penalty``."""
    if penalty in _STYLES:
        c, ls, m = _STYLES[penalty]
    else:
        extra = [p for p in order if p not in _STYLES]
        i = extra.index(penalty) if penalty in extra else zlib.crc32(penalty.encode())
        c, ls, m = _EXTRA[i % len(_EXTRA)]
    return {"color": c, "linestyle": ls, "marker": m}


# --------------------------------------------------------------------------- document model
@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    bold: list[list[bool]] = field(default_factory=list)
    caption: str = ""
    mark: str = " ★"  # appended to bold cells (the best value); "" for plain emphasis


@dataclass
class Figure:
    path: Path  # absolute
    caption: str
    alt: str


@dataclass
class Block:
    kind: str  # h2 | h3 | p | note | table | figure | pre | details | links
    value: object = None
    anchor: str = ""


class Doc:
    def __init__(self) -> None:
        self.blocks: list[Block] = []

    def h2(self, text: str, anchor: str) -> None:
        self.blocks.append(Block("h2", text, anchor))

    def h3(self, text: str) -> None:
        self.blocks.append(Block("h3", text))

    def p(self, text: str) -> None:
        self.blocks.append(Block("p", text))

    def note(self, text: str) -> None:
        self.blocks.append(Block("note", text))

    def table(self, t: Table, collapsed: str = "") -> None:
        self.blocks.append(Block("details" if collapsed else "table", t, collapsed))

    def figure(self, f: Figure) -> None:
        self.blocks.append(Block("figure", f))

    def pre(self, text: str) -> None:
        self.blocks.append(Block("pre", text))

    def links(self, items: list[tuple[str, Path]]) -> None:
        self.blocks.append(Block("links", items))


# --------------------------------------------------------------------------- formatting
def fmt_num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    v = float(v)
    if v != 0 and (abs(v) < 10 ** -(digits - 1) or abs(v) >= 10**5):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}" if abs(v) >= 1000 else f"{v:.{digits}f}"


def fmt_pct(v) -> str:
    """A fraction as a percentage with one decimal (97.5)."""
    return "–" if v is None or not np.isfinite(v) else f"{100 * float(v):.1f}"


def fmt_ci(mean, lo, hi, scale: float = 1.0) -> str:
    if mean is None or not np.isfinite(mean):
        return "–"
    fmt = (lambda v: fmt_pct(v / 100)) if scale == 100 else fmt_num  # percentages: one decimal
    s = fmt(mean * scale)
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        s += f" [{fmt(lo * scale)}, {fmt(hi * scale)}]"
    return s


def direction_arrow(hib) -> str:
    return " ↑" if hib is True else (" ↓" if hib is False else "")


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def best_flags(values: list[float], hib) -> list[bool]:
    v = np.asarray(values, float)
    if hib is None or not np.isfinite(v).any() or np.isfinite(v).sum() < 2:
        return [False] * len(v)
    best = np.nanmax(v) if hib else np.nanmin(v)
    flags = [bool(np.isfinite(x) and np.isclose(x, best, rtol=1e-12, atol=0)) for x in v]
    return [False] * len(v) if sum(flags) == np.isfinite(v).sum() else flags  # all equal: none is best


# --------------------------------------------------------------------------- figures
class Figures:
    """Creates and saves matplotlib figures (Agg canvas, no pyplot state)."""

    def __init__(self, img_dir: Path, log: Callable[[str], None]) -> None:
        self.img_dir = img_dir
        self.log = log
        self.made: list[Path] = []

    def new(self, nrows: int, ncols: int, w: float, h: float, layout: str | None = "constrained", **kw):
        from matplotlib.figure import Figure as MplFigure

        fig = MplFigure(figsize=(w, h), layout=layout)
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
        return fig, axes

    def save(self, fig, name: str) -> Path:
        path = self.img_dir / f"{name}.png"
        tmp = self.img_dir / f".{name}.png.tmp"
        fig.savefig(tmp, dpi=DPI, format="png", facecolor="white")
        os.replace(tmp, path)
        self.made.append(path)
        return path


def figure_legend(fig, axes, loc="outside lower center", ncol: int | None = None) -> None:
    handles, labels, seen = [], [], set()
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in seen and not lab.startswith("_"):
                seen.add(lab)
                handles.append(h)
                labels.append(lab)
    if handles:
        width = fig.get_size_inches()[0]
        fit = max(1, int(width / max(1.0, 0.075 * max(len(lab) for lab in labels) + 0.6)))
        fig.legend(handles, labels, loc=loc, ncol=ncol or min(len(labels), 4, fit), frameon=False, fontsize=8)


def hide_unused_axes(axes, used: int) -> None:
    for ax in np.ravel(axes)[used:]:
        ax.set_visible(False)


def log_x_axis(ax) -> None:
    """Log-scaled x axis with plain tick labels at 1, 2, 5 × 10^k (no overlapping minor labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def grid_shape(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max(n, 1), max_cols)
    return int(np.ceil(max(n, 1) / cols)), cols


# --------------------------------------------------------------------------- rendering
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1150px;margin:1.5em auto;
padding:0 1em;color:#111;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #333}h2{margin-top:1.8em;border-bottom:1px solid #aaa}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.82em}
th,td{border:1px solid #999;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#eee}td:first-child,td:nth-child(2),th:first-child{text-align:left}
td.best{font-weight:bold;background:#e8e8e8}caption{caption-side:bottom;font-size:.85em;color:#444;text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.88em;color:#333}
.note{border-left:4px solid #888;background:#f4f4f4;padding:.4em .8em;margin:.6em 0}
pre{background:#f6f6f6;border:1px solid #ddd;padding:.6em;overflow-x:auto;font-size:.8em}
nav ul{columns:2}details{margin:.5em 0 1.5em}summary{cursor:pointer;font-weight:bold}
@media print{td.best{background:none}figure{page-break-inside:avoid}}
"""


def _html_inline(text: str) -> str:
    """Escape, then render the two Markdown marks the text uses: `code` and **bold**."""
    import re

    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)


def _img_src(path: Path, base: Path, embed: bool) -> str:
    if embed:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    return path.relative_to(base).as_posix()


def _html_table(t: Table) -> str:
    out = ["<table>"]
    if t.caption:
        out.append(f"<caption>{_html_inline(t.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in t.header) + "</tr></thead><tbody>")
    for i, row in enumerate(t.rows):
        cells = []
        for j, c in enumerate(row):
            best = bool(t.bold and t.bold[i][j])
            cells.append(f'<td class="best">{html.escape(c)}{t.mark}</td>' if best else f"<td>{html.escape(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def render_html(doc: Doc, title: str, base: Path, embed: bool = False) -> str:
    toc = [(b.value, b.anchor) for b in doc.blocks if b.kind == "h2"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Generated {html.escape(_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))} by "
        "<code>python -m study.report</code>.</p>",
        "<nav><ul>" + "".join(f'<li><a href="#{a}">{_html_inline(t)}</a></li>' for t, a in toc) + "</ul></nav>",
    ]
    for b in doc.blocks:
        if b.kind == "h2":
            parts.append(f'<h2 id="{b.anchor}">{_html_inline(b.value)}</h2>')
        elif b.kind == "h3":
            parts.append(f"<h3>{_html_inline(b.value)}</h3>")
        elif b.kind == "p":
            parts.append(f"<p>{_html_inline(b.value)}</p>")
        elif b.kind == "note":
            parts.append(f'<p class="note">{_html_inline(b.value)}</p>')
        elif b.kind == "table":
            parts.append(_html_table(b.value))
        elif b.kind == "details":
            parts.append(f"<details><summary>{html.escape(b.anchor)}</summary>{_html_table(b.value)}</details>")
        elif b.kind == "figure":
            f: Figure = b.value
            parts.append(
                f'<figure><img src="{_img_src(f.path, base, embed)}" alt="{html.escape(f.alt)}">'
                f"<figcaption>{_html_inline(f.caption)}</figcaption></figure>"
            )
        elif b.kind == "pre":
            parts.append(f"<pre>{html.escape(b.value)}</pre>")
        elif b.kind == "links":
            parts.append(
                "<p>"
                + " · ".join(f'<a href="{p.relative_to(base).as_posix()}">{html.escape(n)}</a>' for n, p in b.value)
                + "</p>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def _md_cell(c: str) -> str:
    return c.replace("|", "\\|").replace("\n", " ")


def _md_table(t: Table) -> str:
    lines = [
        "| " + " | ".join(_md_cell(h) for h in t.header) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(t.header))) + "|",
    ]
    for i, row in enumerate(t.rows):
        cells = [f"**{_md_cell(c)}**{t.mark}" if t.bold and t.bold[i][j] else _md_cell(c) for j, c in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    if t.caption:
        lines.append(f"\n*{t.caption}*")
    return "\n".join(lines)


def render_md(doc: Doc, title: str, base: Path, command: str = "python -m study.report") -> str:
    parts = [
        f"# {title}",
        "",
        f"Generated {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `{command}`.",
        "",
    ]
    for b in doc.blocks:
        if b.kind == "h2":
            parts += [f"## {b.value}", ""]
        elif b.kind == "h3":
            parts += [f"### {b.value}", ""]
        elif b.kind == "p":
            parts += [b.value, ""]
        elif b.kind == "note":
            parts += [f"> **Note.** {b.value}", ""]
        elif b.kind in ("table", "details"):
            if b.kind == "details":
                parts += [f"<details><summary>{b.anchor}</summary>", ""]
            parts += [_md_table(b.value), ""]
            if b.kind == "details":
                parts += ["</details>", ""]
        elif b.kind == "figure":
            f: Figure = b.value
            parts += [f"![{f.alt}]({f.path.relative_to(base).as_posix()})", "", f"*{f.caption}*", ""]
        elif b.kind == "pre":
            parts += ["```yaml", b.value.rstrip("\n"), "```", ""]
        elif b.kind == "links":
            parts += [" · ".join(f"[{n}]({p.relative_to(base).as_posix()})" for n, p in b.value), ""]
    return "\n".join(parts)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def cli_build(build: Callable[[], Path], errors: tuple[type[BaseException], ...]) -> int:
    """A document's command line: its path on stdout (exit 0), or one ``error:`` line (exit 2) for ``errors``."""
    try:
        path = build()
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


# --------------------------------------------------------------------------- folders in published text
def shown_folder(folder, cwd: str | Path | None = None) -> str:
    """How a page names a study folder: relative to ``cwd`` (default: the current directory) when under
    it, else ``outputs/<its last component>``, so that no machine's path is published."""
    text = str(folder).rstrip("/")
    if "://" not in text:
        path, here = Path(text).absolute(), Path(cwd or Path.cwd()).absolute()
        if path.is_relative_to(here):
            return path.relative_to(here).as_posix() or "."
    return f"outputs/{text.rsplit('/', 1)[-1]}"


def shown_command(command: str, cwd: str | Path | None = None) -> str:
    """``command`` (as recorded: words joined by spaces) with the folder of its ``--output``, if absolute,
    shown as :func:`shown_folder` shows it; every other word is kept as it is."""
    words = command.split(" ")
    for i, w in enumerate(words):
        if w.startswith("--output="):
            words[i] = "--output=" + _shown_if_absolute(w[len("--output="):], cwd)
        elif i > 0 and words[i - 1] == "--output":
            words[i] = _shown_if_absolute(w, cwd)
    return " ".join(words)


def _shown_if_absolute(folder: str, cwd) -> str:
    return shown_folder(folder, cwd) if folder.startswith("/") or "://" in folder else folder
