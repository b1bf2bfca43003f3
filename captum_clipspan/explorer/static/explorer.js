/* clipspan explorer: renders window.EXPLORER_DATA (written by captum_clipspan.explore).
 * Plain JavaScript, no libraries, nothing fetched: every view is built from the data script,
 * and navigation is by URL hash (#/, #/head/L.H, #/image/ROW, #/neurons, #/neuron/L.N), which
 * works under file://. */
"use strict";

const D = window.EXPLORER_DATA;
const view = document.getElementById("view");
const tooltip = document.getElementById("tooltip");
const HEAD_INDEX = new Map();
const NEURON_INDEX = new Map();  // "L.N" -> [layer entry, neuron entry]
const NEURONS_OF_IMAGE = new Map();  // cache row -> ["L.N", ...] whose top images include it
const NEURON_ROWS = 300;  // neurons listed per layer before "show all"
const state = { score: 0, query: "" };

/* ---------- small helpers ---------- */

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e4)) return value.toExponential(1);
  return value.toFixed(magnitude >= 100 ? 1 : magnitude >= 10 ? Math.min(digits, 2) : digits);
}

function signed(value, digits = 3) {
  return (value > 0 ? "+" : "") + fmt(value, digits);
}

function decodeInt8(text) {
  const bytes = atob(text);
  const out = new Int8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = (bytes.charCodeAt(i) << 24) >> 24;
  return out;
}

function headName(head) { return `L${head.layer}.H${head.head}`; }
function headLink(key) { return `#/head/${key}`; }
function imageLink(row, key) { return `#/image/${row}` + (key ? `?head=${key}` : ""); }

/* ---------- colour scales ---------- */

// Viridis, sampled at 9 stops (for the grid's scores: low = dark purple, high = yellow).
const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 73, 137], [49, 104, 142], [38, 130, 142],
                 [31, 158, 137], [53, 183, 121], [110, 206, 88], [253, 231, 37]];

function viridis(t) {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const c = VIRIDIS[i].map((v, j) => Math.round(v + f * (VIRIDIS[i + 1][j] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function viridisGradient() {
  return `linear-gradient(to right, ${VIRIDIS.map((c) => `rgb(${c})`).join(",")})`;
}

// Diverging: blue (negative) - white (0) - red (positive), for similarities.
function diverging(t) {
  const x = Math.max(-1, Math.min(1, t));
  const base = x >= 0 ? [178, 24, 43] : [33, 102, 172];
  const a = Math.abs(x);
  const c = base.map((v) => Math.round(255 + a * (v - 255)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// Patch maps: red where a patch pushes the head's output toward the text, blue away;
// transparent at zero so the image shows through.
const MAP_RED = [215, 25, 28];
const MAP_BLUE = [44, 123, 182];
const MAP_ALPHA = 0.85;

function mapColour(v) {
  const c = v >= 0 ? MAP_RED : MAP_BLUE;
  return `rgba(${c[0]},${c[1]},${c[2]},${(MAP_ALPHA * Math.min(1, Math.abs(v))).toFixed(3)})`;
}

function mapGradient() {
  const blue = `rgba(${MAP_BLUE},${MAP_ALPHA})`;
  const red = `rgba(${MAP_RED},${MAP_ALPHA})`;
  return `linear-gradient(to right, ${blue}, rgba(255,255,255,0) 50%, ${red}), ` +
         "repeating-conic-gradient(#ddd 0% 25%, #fff 0% 50%) 0 0 / 8px 8px";
}

function legend(low, high, gradient, note, short) {
  return el("div", { class: "legend" },
    el("span", { text: low }),
    el("div", { class: "bar" + (short ? " short" : ""), style: `background:${gradient}` }),
    el("span", { text: high }),
    note ? el("span", { class: "help", text: note }) : null);
}

function mapLegend(scale) {
  return legend(`−${fmt(scale)}`, `+${fmt(scale)}`, mapGradient(), null, true);
}

const MAP_HELP = "Patch maps (the coloured squares on the images): each patch's part of the " +
  "head's direct effect, projected on the text's direction, in cosine-similarity units. Red: " +
  "the patch pushes the head's output toward the text; blue: away; transparent: 0. One colour " +
  "scale per text (stated beside it), shared by all of that text's images; opacity grows " +
  "linearly with the value up to the scale's end.";

/* ---------- thumbnails with patch maps ---------- */

function drawMap(canvas, codes, offset, scaleNote) {
  const [gh, gw] = D.grid;
  canvas.width = gw;
  canvas.height = gh;
  const ctx = canvas.getContext("2d");
  for (let y = 0; y < gh; y++) {
    for (let x = 0; x < gw; x++) {
      ctx.fillStyle = mapColour(codes[offset + y * gw + x] / 127);
      ctx.fillRect(x, y, 1, 1);
    }
  }
  canvas.title = scaleNote;
}

// A thumbnail of cache row `row`, with head k's map along its text j when the site has it.
function thumb(row, k, j, caption, options = {}) {
  const image = D.images[row];
  const pic = el("div", { class: "pic" },
    el("img", { src: image.thumb, alt: `image ${row}`, loading: "lazy" }));
  const head = k === null || k === undefined ? null : D.heads[k];
  const codes = head && image.maps && image.maps[k];
  if (codes && D.grid) {
    const decoded = decodeInt8(codes);
    const canvas = el("canvas", { class: "overlay" });
    drawMap(canvas, decoded, j * D.grid[0] * D.grid[1],
      `${headName(head)}, "${head.texts[j]}": ±${fmt(head.map_scale[j])}`);
    pic.append(canvas);
  }
  const link = options.link || imageLink(row, head ? head.key : null);
  pic.addEventListener("click", () => { location.hash = link; });
  const figure = el("figure", { class: "thumb" + (options.big ? " big" : "") +
                                       (options.selected ? " selected" : ""),
                                "data-row": row }, pic,
    el("figcaption", { title: caption, text: caption }));
  if (head && !codes && D.grid) figure.append(el("div", { class: "nomap", text: "no map" }));
  return figure;
}

/* ---------- the head grid ---------- */

function scoreValue(score, layerRow, head) {
  const v = score.values[layerRow][head];
  return v === null ? NaN : v;
}

function scoreRange(score) {
  const values = score.values.flat().filter((v) => v !== null);
  if (!values.length) return [0, 1];
  let low = Math.min(...values);
  let high = Math.max(...values);
  if (low === high) { low -= 1; high += 1; }
  return [low, high];
}

function matchingText(head, query) {
  if (!query) return null;
  const needle = query.toLowerCase();
  return head.texts.findIndex((t) => t.toLowerCase().includes(needle));
}

function highlight(text, query) {
  const at = query ? text.toLowerCase().indexOf(query.toLowerCase()) : -1;
  if (at < 0) return [text];
  return [text.slice(0, at), el("mark", { text: text.slice(at, at + query.length) }),
          text.slice(at + query.length)];
}

function showTooltip(event, nodes) {
  tooltip.replaceChildren(...nodes);
  tooltip.hidden = false;
  const x = Math.min(event.clientX + 14, window.innerWidth - tooltip.offsetWidth - 8);
  const y = Math.min(event.clientY + 14, window.innerHeight - tooltip.offsetHeight - 8);
  tooltip.style.left = `${x}px`;
  tooltip.style.top = `${y}px`;
}

function hideTooltip() { tooltip.hidden = true; }

function headTooltip(head, score, value) {
  const title = `${headName(head)}: ${fmt(value)} ${score.unit} (${score.name})`;
  const nodes = [el("b", { text: title })];
  const texts = head.texts.slice(0, 5);
  nodes.push(el("div", { text: "First TextSpan texts (cumulative variance explained):" }));
  nodes.push(el("ol", {}, texts.map((t, j) => el("li", {}, highlight(t, state.query),
    ` (${fmt(head.explained[j], 1)}%)`))));
  nodes.push(el("div", { class: "help", text: "Click to open the head." }));
  return nodes;
}

// A layers x heads table. colour(layerRow, head) -> [background, text, value label].
function gridTable(options) {
  const table = el("table", { class: "grid" + (options.mini ? " mini" : "") });
  const corner = options.mini ? "" : "layer ↓ / head →";
  const header = el("tr", {}, el("th", { class: "axis", text: corner }));
  for (let h = 0; h < D.n_heads; h++) header.append(el("th", { text: String(h) }));
  table.append(header);
  D.layers.forEach((layer, layerRow) => {
    const tr = el("tr", {}, el("th", { text: options.mini ? `L${layer}` : `layer ${layer}` }));
    for (let h = 0; h < D.n_heads; h++) {
      const key = `${layer}.${h}`;
      const k = HEAD_INDEX.has(key) ? HEAD_INDEX.get(key) : null;
      tr.append(options.cell(layerRow, h, key, k));
    }
    table.append(tr);
  });
  return table;
}

function renderGrid() {
  hideTooltip();
  const score = D.scores[state.score];
  const [low, high] = scoreRange(score);
  const select = el("select", { id: "score-select", onchange: (e) => {
    state.score = Number(e.target.value);
    renderGrid();
  } }, D.scores.map((s, i) => el("option", { value: i, selected: i === state.score ? "" : null,
                                              text: `${s.name} (${s.unit})` })));
  const search = el("input", { id: "search", type: "search", value: state.query,
                               placeholder: "e.g. red, circle, stripes", size: 26 });
  const count = el("span", { id: "match-count", class: "help" });
  const matches = el("ul", { class: "matches", id: "matches" });
  const neuronNote = D.neurons && D.neurons.length ?
    el("p", { class: "help", id: "neuron-note" }) : null;
  const cells = [];
  const table = gridTable({ cell: (layerRow, h, key, k) => {
    const value = scoreValue(score, layerRow, h);
    const td = el("td", { class: "cell", "data-head": key });
    if (k === null || Number.isNaN(value)) {
      td.classList.add("none");
      td.textContent = "–";
      td.title = k === null ? "no TextSpan result for this head" : "no value";
      if (k === null) return td;
    } else {
      const t = (value - low) / (high - low);
      td.style.background = viridis(t);
      td.style.color = t > 0.6 ? "#111" : "#fff";
      td.textContent = fmt(value, 1);
    }
    td.addEventListener("mousemove", (e) => showTooltip(e, headTooltip(D.heads[k], score, value)));
    td.addEventListener("mouseleave", hideTooltip);
    td.addEventListener("click", () => { hideTooltip(); location.hash = headLink(key); });
    cells.push([td, D.heads[k]]);
    return td;
  } });

  function applySearch() {
    state.query = search.value.trim();
    matches.replaceChildren();
    let found = 0;
    for (const [td, head] of cells) {
      const j = matchingText(head, state.query);
      td.classList.toggle("match", Boolean(state.query) && j >= 0);
      td.classList.toggle("dim", Boolean(state.query) && j < 0);
      if (state.query && j >= 0) {
        found += 1;
        matches.append(el("li", {}, el("a", { href: headLink(head.key), text: headName(head) }),
          ": ", highlight(head.texts[j], state.query),
          ` (text ${j + 1} of ${head.texts.length})`));
      }
    }
    count.textContent = state.query ?
      `${found} of ${cells.length} heads have a text containing “${state.query}”.` :
      "Type a word to keep only the heads with a TextSpan text containing it.";
    if (neuronNote) {
      const total = allNeurons().length;
      const hits = allNeurons().filter(([layer, n]) => neuronMatch(layer, n, state.query) >= 0);
      neuronNote.replaceChildren(state.query ?
        `${hits.length} of ${total} MLP neurons have a text containing “${state.query}”: ` :
        `${total} MLP neurons are read in words too: `,
        el("a", { href: "#/neurons", id: "neuron-link", text: "open the neuron list" }), ".");
    }
  }
  search.addEventListener("input", applySearch);

  view.replaceChildren(
    el("h1", { text: `Attention heads of ${D.model || "the model"}` }),
    el("p", { class: "lead" },
      `Each cell is one attention head (row: layer, column: head index). CLIP's image ` +
      `embedding is an exact sum of direct effects, one per head, MLP and embedding; ` +
      `the colour shows the chosen score of the head's direct effect over ` +
      `${D.n_images.toLocaleString()} images. Hover a cell for the head's TextSpan texts; ` +
      `click it to see its texts, images and patch maps.`),
    el("div", { class: "controls" },
      el("span", {}, el("label", { for: "score-select", text: "Colour by: " }), select),
      el("span", {}, el("label", { for: "search", text: "Search texts: " }), search)),
    el("div", { class: "score-help", id: "score-help", text: score.description }),
    legend(`${fmt(low, 1)} ${score.unit}`, `${fmt(high, 1)} ${score.unit}`, viridisGradient(),
           null),
    el("div", { class: "legend" }, el("span", { class: "swatch" }),
       el("span", { text: "grey: no value (no TextSpan result, or the score needs labels)" })),
    table, count, matches, neuronNote);
  applySearch();
}

/* ---------- a head's page ---------- */

function scoreLine(key) {
  const [layer, h] = key.split(".").map(Number);
  const layerRow = D.layers.indexOf(layer);
  return el("div", { class: "scoreline" }, D.scores.map((s) => el("span", { title: s.description },
    `${s.name}: `, el("b", { text: `${fmt(scoreValue(s, layerRow, h), 2)} ${s.unit}` }))));
}

function renderHead(key, params) {
  const k = HEAD_INDEX.get(key);
  if (k === undefined) return renderMissing(`No head ${key} in this explorer.`);
  const head = D.heads[k];
  const rows = head.texts.map((text, j) => el("tr", { class: "text-row" },
    el("td", { class: "num", text: String(j + 1) }),
    el("td", { class: "text" }, text,
      head.map_scale ? el("div", { class: "side-label", text: "patch-map scale:" }) : null,
      head.map_scale ? mapLegend(head.map_scale[j]) : null),
    el("td", { class: "num", text: `${fmt(head.gain[j], 1)}%` }),
    el("td", { class: "num", text: `${fmt(head.explained[j], 1)}%` }),
    el("td", {},
      el("div", { class: "side-label", text: "top: furthest along the text" }),
      el("div", { class: "thumbs" }, head.top[j].map((row, i) =>
        thumb(row, k, j, signed(head.top_scores[j][i]))))),
    el("td", {},
      el("div", { class: "side-label", text: "bottom: furthest against it" }),
      el("div", { class: "thumbs" }, head.bottom[j].map((row, i) =>
        thumb(row, k, j, signed(head.bottom_scores[j][i])))))));
  const mapHelp = head.map_scale ? el("p", { class: "help", text: MAP_HELP }) : null;

  const queries = Object.keys(head.neighbours);
  const query = params.get("query") && head.neighbours[params.get("query")] ?
    params.get("query") : queries[0];
  const neighbourSelect = el("select", { id: "query-select", onchange: (e) => {
    location.hash = `${headLink(key)}?query=${e.target.value}`;
  } }, queries.map((q) => {
    const which = head.top.findIndex((rows) => String(rows[0]) === q);
    return el("option", { value: q, selected: q === query ? "" : null,
                          text: `image ${q} (top image for “${head.texts[which]}”)` });
  }));
  const near = head.neighbours[query] || [];

  const similar = gridTable({ mini: true, cell: (layerRow, h, other) => {
    const value = head.similarity[layerRow][h];
    const td = el("td", { class: "cell" + (other === key ? " current" : ""),
                          style: `background:${diverging(value)}`,
                          title: `${other}: ${fmt(value, 2)}` });
    if (HEAD_INDEX.has(other)) {
      td.addEventListener("click", () => { location.hash = headLink(other); });
    }
    return td;
  } });

  view.replaceChildren(
    el("div", { class: "crumbs" }, el("a", { href: "#/", text: "← head grid" })),
    el("h1", { text: `Layer ${head.layer}, head ${head.head} (${headName(head)})` }),
    scoreLine(key),
    el("h2", { text: "TextSpan texts and the images along each" }),
    el("p", { class: "help" },
      "TextSpan chose these texts one at a time, each the bank text whose direction carries " +
      "the most of this head's remaining variance over images. “adds”: the share of the " +
      "head's variance its direction adds; “cumulative”: explained by the texts so far. " +
      "Top and bottom images have the largest and smallest coordinate along the text: the " +
      "head's direct effect on the image minus its average, projected on the text's direction " +
      "(number under each image, cosine-similarity units). Click an image to open it."),
    mapHelp ?? el("p", { class: "nomap", text: "No patch maps: the site was built without " +
                                               "them (no model, or max_patch_maps=0)." }),
    el("table", { class: "texts" },
      el("tr", {}, ["#", "text", "adds", "cumulative", "top images", "bottom images"]
        .map((t) => el("th", { text: t }))),
      rows),
    el("h2", { text: "Nearest neighbours through this head" }),
    el("p", { class: "help" },
      "The images whose direct effect through this head points most nearly the same way as " +
      "the query image's (cosine similarity of the head's direct effects, not centred: 1 = same " +
      "direction; a head whose output is mostly its mean gives cosines near 1). Query: "),
    neighbourSelect,
    el("div", { class: "thumbs", id: "neighbours", style: "margin-top:8px" },
      query !== undefined ? thumb(Number(query), null, 0, "query", { selected: true }) : null,
      near.map(([row, cos]) => thumb(row, null, 0, `cos ${cos.toFixed(4)}`))),
    el("h2", { text: "Heads most like this one" }),
    el("p", { class: "help" },
      "Mean over images of the cosine between two heads' centred direct effects (−1 … 1; " +
      "near 0: the heads write unrelated directions). Click a cell to open that head."),
    el("div", { class: "layout" },
      el("div", {}, similar, legend("−1", "+1", "linear-gradient(to right, rgb(33,102,172), " +
        "#fff, rgb(178,24,43))", null, true)),
      el("ol", { class: "similar" }, head.similar.map(([other, cos]) => el("li", {},
        el("a", { href: headLink(other), text: `L${other.replace(".", ".H")}` }),
        ` cos ${fmt(cos, 2)}`,
        HEAD_INDEX.has(other) ? ` — “${D.heads[HEAD_INDEX.get(other)].texts[0]}”` : "")))));
  window.scrollTo(0, 0);
}

/* ---------- an image's page ---------- */

function coefficients(image) {
  const codes = decodeInt8(image.coefs);
  return D.heads.map((head, k) => head.texts.map((text, j) => {
    const relative = codes[k * D.m + j] / 127;
    return { k, j, text, relative, value: relative * head.coef_scale[j] };
  }));
}

function coefBar(c, what = "of this text's largest coordinate over all images") {
  const width = Math.round(40 * Math.min(1, Math.abs(c.relative)));
  const left = c.relative >= 0 ? 40 : 40 - width;
  return el("span", { class: "coef", title: `${Math.round(100 * c.relative)}% ${what}` },
    el("span", { class: "val", text: signed(c.value, c.digits || 3) }),
    el("span", { class: "track" },
      el("span", { class: "fill", style: `left:${left}px;width:${width}px;background:` +
                                         (c.relative >= 0 ? "#d7191c" : "#2c7bb6") }),
      el("span", { class: "mid" })),
    c.text);
}

function renderImage(row, params) {
  const image = D.images[row];
  if (!image) return renderMissing(`Image ${row} is not among the images this explorer shows.`);
  const coefs = coefficients(image);
  const strength = (list) => Math.max(...list.map((c) => Math.abs(c.relative)));
  const order = coefs.map((list, k) => k).sort((a, b) => strength(coefs[b]) - strength(coefs[a]));
  const mapped = image.maps ? Object.keys(image.maps).map(Number) : [];
  let k = params.get("head") && HEAD_INDEX.has(params.get("head")) ?
    HEAD_INDEX.get(params.get("head")) : (order.find((i) => mapped.includes(i)) ?? order[0]);
  const head = D.heads[k];
  const showAll = params.get("all") === "1";
  const shown = showAll ? order : order.slice(0, 12);

  const headSelect = el("select", { id: "head-select", onchange: (e) => {
    location.hash = imageLink(row, e.target.value);
  } }, order.map((i) => el("option", { value: D.heads[i].key, selected: i === k ? "" : null,
    text: `${headName(D.heads[i])}` + (mapped.includes(i) ? "" : " (no patch map)") })));

  const table = el("table", { class: "contribs", id: "contribs" },
    el("tr", {}, el("th", { text: "head" }),
       el("th", { colspan: 3, text: "its three texts strongest for this image (coordinate; " +
                                    "bar: share of the text's largest over all images)" })),
    shown.map((i) => el("tr", { class: "contrib-row" + (i === k ? " current" : "") },
      el("td", {}, el("a", { href: imageLink(row, D.heads[i].key), text: headName(D.heads[i]) })),
      [...coefs[i]].sort((a, b) => Math.abs(b.relative) - Math.abs(a.relative))
        .slice(0, 3).map((c) => el("td", {}, coefBar(c))))));

  const mapsRow = head.texts.map((text, j) => el("div", { class: "mapcell" },
    thumb(row, k, j, text, { link: headLink(head.key), big: false }),
    head.map_scale ? mapLegend(head.map_scale[j]) : null));

  view.replaceChildren(
    el("div", { class: "crumbs" }, el("a", { href: "#/", text: "← head grid" })),
    el("h1", { text: `Image ${row}` + (image.label ? ` (label: ${image.label})` : "") }),
    el("p", { class: "lead", text: `File ${image.name}; shown as the model sees it (its ` +
                                   "resize and crop)." }),
    el("div", { class: "layout" },
      el("div", {}, thumb(row, null, 0, "the image", { big: true, link: "#/" })),
      el("div", {},
        el("h2", { text: "Patch maps per head" }),
        el("p", { class: "help" },
          "Where in the image the chosen head writes along each of its texts (one map per " +
          "text, captioned; its colour scale below it). " + MAP_HELP),
        el("label", { for: "head-select", text: "Head: " }),
        headSelect, " ", el("a", { href: headLink(head.key), text: `open ${headName(head)}` }),
        el("div", { class: "thumbs", id: "image-maps", style: "margin-top:8px" },
          mapped.includes(k) ? mapsRow : el("p", { class: "nomap", text: D.grid ?
            "No patch maps of this head for this image (the build computes maps for the " +
            "images on each head's page and for a few spotlight images, up to a limit)." :
            "No patch maps: the site was built without them (no model, or max_patch_maps=0)." })),
        )),
    el("h2", { text: "What each head says about this image" }),
    el("p", { class: "help" },
      "For each head, this image's coordinate along each of the head's TextSpan texts: the " +
      "head's direct effect on this image minus its average over all images, projected on the " +
      "text's direction (cosine-similarity units; values are stored to 1/127 of each text's " +
      "range). +: the head writes more of the text for this image than for the average " +
      "image; −: less. Heads are sorted by their strongest text relative to its range " +
      "(the bar)."),
    table,
    showAll || order.length <= 12 ? null : el("p", {}, el("a", {
      href: imageLink(row, head.key) + "&all=1", id: "show-all",
      text: `show all ${order.length} heads` })),
    ...imageNeurons(row));
  window.scrollTo(0, 0);
}

// The neurons whose pages show this image among their top images.
function imageNeurons(row) {
  const keys = NEURONS_OF_IMAGE.get(row) || [];
  if (!keys.length) return [];
  return [el("h2", { text: "Neurons with this image among their top images" }),
    el("ul", { class: "matches", id: "image-neurons" }, keys.map((key) => {
      const [layer, neuron] = NEURON_INDEX.get(key);
      return el("li", {}, el("a", { href: neuronLink(key), text: neuronName(layer, neuron) }),
        ": ", neuronSummary(layer, neuron, 3));
    }))];
}

/* ---------- MLP neurons ---------- */

function neuronKey(layer, neuron) { return `${layer.layer}.${neuron.neuron}`; }
function neuronName(layer, neuron) { return `L${layer.layer}.N${neuron.neuron}`; }
function neuronLink(key) { return `#/neuron/${key}`; }
function allNeurons() { return (D.neurons || []).flatMap((l) => l.neurons.map((n) => [l, n])); }

// Index of the neuron's first text containing the query (-1: none; 0 without a query).
function neuronMatch(layer, neuron, query) {
  if (!query) return 0;
  const needle = query.toLowerCase();
  return neuron.texts.findIndex(([t]) => layer.texts[t].toLowerCase().includes(needle));
}

// "+text; −text; ..." of a neuron's first `count` texts (the query highlighted).
function neuronSummary(layer, neuron, count) {
  const parts = [];
  neuron.texts.slice(0, count).forEach(([t, coef], i) => {
    if (i) parts.push("; ");
    parts.push(el("span", { class: coef >= 0 ? "pos" : "neg", text: coef >= 0 ? "+" : "−" }),
               ...highlight(layer.texts[t], state.query));
  });
  return parts;
}

const SUMMARY_TEXTS = 4;  // texts per neuron in the list

// The first text matching the search when it is not among those the list shows.
function laterMatch(layer, neuron) {
  const j = neuronMatch(layer, neuron, state.query);
  if (!state.query || j < SUMMARY_TEXTS) return null;
  const [t, coef] = neuron.texts[j];
  return el("span", { class: "help" }, ` … text ${j + 1}: `,
    el("span", { class: coef >= 0 ? "pos" : "neg", text: coef >= 0 ? "+" : "−" }),
    ...highlight(layer.texts[t], state.query));
}

const NEURON_HELP = "Second-order effect: what a neuron's output adds to the image embedding " +
  "through the attention layers after it (the neuron lens of Gandelsman, Efros & Steinhardt, " +
  "ICLR 2025). Effect: its average distance from its own mean over the images, ‖φ − μ‖, in " +
  "units of the unit-norm image embedding. Its main direction (the first principal component " +
  "of the effect over the neuron's top images) is written as a sparse sum of bank texts; " +
  "“texts explain”: the share of that variance the texts' sum captures (percent).";

function renderNeurons(params) {
  const showAll = params.get("all") === "1";
  const search = el("input", { id: "search", type: "search", value: state.query,
                               placeholder: "e.g. red, circle, stripes", size: 26 });
  const count = el("span", { id: "neuron-count", class: "help" });
  const sections = el("div", { id: "neuron-layers" });
  const total = allNeurons().length;

  function applySearch() {
    state.query = search.value.trim();
    let found = 0;
    sections.replaceChildren(...D.neurons.map((layer) => {
      const hits = layer.neurons.filter((n) => neuronMatch(layer, n, state.query) >= 0);
      found += hits.length;
      const shown = showAll ? hits : hits.slice(0, NEURON_ROWS);
      const table = shown.length ? el("table", { class: "neurons" },
        el("tr", {}, ["neuron", "effect ‖φ − μ‖", "texts explain", "first texts (+ toward, " +
                      "− away from)"].map((t) => el("th", { text: t }))),
        shown.map((n) => el("tr", { class: "neuron-row", "data-neuron": neuronKey(layer, n) },
          el("td", {}, el("a", { href: neuronLink(neuronKey(layer, n)),
                                 text: neuronName(layer, n) })),
          el("td", { class: "num", text: fmt(n.effect, 4) }),
          el("td", { class: "num", text: `${fmt(n.text_variance, 1)}%` }),
          el("td", {}, neuronSummary(layer, n, SUMMARY_TEXTS), laterMatch(layer, n))))) :
        el("p", { class: "help", text: "No neuron of this layer has a text containing it." });
      return el("section", { class: "neuron-layer", "data-layer": layer.layer },
        el("h2", { text: `Layer ${layer.layer}: ${layer.neurons.length} neurons` +
                         (state.query ? ` (matching: ${hits.length})` : "") }),
        el("p", { class: "help" }, `Read over ${layer.count.toLocaleString()} images ` +
           `(${layer.convention} convention), strongest effect first.`,
           layer.note ? el("span", { class: "nomap", text: " " + layer.note }) : null),
        table,
        shown.length < hits.length ? el("p", {}, el("a", { href: "#/neurons?all=1",
          text: `${hits.length - shown.length} more: show all` })) : null);
    }));
    count.textContent = state.query ?
      `${found} of ${total} neurons have a text containing “${state.query}”.` :
      `${total} neurons in ${D.neurons.length} layer${D.neurons.length > 1 ? "s" : ""}. ` +
      "Type a word to keep only the neurons with a text containing it.";
  }
  search.addEventListener("input", applySearch);

  view.replaceChildren(
    el("div", { class: "crumbs" }, el("a", { href: "#/", text: "← head grid" })),
    el("h1", { text: `MLP neurons of ${D.model || "the model"}` }),
    el("p", { class: "lead" }, "Each row is one neuron of an MLP layer, read in words by the " +
      "neuron lens. Click a neuron for its texts with their coefficients, its variance " +
      "explained and its top images."),
    el("p", { class: "help", text: NEURON_HELP }),
    el("div", { class: "controls" },
      el("span", {}, el("label", { for: "search", text: "Search texts: " }), search), count),
    sections);
  applySearch();
}

function renderNeuron(key) {
  const found = NEURON_INDEX.get(key);
  if (!found) return renderMissing(`No neuron ${key} in this explorer.`);
  const [layer, neuron] = found;
  const largest = Math.max(...neuron.texts.map(([, c]) => Math.abs(c)), 1e-30);
  const texts = neuron.texts.map(([t, coef], i) => el("tr", { class: "neuron-text" },
    el("td", { class: "num", text: String(i + 1) }),
    el("td", {}, coefBar({ text: layer.texts[t], value: coef, relative: coef / largest, digits: 4 },
                         "of the neuron's largest coefficient"))));
  const stats = [
    ["effect ‖φ − μ‖", fmt(neuron.effect, 4), "average over the images of the distance of the " +
     "neuron's second-order effect from its mean, in units of the unit-norm image embedding"],
    ["mean ‖φ‖", fmt(neuron.mean_norm, 4), "average norm of the effect itself (same units)"],
    ["first component explains", `${fmt(neuron.pc_variance, 1)}%`, "share of the top images' " +
     "squared distance from the mean along the neuron's main direction"],
    ["texts explain", `${fmt(neuron.text_variance, 1)}%`, "the same share along the texts' " +
     "sparse sum (the variance explained by the texts below)"],
    ["texts vs component", `cos ${fmt(neuron.cosine, 2)}`, "cosine of the texts' sum with the " +
     "main direction (1: the texts reproduce it exactly)"],
    ["top images hold", `${fmt(neuron.top_share, 1)}%`, "share of the neuron's squared " +
     `distance from its mean over all ${layer.count.toLocaleString()} images that its top ` +
     "images (those the lens kept) hold"]];
  let images;
  if (!layer.tied) {
    images = el("p", { class: "nomap", id: "neuron-untied", text: layer.note });
  } else if (!neuron.top.length) {
    images = el("p", { class: "nomap", text: "None of this neuron's top images is shown: " +
      "they are not this cache's images, or the build's image limit (max_neuron_images) was " +
      "reached." });
  } else {
    images = el("div", { class: "thumbs", id: "neuron-images" },
      neuron.top.map(([row, norm]) => thumb(row, null, 0, `‖φ − μ‖ ${fmt(norm, 4)}`)));
  }
  view.replaceChildren(
    el("div", { class: "crumbs" }, el("a", { href: "#/", text: "← head grid" }), " · ",
       el("a", { href: "#/neurons", text: "neuron list" })),
    el("h1", { text: `Layer ${layer.layer}, MLP neuron ${neuron.neuron} ` +
                     `(${neuronName(layer, neuron)})` }),
    el("div", { class: "scoreline" }, stats.map(([name, value, help]) => el("span",
      { title: help }, `${name}: `, el("b", { text: value })))),
    el("p", { class: "help", text: NEURON_HELP }),
    el("h2", { text: "Its texts" }),
    el("p", { class: "help" }, "The neuron's main direction as a sparse sum of bank texts " +
      "(orthogonal matching pursuit over the bank's embeddings, centred and scaled per " +
      "dimension as the lens's authors do), largest weight first. Coefficient: the text's " +
      "weight in that sum (no unit; + the effect points toward the text, − away from it); bar: " +
      "its size relative to the largest. Texts explain " +
      `${fmt(neuron.text_variance, 1)}% of the variance over the top images.`),
    el("table", { class: "contribs", id: "neuron-texts" },
      el("tr", {}, el("th", { text: "#" }), el("th", { text: "coefficient, bar, text" })),
      texts),
    el("h2", { text: "Top images" }),
    el("p", { class: "help", text: "The images where the neuron's second-order effect is " +
      "furthest from its mean (number under each: ‖φ − μ‖, unit-norm embedding units), " +
      "largest first. Click an image to open it." }),
    images);
  window.scrollTo(0, 0);
}

/* ---------- other views ---------- */

function renderAbout() {
  const notes = [
    ["Direct effect", "CLIP's image embedding is a sum of terms: one per attention head, MLP " +
     "layer and the embeddings (exact, Sec. 3 of the paper). A head's direct effect on an " +
     "image is its term, in the joint image-text space; its dot product with a unit text " +
     "embedding is the head's share of the image-text cosine similarity."],
    ["TextSpan", "For each head, texts chosen greedily from a text bank so that their " +
     "directions span as much of the head's variance over images as possible (Algorithm 1)."],
    ["Coordinate along a text", "The head's direct effect on an image minus its mean over " +
     "all images, projected on the text's TextSpan direction (cosine-similarity units)."],
    ["Patch map", "The same quantity split over image patches (per-token terms of the " +
     "decomposition when the site was built: the values of captum_clipspan's " +
     "PatchContribution for the head alone). Red: the patch pushes the head's output toward the text; blue: away. Each text " +
     "has one colour scale, stated beside it, shared by all its images."],
    ["Spotlight images", `${D.spotlight.length} images whose pages show every head's patch ` +
     `maps; other images have maps for the heads whose pages show them.`],
  ];
  if (D.neurons && D.neurons.length) {
    notes.push(["MLP neurons", NEURON_HELP]);
  }
  view.replaceChildren(
    el("div", { class: "crumbs" }, el("a", { href: "#/", text: "← head grid" })),
    el("h1", { text: "How to read this explorer" }),
    el("dl", {}, notes.map(([term, text]) => [el("dt", {}, el("b", { text: term })),
                                             el("dd", { text })])),
    el("h2", { text: "Spotlight images" }),
    el("div", { class: "thumbs" }, D.spotlight.map((row) => thumb(row, null, 0, `image ${row}`))));
}

function renderMissing(message) {
  view.replaceChildren(el("p", { class: "error", text: message }),
                       el("a", { href: "#/", text: "← head grid" }));
}

function route() {
  hideTooltip();
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/");
  if (parts[0] === "head") renderHead(parts[1], params);
  else if (parts[0] === "image") renderImage(Number(parts[1]), params);
  else if (parts[0] === "about") renderAbout();
  else if (parts[0] === "neurons" && D.neurons && D.neurons.length) renderNeurons(params);
  else if (parts[0] === "neuron") renderNeuron(parts[1]);
  else renderGrid();
}

function start() {
  if (!D) {
    view.replaceChildren(el("p", { class: "error",
      text: "explorer-data.js is missing: rebuild the site with clipspan explore." }));
    return;
  }
  D.heads.forEach((head, k) => HEAD_INDEX.set(head.key, k));
  for (const [layer, neuron] of allNeurons()) {
    const key = neuronKey(layer, neuron);
    NEURON_INDEX.set(key, [layer, neuron]);
    for (const [row] of neuron.top) {
      if (!NEURONS_OF_IMAGE.has(row)) NEURONS_OF_IMAGE.set(row, []);
      NEURONS_OF_IMAGE.get(row).push(key);
    }
  }
  if (D.neurons && D.neurons.length) {
    const nav = document.querySelector("header nav");
    nav.insertBefore(el("a", { href: "#/neurons", id: "nav-neurons", text: "Neurons" }),
                     nav.children[1] || null);
  }
  document.title = `${D.title} — clipspan explorer`;
  document.getElementById("subtitle").textContent = D.title;
  window.addEventListener("hashchange", route);
  route();
}

start();
