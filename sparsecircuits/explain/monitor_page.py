"""The monitor's page: one self-contained HTML file (the viewer's safety rules: data as escaped
JSON, every input-derived string put in with textContent)."""

from __future__ import annotations

import html

from .viewer import ASSETS, embed_json


def render_monitor(data: dict) -> str:
    return (PAGE.replace("%TITLE%", html.escape(f"monitor: {data['meta']['run']}"))
            .replace("%SCRIPT%", (ASSETS / "monitor.js").read_text())
            .replace("%DATA%", embed_json(data)))


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>%TITLE%</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
#flagged th { cursor: pointer; background: #f4f4f4; }
tr.row:hover { background: #eef4ff; cursor: pointer; }
.tokens { font: 13px/1.8 ui-monospace, monospace; white-space: pre-wrap; margin: 0.5em 0; }
.tok { border: 1px solid #ddd; margin-right: 1px; padding: 0 1px; }
.tok.watched { outline: 2px solid #c9a100; }
tr.lit td { background: #ffe0e0; }
pre { background: #f6f6f6; padding: 0.5em; white-space: pre-wrap; }
#layout { display: flex; gap: 2em; align-items: flex-start; }
#detail { min-width: 28em; }
</style>
</head>
<body>
<h1>Circuit monitor</h1>
<p id="summary"></p>
<h2>Alerts per circuit</h2>
<table id="counts"></table>
<h2>Flagged inputs</h2>
<p>Click a column to sort, a row to see its tokens and nodes.</p>
<div id="layout"><table id="flagged"></table><div id="detail"></div></div>
<script type="application/json" id="data">%DATA%</script>
<script>%SCRIPT%</script>
</body>
</html>
"""
