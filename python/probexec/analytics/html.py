"""A self-contained HTML page: tables, and figures embedded as data URIs, so the one file can be
mailed or archived and still shows everything. A small script marks the page once loaded
(`data-status`, `data-broken-images`, `data-errors` on <body>), which a headless browser reads
to check that the page renders."""

from __future__ import annotations

import base64
import csv
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { max-width: 100%; overflow-x: auto; } .note { color: #555; font-size: 0.85em; }
figure { display: inline-block; margin: 0.4em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.8em; color: #444; } .graph img { max-width: 100%; }
code { font-size: 0.9em; }
"""

_CHECK = """
<script>
(function () {
  var errors = 0;
  window.addEventListener('error', function () { errors += 1; document.body.dataset.errors = String(errors); }, true);
  window.addEventListener('load', function () {
    var broken = 0, imgs = document.images;
    for (var i = 0; i < imgs.length; i++) { if (!imgs[i].complete || imgs[i].naturalWidth === 0) broken += 1; }
    document.body.dataset.images = String(imgs.length);
    document.body.dataset.brokenImages = String(broken);
    document.body.dataset.errors = String(errors);
    document.body.dataset.status = 'ok';
  });
})();
</script>
"""


def fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4g}"
    return str(v)


def table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, limit: int | None = None
) -> str:
    if not rows:
        return '<p class="note">(none)</p>'
    cols = list(columns or rows[0].keys())
    shown = rows if limit is None else rows[:limit]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in shown:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cls = ' class="num"' if isinstance(v, int | float) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{html.escape(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = (
        f'<p class="note">{len(rows) - len(shown)} more rows in the CSV file.</p>'
        if len(shown) < len(rows)
        else ""
    )
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>{more}'


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        for c in r:
            if c not in cols:
                cols.append(c)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: (repr(v) if isinstance(v, float) else v) for c, v in r.items()})
    return path


def image(path: Path, caption: str = "", css_class: str = "") -> str:
    """An <img> with the file's bytes inlined (PNG or SVG)."""
    mime = "image/svg+xml" if path.suffix == ".svg" else "image/png"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    cls = f' class="{css_class}"' if css_class else ""
    return f'<figure{cls}><img src="data:{mime};base64,{data}" alt="{html.escape(caption or path.name)}">{cap}</figure>'


class Page:
    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def h(self, level: int, text: str) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def p(self, text: str, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def write(self, path: Path) -> Path:
        doc = (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>\n"
            f"<body>{_CHECK}\n<h1>{html.escape(self.title)}</h1>\n"
            + "\n".join(self.parts)
            + "\n</body></html>\n"
        )
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(doc, encoding="utf-8")
        tmp.replace(path)
        return path
