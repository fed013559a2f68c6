// The monitor page: alert counts per circuit, a sortable table of flagged inputs, and for the
// chosen one its tokens (the watched position marked) and its nodes' z-scores. Every string
// from the inputs goes into the page with textContent, never as HTML.
(function () {
  const data = JSON.parse(document.getElementById("data").textContent);
  const el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  };
  const m = data.meta;
  document.getElementById("summary").textContent =
    `${m.run}: ${m.inputs} inputs, ${m.records} records over ${m.circuits.length} circuit(s)` +
    ` (${m.full ? "full mode" : "cheap mode: no circuit-alone pass"}; positions: ${m.positions}); ` +
    `${data.flagged.length} records flagged` + (m.flagged_shown < data.flagged_total ?
      ` (the ${m.flagged_shown} most anomalous of ${data.flagged_total} shown)` : "");

  const counts = document.getElementById("counts");
  const alertNames = m.alert_names;
  const head = el("tr");
  ["circuit", "records", ...alertNames].forEach((h) => head.appendChild(el("th", h)));
  counts.appendChild(head);
  for (const c of m.circuits) {
    const tr = el("tr");
    tr.appendChild(el("td", c));
    tr.appendChild(el("td", data.counts[c].records));
    alertNames.forEach((a) => tr.appendChild(el("td", data.counts[c][a] || 0)));
    counts.appendChild(tr);
  }

  const cols = [["input", "input"], ["position", "position"], ["circuit", "circuit"],
                ["alerts", "alerts"], ["engagement", "engagement"], ["share", "share"],
                ["anomaly", "anomaly"], ["node_z_max", "max |z|"]];
  const table = document.getElementById("flagged");
  let sortKey = "anomaly", sortDesc = true;
  const detail = document.getElementById("detail");

  function show(r) {
    detail.replaceChildren();
    detail.appendChild(el("h3", `${r.circuit} at token ${r.position} of ${r.input}`));
    detail.appendChild(el("p", "alerts: " + r.alerts.join(", ")));
    detail.appendChild(el("p", "the input's last tokens, shaded by how many of the circuit's " +
      "nodes fire on each (hover for which); the watched token is outlined:"));
    const toks = el("div", null, "tokens");
    const most = Math.max(1, ...r.lit.map((l) => l.length));
    r.tokens.forEach((t, i) => {
      const s = el("span", t, i === r.tokens.length - 1 ? "tok watched" : "tok");
      const n = r.lit[i].length;
      if (n) s.style.background = `rgba(229, 57, 53, ${(0.15 + 0.6 * n / most).toFixed(2)})`;
      s.title = n ? `${n} node(s): ${r.lit[i].join(", ")}` : "no circuit node fires";
      toks.appendChild(s);
    });
    detail.appendChild(toks);
    const facts = [["model's logit difference", r.diff_model],
                   ["circuit alone", r.diff_circuit], ["share", r.share],
                   ["engagement (reference)", `${r.engagement} (${r.engagement_reference})`],
                   ["anomaly (1 = reference 99th percentile)", r.anomaly]];
    const ft = el("table");
    facts.forEach(([k, v]) => {
      if (v === undefined) return;
      const tr = el("tr"); tr.appendChild(el("th", k)); tr.appendChild(el("td", v));
      ft.appendChild(tr);
    });
    detail.appendChild(ft);
    const zt = el("table", null, "nodes");
    const zh = el("tr"); zh.appendChild(el("th", "node")); zh.appendChild(el("th", "z"));
    zt.appendChild(zh);
    Object.entries(r.node_z).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1])).forEach(([n, z]) => {
      const tr = el("tr", null, Math.abs(z) > 3 ? "lit" : "");
      tr.appendChild(el("td", n)); tr.appendChild(el("td", z));
      zt.appendChild(tr);
    });
    detail.appendChild(el("p", "the circuit's nodes, by |robust z-score| against the task's test prompts:"));
    detail.appendChild(zt);
    detail.appendChild(el("p", "to see node by node why the model answers as it does:"));
    detail.appendChild(el("pre", r.trace));
  }

  function render() {
    table.replaceChildren();
    const tr = el("tr");
    cols.forEach(([k, label]) => {
      const th = el("th", label + (k === sortKey ? (sortDesc ? " ▼" : " ▲") : ""));
      th.addEventListener("click", () => {
        sortDesc = k === sortKey ? !sortDesc : true;
        sortKey = k;
        render();
      });
      tr.appendChild(th);
    });
    table.appendChild(tr);
    const rows = data.flagged.slice().sort((a, b) => {
      const x = a[sortKey], y = b[sortKey];
      const c = (x === null || x === undefined) ? -1 : (y === null || y === undefined) ? 1 :
        (typeof x === "number" ? x - y : String(x).localeCompare(String(y)));
      return sortDesc ? -c : c;
    });
    rows.forEach((r) => {
      const row = el("tr", null, "row");
      cols.forEach(([k]) => row.appendChild(el("td", Array.isArray(r[k]) ? r[k].join(", ") : r[k])));
      row.addEventListener("click", () => show(r));
      table.appendChild(row);
    });
  }
  render();
  if (data.flagged.length) show(data.flagged[0]);
})();
