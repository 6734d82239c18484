"""One study report, written twice: ``README.md`` (figures linked as PNG files beside it) and a
self-contained ``README.html`` (the same content, figures embedded as base64 data URIs, no
external CSS or scripts).

Build a :class:`Report` with headings, paragraphs (light inline markdown: ``**bold**``,
``*italic*``, `` `code` ``), bullet lists, DataFrame tables and figures, then ``write(folder)``.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import outputs

_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:60rem;margin:2rem auto;
padding:0 1rem;line-height:1.5;color:#222}table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}code{background:#f3f3f3;padding:0 .2rem}
img{max-width:100%}figcaption{font-size:.9rem;color:#555}"""


def _inline_html(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![*\w])\*([^*]+)\*(?![*\w])", r"<em>\1</em>", out)
    out = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', out)
    return out


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class Report:
    """An ordered list of blocks rendered to markdown and HTML."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> "Report":
        self.blocks.append(("heading", text, level))
        return self

    def paragraph(self, text: str) -> "Report":
        self.blocks.append(("paragraph", " ".join(text.split())))
        return self

    def bullets(self, items: list[str]) -> "Report":
        self.blocks.append(("bullets", [" ".join(i.split()) for i in items]))
        return self

    def table(self, df: pd.DataFrame, caption: str | None = None) -> "Report":
        self.blocks.append(("table", df.copy(), caption))
        return self

    def figure(self, path: Path, caption: str) -> "Report":
        """``path``: a PNG already written in the report folder."""
        self.blocks.append(("figure", Path(path), caption))
        return self

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                lines += ["#" * block[2] + " " + block[1], ""]
            elif kind == "paragraph":
                lines += [block[1], ""]
            elif kind == "bullets":
                lines += [f"- {item}" for item in block[1]] + [""]
            elif kind == "table":
                df, caption = block[1], block[2]
                if caption:
                    lines += [caption, ""]
                cols = [str(c) for c in df.columns]
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cols) + " |")
                lines.append("|" + "|".join("---" for _ in cols) + "|")
                for row in df.itertuples(index=False):
                    lines.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |")
                lines.append("")
            elif kind == "figure":
                lines += [f"![{block[2]}]({block[1].name})", "", f"*{block[2]}*", ""]
        return "\n".join(lines).rstrip() + "\n"

    def to_html(self) -> str:
        parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                 f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>",
                 f"<h1>{_inline_html(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                parts.append(f"<h{block[2]}>{_inline_html(block[1])}</h{block[2]}>")
            elif kind == "paragraph":
                parts.append(f"<p>{_inline_html(block[1])}</p>")
            elif kind == "bullets":
                parts.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "table":
                df, caption = block[1], block[2]
                if caption:
                    parts.append(f"<p>{_inline_html(caption)}</p>")
                head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                               for row in df.itertuples(index=False))
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "figure":
                data = base64.b64encode(block[1].read_bytes()).decode("ascii")
                parts.append(f"<figure><img alt='{html.escape(block[2], quote=True)}' "
                             f"src='data:image/png;base64,{data}'><figcaption>"
                             f"{_inline_html(block[2])}</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"

    def write(self, folder: Path) -> tuple[Path, Path]:
        """Write ``README.md`` and ``README.html`` into ``folder`` (each atomically)."""
        folder = Path(folder)
        md, page = folder / "README.md", folder / "README.html"
        outputs.write_text(md, self.to_markdown())
        outputs.write_text(page, self.to_html())
        return md, page
