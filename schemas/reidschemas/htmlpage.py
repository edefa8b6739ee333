"""The pieces both HTML reports share (``reidprep report``, ``reidtrain report``): escaping, data URLs, the page.

A report is one self-contained file: no scripts, no external resources (images are ``data:`` URLs), inline CSS.
The standard library's ``html.escape`` does the escaping; a template engine would add a dependency for two pages.
"""

from __future__ import annotations

import base64
from html import escape
from typing import Any

__all__ = ["BASE_CSS", "data_url", "esc", "page"]

BASE_CSS = """
* { box-sizing: border-box; }
body { margin: 0; background: #f3f4f6; color: #1f2937; font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
  Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 20px 20px 40px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 0 0 10px; }
h3 { font-size: 14px; margin: 12px 0 6px; color: #374151; }
.sub { color: #6b7280; font-size: 12.5px; word-break: break-all; }
section { background: #fff; border: 1px solid #e5e7eb; border-radius: 10px; padding: 16px 18px; margin-top: 16px; }
.row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.row > div { flex: 1 1 300px; min-width: 0; }
table { border-collapse: collapse; font-size: 13px; }
th, td { text-align: left; padding: 4px 10px 4px 0; border-bottom: 1px solid #f0f1f3; vertical-align: top; }
th { color: #6b7280; font-weight: 600; font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; padding-right: 14px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.badge.ok { background: #dcfce7; color: #166534; }
.badge.warn { background: #fef3c7; color: #92400e; }
.badge.off { background: #e5e7eb; color: #4b5563; }
.badge.err { background: #fee2e2; color: #991b1b; }
.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; word-break: break-all; }
.none { color: #6b7280; font-style: italic; }
"""


def esc(value: Any) -> str:
    """``value`` as text safe inside an element or a quoted attribute."""
    return escape(str(value), quote=True)


def data_url(data: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,...``: a file embedded in the page."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def page(title: str, body: str, css: str = "") -> str:
    """The whole document: ``BASE_CSS`` then ``css`` inline, ``body`` inside ``<main>``; ``title`` is escaped."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{BASE_CSS}{css}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )
