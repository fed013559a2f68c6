"""One self-contained HTML file that shows a circuit: a layered graph, node cards, a prompt
browser. No network, no server: it opens from disk and can be sent by e-mail.

Safety: the data travels as JSON inside a `<script type="application/json">` block with `<`,
`>` and `&` escaped, and the page puts every corpus-derived string into the document with
`textContent`, never as HTML: the corpus is code, so `</script><img onerror=...>` is a real
token sequence and must show as text.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..checkpoint import atomic_write_text, output_dir


def embed_json(data) -> str:
    """JSON that cannot close its <script> element or open another tag."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


ASSETS = Path(__file__).parent / "assets"


def render_html(data: dict, title: str | None = None) -> str:
    """The page: the template with its stylesheet, script and data inlined."""
    title = title or f"{data['meta']['task']} circuit"
    style = (ASSETS / "viewer.css").read_text()
    script = (ASSETS / "viewer.js").read_text()
    return (PAGE.replace("%TITLE%", html.escape(title)).replace("%STYLE%", style)
            .replace("%SCRIPT%", script).replace("%DATA%", embed_json(data)))


def write_viewer(data: dict, out: str | Path) -> Path:
    out = Path(out)
    output_dir(out.parent)
    atomic_write_text(out, render_html(data))
    return out


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>%TITLE%</title>
<style>%STYLE%</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <p id="summary"></p>
  <p id="legend">
    <span class="key read"></span> residual read
    <span class="key write"></span> residual write
    <span class="key q"></span> query
    <span class="key k"></span> key
    <span class="key v"></span> value
    <span class="key neuron"></span> MLP neuron
    &nbsp; edges: <span class="pos">positive</span> / <span class="neg">negative</span> weight,
    width = |weight|; dashed: query-key pair; dotted: residual path
  </p>
</header>
<main>
  <section id="graph-pane">
    <div id="filters">
      <label>node importance <input type="range" id="imp-filter" min="0" value="0">
        <span id="imp-value"></span></label>
      <label>edge |weight| <input type="range" id="edge-filter" min="0" value="0">
        <span id="edge-value"></span></label>
      <label><input type="checkbox" id="show-paths" checked> highlight the selected node's
        paths from the input to the answer</label>
      <button id="show-all" type="button">show everything</button>
      <div id="filter-counts"></div>
      <div class="hint">importance: how much the circuit's test loss rises when the node alone
        is ablated; a large circuit opens on its most important nodes</div>
    </div>
    <div id="graph"></div>
    <section id="browser">
      <h2>Prompt browser</h2>
      <label>Task example <select id="prompt-select"></select></label>
      <div id="prompt-tokens" class="tokens"></div>
      <div id="prompt-info"></div>
    </section>
  </section>
  <aside id="card"><p class="hint">Click a node to open its card.</p></aside>
</main>
<script type="application/json" id="circuit-data">%DATA%</script>
<script>%SCRIPT%</script>
</body>
</html>
"""
