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

// ---------------------------------------------------------------- graph layout
const COL_W = 92, ROW_H = 26, TOP = 34, LEFT = 30;
const cols = [];
for (let l = 0; l < M.n_layer; l++) for (let g = 0; g < GROUPS.length; g++) cols.push([l, g]);
const used = cols.map(([l, g]) => DATA.nodes.filter(n => n.layer === l && GROUPS[g].includes(n.kind)));
const shown = cols.map((c, i) => i).filter(i => used[i].length > 0);
const pos = {};
let maxRows = 1;
shown.forEach((ci, x) => {
  const list = used[ci].slice().sort((a, b) => a.kind.localeCompare(b.kind) || a.index - b.index);
  list.forEach((n, y) => { pos[n.id] = [LEFT + x * COL_W, TOP + y * ROW_H]; });
  maxRows = Math.max(maxRows, list.length);
});
const W = LEFT * 2 + Math.max(1, shown.length) * COL_W, H = TOP + maxRows * ROW_H + 20;
const svg = sv("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, id: "circuit-svg"});
shown.forEach((ci, x) => {
  const [l, g] = cols[ci];
  const t = sv("text", {x: LEFT + x * COL_W - 10, y: 14, class: "colhead"});
  t.textContent = `L${l} ${GROUP_NAMES[g]}`;
  svg.appendChild(t);
});
const maxW = Math.max(1e-9, ...DATA.edges.filter(e => e[3] === "weight").map(e => Math.abs(e[2])));
const edgeEls = [];
for (const e of DATA.edges) {
  const a = pos[DATA.nodes[e[0]].id], b = pos[DATA.nodes[e[1]].id];
  if (!a || !b) continue;
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
const nodeEls = [];
DATA.nodes.forEach((n, i) => {
  const [x, y] = pos[n.id];
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
  title.textContent = `${n.id}: ${n.description}`;
  g.appendChild(title);
  g.addEventListener("click", () => openCard(i));
  svg.appendChild(g);
  nodeEls.push(g);
});
document.getElementById("graph").appendChild(svg);

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
  nodeEls.forEach((g, j) => g.classList.toggle("selected", j === i));
  edgeEls.forEach(p => p.classList.toggle("hl", +p.dataset.src === i || +p.dataset.dst === i));
  const card = document.getElementById("card");
  card.replaceChildren();
  card.appendChild(el("h2", {id: "card-title"}, n.id));
  card.appendChild(el("p", {}, n.description));
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
  const lit = new Set(here.map(a => a[0]));
  nodeEls.forEach((g, k) => g.classList.toggle("lit", lit.has(k)));
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
if (DATA.prompts.length) showPrompt(0);
