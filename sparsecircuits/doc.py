"""A document built once and written as Markdown or as HTML (reports, notebook displays).

Every string is text: the HTML writer escapes it, so corpus tokens cannot become markup.
"""

from __future__ import annotations

import html


class Doc:
    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> Doc:
        self.blocks.append(("h", level, text))
        return self

    def p(self, text: str) -> Doc:
        self.blocks.append(("p", text))
        return self

    def ul(self, items: list[str]) -> Doc:
        self.blocks.append(("ul", list(items)))
        return self

    def table(self, header: list[str], rows: list[list]) -> Doc:
        self.blocks.append(("table", [str(h) for h in header], [[_cell(c) for c in r] for r in rows]))
        return self

    def code(self, text: str) -> Doc:
        self.blocks.append(("code", text))
        return self

    def image(self, alt: str, path) -> Doc:
        """A PNG file: linked by its name beside the Markdown, embedded in the HTML so the page
        stays one self-contained file."""
        import base64
        from pathlib import Path
        path = Path(path)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.blocks.append(("image", alt, path.name, f"data:image/png;base64,{data}"))
        return self

    def link(self, text: str, href: str) -> Doc:
        self.blocks.append(("link", text, href))
        return self

    # ---------------------------------------------------------------- writers

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                out.append("#" * b[1] + " " + b[2])
            elif kind == "p":
                out.append(b[1])
            elif kind == "ul":
                out.append("\n".join(f"- {x}" for x in b[1]))
            elif kind == "table":
                header, rows = b[1], b[2]
                lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
                lines += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |"
                          for r in rows]
                out.append("\n".join(lines))
            elif kind == "code":
                out.append("```\n" + b[1].rstrip("\n") + "\n```")
            elif kind == "link":
                out.append(f"[{b[1]}]({b[2]})")
            elif kind == "image":
                out.append(f"![{b[1]}]({b[2]})")
        return "\n\n".join(out) + "\n"

    def html_body(self) -> str:
        e = html.escape
        out = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif kind == "p":
                out.append(f"<p>{e(b[1])}</p>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{e(h)}</th>" for h in b[1])
                body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>"
                               for r in b[2])
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "code":
                out.append(f"<pre><code>{e(b[1])}</code></pre>")
            elif kind == "link":
                out.append(f'<p><a href="{e(b[2], quote=True)}">{e(b[1])}</a></p>')
            elif kind == "image":
                out.append(f'<p><img src="{b[3]}" alt="{e(b[1], quote=True)}" '
                           'style="max-width:100%"></p>')
        return "\n".join(out)

    def html(self, title: str) -> str:
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
                f'style-src \'unsafe-inline\'; img-src data:"><title>{html.escape(title)}</title>'
                f"<style>{STYLE}</style></head><body>\n{self.html_body()}\n</body></html>\n")


STYLE = ("body{font:14px/1.5 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;"
         "color:#222}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;"
         "padding:3px 8px;text-align:left;vertical-align:top}th{background:#f5f5f5}"
         "pre{background:#f7f7f7;padding:.6em;overflow-x:auto}")


def _cell(c) -> str:
    if isinstance(c, float):
        return f"{c:.4g}"
    return "" if c is None else str(c)
