"use strict";
const DATA = JSON.parse(document.getElementById("circuit-data").textContent);
const SVGNS = "http://www.w3.org/2000/svg";
const GROUPS = [["attn.in"], ["attn.q", "attn.k", "attn.v"], ["attn.out"], ["mlp.in"],
                ["mlp.neuron"], ["mlp.out"]];
const GROUP_NAMES = ["attn in", "q k v", "attn out", "mlp in", "neurons", "mlp out"];
const KIND_CLASS = {"attn.in": "read", "mlp.in": "read", "attn.out": "write", "mlp.out": "write",
                    "attn.q": "q", "attn.k": "k", "attn.v": "v", "mlp.neuron": "neuron"};
const COLORS = {read: "#4a7fd4", write: "#e08a2c", q: "#3a9d5d", k: "#8e5bc4", v: "#1a9a9a",
                neuron: "#c94a4a"};

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function sv(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
function fmt(x, d) { return x === null || x === undefined ? "n/a" : Number(x).toFixed(d === undefined ? 3 : d); }
function shade(v, peak) {
  if (!peak || !v) return "transparent";
  const a = Math.min(1, Math.abs(v) / peak);
  return v > 0 ? `rgba(34, 98, 198, ${a * 0.75})` : `rgba(198, 40, 40, ${a * 0.75})`;
}
function shortName(n) {
  const k = n.kind.split(".")[1];
  return (k === "in" || k === "out" ? (n.kind.startsWith("attn") ? "a" : "m") + k : k) + n.index;
}

// ---------------------------------------------------------------- header
const M = DATA.meta;
document.getElementById("title").textContent = `${M.task}: ${M.description}`;
document.getElementById("summary").textContent =
  `${M.nodes} nodes, ${M.edges} edges · val loss ${fmt(M.loss)} calibrated, ` +
  `${fmt(M.loss_uncalibrated)} uncalibrated (temperature scale ${fmt(M.calibration.scale, 2)}, ` +
  `bound ${fmt(M.calibration.bound, 2)}) · target ${M.target_loss} · ${M.ablation} ablation` +
  (M.freeze_norm ? ", frozen norm" : "") + ` · model ${M.model_hash}, ${M.n_layer} layers, ` +
  `d_model ${M.d_model}`;

// ---------------------------------------------------------------- filters
// A large circuit starts on the view that fits one screen: its FIT_NODES most important
// nodes (importance: how much the circuit's test loss rises when the node alone is ablated)
// and at most FIT_EDGES of the heaviest weight edges among them. Both sliders run over the
// values that occur, so every step changes what is shown; step 0 shows everything.
const FIT_NODES = 40, FIT_EDGES = 150;
const ascending = xs => [...new Set(xs)].sort((a, b) => a - b);
const IMP_STEPS = [null, ...ascending(DATA.nodes.map(n => n.ablation_delta).filter(v => v !== null))];
const EDGE_STEPS = [null, ...ascending(DATA.edges.filter(e => e[3] === "weight").map(e => Math.abs(e[2])))];
const impSlider = document.getElementById("imp-filter");
const edgeSlider = document.getElementById("edge-filter");
impSlider.max = IMP_STEPS.length - 1;
edgeSlider.max = EDGE_STEPS.length - 1;

function nodeShown(n) {
  const t = IMP_STEPS[+impSlider.value];
  return t === null || (n.ablation_delta !== null && n.ablation_delta >= t);
}
function edgeShown(e, vis) {
  if (!vis[e[0]] || !vis[e[1]]) return false;
  const t = EDGE_STEPS[+edgeSlider.value];
  return e[3] !== "weight" || t === null || Math.abs(e[2]) >= t;
}
function firstStep(steps, slider, count, most) {  // the first step showing at most `most`
  for (let i = 0; i < steps.length; i++) { slider.value = i; if (count() <= most) return; }
}
firstStep(IMP_STEPS, impSlider, () => DATA.nodes.filter(nodeShown).length, FIT_NODES);
firstStep(EDGE_STEPS, edgeSlider, () => {
  const vis = DATA.nodes.map(nodeShown);
  return DATA.edges.filter(e => edgeShown(e, vis)).length;
}, FIT_EDGES);

// ---------------------------------------------------------------- paths through a node
// Upstream: every node with a path of edges into it (back to the residual reads of the
// input tokens); downstream: every node it reaches (on to the writes that make the answer).
// A query-key pair works together, so its link is followed both ways.
const succ = DATA.nodes.map(() => []), pred = DATA.nodes.map(() => []);
for (const [a, b, , kind] of DATA.edges) {
  succ[a].push(b); pred[b].push(a);
  if (kind === "qk") { succ[b].push(a); pred[a].push(b); }
}
function reach(start, next) {
  const seen = new Set([start]), todo = [start];
  while (todo.length) for (const j of next[todo.pop()]) if (!seen.has(j)) { seen.add(j); todo.push(j); }
  return seen;
}
function pathsThrough(i) {
  const up = reach(i, pred), down = reach(i, succ);
  return {up, down, all: new Set([...up, ...down])};
}

// ---------------------------------------------------------------- graph layout
const COL_W = 92, ROW_H = 26, TOP = 34, LEFT = 30;
const cols = [];
for (let l = 0; l < M.n_layer; l++) for (let g = 0; g < GROUPS.length; g++) cols.push([l, g]);
const colOf = DATA.nodes.map(n => cols.findIndex(([l, g]) => n.layer === l && GROUPS[g].includes(n.kind)));

// Columns by layer and site; inside a column, nodes ordered by the mean row of their shown
// neighbours (a sweep left to right, then right to left), which uncrosses most edges.
function layout(vis, shownEdges) {
  const byCol = cols.map(() => []);
  DATA.nodes.forEach((n, i) => { if (vis[i]) byCol[colOf[i]].push(i); });
  const used = byCol.map((c, i) => i).filter(i => byCol[i].length);
  for (const c of used) byCol[c].sort((a, b) => DATA.nodes[a].kind.localeCompare(DATA.nodes[b].kind) ||
                                               DATA.nodes[a].index - DATA.nodes[b].index);
  const nbr = DATA.nodes.map(() => []);
  for (const [a, b] of shownEdges) { nbr[a].push(b); nbr[b].push(a); }
  const row = {};
  used.forEach(c => byCol[c].forEach((i, y) => { row[i] = y; }));
  const sweep = (order, before) => {
    for (const c of order) {
      const key = i => {
        const ys = nbr[i].filter(j => before(colOf[j], c)).map(j => row[j]);
        return ys.length ? ys.reduce((s, y) => s + y, 0) / ys.length : row[i];
      };
      const keyed = byCol[c].map(i => [key(i), row[i], i]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      byCol[c] = keyed.map(k => k[2]);
      byCol[c].forEach((i, y) => { row[i] = y; });
    }
  };
  sweep(used, (a, b) => a < b);
  sweep(used.slice().reverse(), (a, b) => a > b);
  const pos = {};
  used.forEach((c, x) => byCol[c].forEach((i, y) => { pos[i] = [LEFT + x * COL_W, TOP + y * ROW_H]; }));
  const rows = Math.max(1, ...used.map(c => byCol[c].length));
  return {pos, used, W: LEFT * 2 + Math.max(1, used.length) * COL_W, H: TOP + rows * ROW_H + 20};
}

const maxW = Math.max(1e-9, ...DATA.edges.filter(e => e[3] === "weight").map(e => Math.abs(e[2])));
let edgeEls = [], nodeEls = [];          // what is drawn now, with the index of each
let selected = null, lit = new Set();

function render() {
  const vis = DATA.nodes.map(nodeShown);
  const shownEdges = DATA.edges.filter(e => edgeShown(e, vis));
  const {pos, used, W, H} = layout(vis, shownEdges);
  const svg = sv("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, id: "circuit-svg"});
  used.forEach((c, x) => {
    const [l, g] = cols[c];
    const t = sv("text", {x: LEFT + x * COL_W - 10, y: 14, class: "colhead"});
    t.textContent = `L${l} ${GROUP_NAMES[g]}`;
    svg.appendChild(t);
  });
  edgeEls = [];
  for (const e of shownEdges) {
    const a = pos[e[0]], b = pos[e[1]];
    const p = sv("path", {class: "edge", d: `M${a[0]},${a[1]} C${(a[0] + b[0]) / 2},${a[1]} ${(a[0] + b[0]) / 2},${b[1]} ${b[0]},${b[1]}`});
    if (e[3] === "weight") {
      p.setAttribute("stroke", e[2] >= 0 ? "#2262c6" : "#c62828");
      p.setAttribute("stroke-width", (0.6 + 3.4 * Math.abs(e[2]) / maxW).toFixed(2));
    } else {
      p.setAttribute("stroke", e[3] === "qk" ? "#8e5bc4" : "#aaa");
      p.setAttribute("stroke-dasharray", e[3] === "qk" ? "5,3" : "1,3");
      p.setAttribute("stroke-width", "1.2");
    }
    const title = sv("title");
    title.textContent = `${DATA.nodes[e[0]].id} → ${DATA.nodes[e[1]].id}` +
      (e[3] === "weight" ? `: ${e[2]}` : ` (${e[3]} link)`);
    p.appendChild(title);
    p.dataset.src = e[0]; p.dataset.dst = e[1];
    svg.appendChild(p);
    edgeEls.push(p);
  }
  nodeEls = [];
  DATA.nodes.forEach((n, i) => {
    if (!vis[i]) return;
    const [x, y] = pos[i];
    const g = sv("g", {class: "node", "data-i": i, transform: `translate(${x},${y})`});
    const cls = KIND_CLASS[n.kind];
    let shape;
    if (cls === "read" || cls === "write") shape = sv("circle", {r: 7});
    else if (cls === "neuron") shape = sv("rect", {x: -6, y: -6, width: 12, height: 12, transform: "rotate(45)"});
    else shape = sv("rect", {x: -6.5, y: -6.5, width: 13, height: 13});
    shape.setAttribute("fill", COLORS[cls]);
    g.appendChild(shape);
    const label = sv("text", {x: 10, y: 3});
    label.textContent = shortName(n);
    g.appendChild(label);
    const title = sv("title");
    title.textContent = `${n.id}: ${n.description}` +
      (n.ablation_delta === null ? "" : ` (importance ${fmt(n.ablation_delta)})`);
    g.appendChild(title);
    g.addEventListener("click", () => openCard(i));
    svg.appendChild(g);
    nodeEls.push(g);
  });
  document.getElementById("graph").replaceChildren(svg);
  const t = IMP_STEPS[+impSlider.value], w = EDGE_STEPS[+edgeSlider.value];
  document.getElementById("imp-value").textContent = t === null ? "all nodes" : `≥ ${fmt(t, 4)}`;
  document.getElementById("edge-value").textContent = w === null ? "all edges" : `≥ ${fmt(w, 4)}`;
  document.getElementById("filter-counts").textContent =
    `showing ${nodeEls.length} of ${DATA.nodes.length} nodes, ${edgeEls.length} of ` +
    `${DATA.edges.length} edges` + (nodeEls.length < DATA.nodes.length ?
      " (the rest are hidden by the filters, not pruned)" : "");
  mark();
}

// The classes that show the selection, its paths and the nodes lit by the prompt browser.
function mark() {
  const paths = selected !== null && document.getElementById("show-paths").checked ? pathsThrough(selected) : null;
  for (const g of nodeEls) {
    const i = +g.dataset.i;
    g.classList.toggle("selected", i === selected);
    g.classList.toggle("lit", lit.has(i));
    g.classList.toggle("onpath", !!paths && paths.all.has(i));
    g.classList.toggle("dim", !!paths && !paths.all.has(i));
  }
  for (const p of edgeEls) {
    const a = +p.dataset.src, b = +p.dataset.dst;
    const on = !!paths && ((paths.up.has(a) && paths.up.has(b)) || (paths.down.has(a) && paths.down.has(b)));
    p.classList.toggle("hl", selected !== null && (a === selected || b === selected));
    p.classList.toggle("onpath", on);
    p.classList.toggle("dim", !!paths && !on);
  }
}

impSlider.addEventListener("input", render);
edgeSlider.addEventListener("input", render);
document.getElementById("show-paths").addEventListener("change", mark);
document.getElementById("show-all").addEventListener("click", () => {
  impSlider.value = 0; edgeSlider.value = 0; render();
});

// ---------------------------------------------------------------- node card
function tokenLine(tokens, acts, at, peak) {
  const div = el("div", {class: "tokens"});
  tokens.forEach((t, j) => {
    const s = el("span", {class: "tok" + (j === at ? " at" : "")}, t);
    s.style.background = shade(acts[j], peak);
    s.title = `${JSON.stringify(t)}: ${fmt(acts[j])}`;
    div.appendChild(s);
  });
  return div;
}
function nodeLink(id) {
  const i = DATA.nodes.findIndex(n => n.id === id);
  const a = el("span", {class: "link"}, id);
  if (i >= 0) a.addEventListener("click", () => openCard(i));
  return a;
}
function openCard(i) {
  const n = DATA.nodes[i];
  selected = i;
  mark();
  const card = document.getElementById("card");
  card.replaceChildren();
  card.appendChild(el("h2", {id: "card-title"}, n.id));
  card.appendChild(el("p", {}, n.description));
  const paths = pathsThrough(i);
  card.appendChild(el("p", {id: "card-paths"}, `on paths from the input to the answer: ` +
    `${paths.up.size - 1} nodes upstream, ${paths.down.size - 1} downstream` +
    (nodeShown(n) ? "" : " · hidden by the importance filter")));
  const t = el("table");
  const rows = [["site", n.site], ["largest |activation|", fmt(n.max_abs)],
                ["active on", `${fmt(100 * n.active_frac, 1)}% of sampled tokens`],
                ["loss change if ablated alone", n.ablation_delta === null ? "not measured" :
                 (n.ablation_delta >= 0 ? "+" : "") + fmt(n.ablation_delta)]];
  for (const [k, v] of rows) { const r = el("tr"); r.appendChild(el("th", {}, k)); r.appendChild(el("td", {}, v)); t.appendChild(r); }
  card.appendChild(t);
  card.appendChild(el("h3", {}, "On the task (mean at the last token)"));
  const peak = Math.max(1e-9, Math.abs(n.task.clean), Math.abs(n.task.corrupt));
  for (const kind of ["clean", "corrupt"]) {
    const v = n.task[kind];
    const row = el("div", {});
    row.appendChild(el("span", {}, `${kind} prompts (want ${JSON.stringify(kind === "clean" ? M.example.target : M.example.alt)}): ${fmt(v)} `));
    const bar = el("span", {class: "bar"});
    bar.style.width = `${Math.round(80 * Math.abs(v) / peak)}px`;
    bar.style.background = v >= 0 ? "#2262c6" : "#c62828";
    row.appendChild(bar);
    card.appendChild(row);
  }
  card.appendChild(el("h3", {}, "Strongest tokens"));
  card.appendChild(el("p", {}, n.top_tokens.map(([tok, c]) => `${JSON.stringify(tok)} ×${c}`).join("   ") || "none"));
  card.appendChild(el("h3", {}, "Top-activating contexts (validation corpus)"));
  if (!n.contexts.length) card.appendChild(el("p", {class: "hint"}, "never active on the sampled text"));
  for (const c of n.contexts) card.appendChild(tokenLine(c.tokens, c.acts, c.at, n.max_abs));
  for (const [name, list] of [["Edges in", n.edges_in], ["Edges out", n.edges_out]]) {
    card.appendChild(el("h3", {}, `${name} (${list.length})`));
    const tb = el("table");
    for (const [other, w] of list) {
      const r = el("tr");
      const td = el("td"); td.appendChild(nodeLink(other)); r.appendChild(td);
      r.appendChild(el("td", {class: w >= 0 ? "pos" : "neg"}, fmt(w, 4)));
      tb.appendChild(r);
    }
    card.appendChild(tb);
  }
}

// ---------------------------------------------------------------- prompt browser
const select = document.getElementById("prompt-select");
DATA.prompts.forEach((p, i) => {
  select.appendChild(el("option", {value: i}, `pair ${p.pair + 1}, ${p.kind} (wants ${JSON.stringify(p.right)})`));
});
function showPrompt(i) {
  const p = DATA.prompts[i];
  const box = document.getElementById("prompt-tokens");
  box.replaceChildren();
  const counts = p.tokens.map(() => 0);
  for (const [, t] of p.active) counts[t] += 1;
  const most = Math.max(1, ...counts);
  p.tokens.forEach((t, j) => {
    const s = el("span", {class: "tok clickable"}, t);
    s.style.background = counts[j] ? `rgba(245, 180, 0, ${0.15 + 0.6 * counts[j] / most})` : "transparent";
    s.title = `${counts[j]} circuit nodes active`;
    s.addEventListener("click", () => pickToken(i, j, s));
    box.appendChild(s);
  });
  pickToken(i, p.tokens.length - 1, box.lastChild);
}
function pickToken(i, j, span) {
  const p = DATA.prompts[i];
  document.querySelectorAll("#prompt-tokens .tok").forEach(s => s.classList.remove("picked"));
  if (span) span.classList.add("picked");
  const here = p.active.filter(a => a[1] === j);
  lit = new Set(here.map(a => a[0]));
  mark();
  const info = document.getElementById("prompt-info");
  info.replaceChildren();
  info.appendChild(el("p", {}, `token ${j} ${JSON.stringify(p.tokens[j])}: ${here.length} circuit nodes active` +
    (j === p.tokens.length - 1 ? ` (the model should say ${JSON.stringify(p.right)}, not ${JSON.stringify(p.wrong)})` : "")));
  const tb = el("table");
  for (const [k, , v] of here) {
    const r = el("tr");
    const td = el("td"); td.appendChild(nodeLink(DATA.nodes[k].id)); r.appendChild(td);
    r.appendChild(el("td", {class: v >= 0 ? "pos" : "neg"}, fmt(v)));
    tb.appendChild(r);
  }
  info.appendChild(tb);
}
select.addEventListener("change", () => showPrompt(+select.value));
render();
if (DATA.prompts.length) showPrompt(0);
