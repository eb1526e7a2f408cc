// The monosemantic feature browser. Reads window.monoData (data/*.js); builds every element
// with textContent, never innerHTML: strings from the data are shown, never parsed or run.
"use strict";

(function () {
  const data = window.monoData;
  const meta = data.meta;
  const rows = data.latents;
  let vocab = [];  // token texts by id, loaded with the first panel: the list needs none
  const PAGE = 200;
  const chunks = {};
  const sprites = {};
  let shown = PAGE;
  let order = [];
  let selected = -1;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(x) {
    return Number(x).toPrecision(3).replace(/\.?0+e/, "e").replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
  }

  function pct(x) {
    return x === 0 ? "0" : x >= 0.001 ? (100 * x).toFixed(2) + "%" : (100 * x).toExponential(1) + "%";
  }

  function tokenText(id) {
    const text = vocab[id];
    return text == null ? "\u2039" + id + "\u203a" : text.replace(/\n/g, "\u21b5");
  }

  // ---- the list ------------------------------------------------------------------------------
  const haystack = rows.label.map(function (label, i) {
    const raises = rows.raises ? rows.raises[i].join(" ") : "";
    return (label + " " + raises).toLowerCase();
  });

  function matches(query) {
    const q = query.trim().toLowerCase();
    const dead = document.getElementById("show-dead").checked;
    const number = /^#?(\d+)$/.exec(q);
    const out = [];
    for (let i = 0; i < rows.density.length; i++) {
      if (!dead && rows.density[i] === 0 && !number) continue;
      if (number) {
        if (String(i) === number[1]) out.push(i);
      } else if (!q || haystack[i].indexOf(q) >= 0) {
        out.push(i);
      }
    }
    const key = document.getElementById("sort").value;
    if (key !== "index") out.sort(function (a, b) { return rows[key][b] - rows[key][a]; });
    return out;
  }

  function renderList() {
    order = matches(document.getElementById("search").value);
    const body = document.querySelector("#latents tbody");
    const fragment = document.createDocumentFragment();
    for (const i of order.slice(0, shown)) {
      const tr = el("tr");
      tr.dataset.latent = String(i);
      if (i === selected) tr.className = "selected";
      tr.appendChild(el("td", "num", String(i)));
      tr.appendChild(el("td", "label", rows.label[i]));
      tr.appendChild(el("td", "num", pct(rows.density[i])));
      tr.appendChild(el("td", "num", fmt(rows.max[i])));
      fragment.appendChild(tr);
    }
    body.replaceChildren(fragment);
    document.getElementById("count").textContent =
      order.length + " of " + rows.density.length + " latents" +
      (order.length > shown ? " (first " + shown + " shown)" : "");
    document.getElementById("more").hidden = order.length <= shown;
  }

  // ---- one latent's panel --------------------------------------------------------------------
  function loadData(name, file) {
    // a data file is a script assigning monoData[name]: file:// pages may not fetch
    if (chunks[name]) return chunks[name];
    chunks[name] = new Promise(function (resolve, reject) {
      const script = document.createElement("script");
      script.src = "data/" + file + ".js";
      script.onload = function () { resolve(data[name]); };
      script.onerror = function () { reject(new Error("cannot load " + script.src)); };
      document.head.appendChild(script);
    });
    return chunks[name];
  }

  function loadChunk(c) {
    const chunk = loadData("chunk-" + c, "chunk-" + String(c).padStart(4, "0"));
    return Promise.all([chunk, loadData("vocab", "vocab")]).then(function (both) {
      vocab = both[1];
      return both[0];
    });
  }

  function context(example, k, max) {
    const line = el("div", "context");
    line.appendChild(el("span", "value", fmt(example.value[k])));
    const ids = example.ids[k];
    const acts = example.acts[k];
    const here = meta.left;
    ids.forEach(function (id, j) {
      if (id < 0) return;
      const tok = el("span", "tok" + (j === here ? " here" : ""), tokenText(id));
      const a = max > 0 ? Math.min(1, acts[j] / max) : 0;
      if (a > 0) tok.style.backgroundColor = "rgba(255, 120, 0, " + (0.1 + 0.8 * a).toFixed(3) + ")";
      tok.title = fmt(acts[j]);
      line.appendChild(tok);
    });
    return line;
  }

  function sprite(c) {
    // one PNG per chunk: a row per latent, its top then its sampled examples (image data)
    if (!sprites[c]) {
      sprites[c] = new Promise(function (resolve) {
        const img = new Image();
        img.onload = function () { resolve(img); };
        img.onerror = function () { resolve(null); };
        img.src = "data/images-" + String(c).padStart(4, "0") + ".png";
      });
    }
    return sprites[c];
  }

  function tile(i, column, value) {
    const h = meta.image[0], w = meta.image[1], zoom = 3;
    const box = el("figure", "tile");
    const canvas = el("canvas");
    canvas.width = zoom * w;
    canvas.height = zoom * h;
    box.appendChild(canvas);
    box.appendChild(el("figcaption", null, fmt(value)));
    sprite(Math.floor(i / meta.chunk)).then(function (img) {
      if (!img) return;
      const g = canvas.getContext("2d");
      g.imageSmoothingEnabled = false;
      g.drawImage(img, column * w, (i % meta.chunk) * h, w, h, 0, 0, zoom * w, zoom * h);
    });
    return box;
  }

  function contexts(i, title, example, max, note, firstColumn) {
    const box = el("div", "examples");
    box.appendChild(el("h3", null, title));
    if (note) box.appendChild(el("p", "hint", note));
    if (!example.value.length) box.appendChild(el("p", "hint", "none: the latent never fired"));
    const holder = meta.image ? el("div", "tiles") : box;
    for (let k = 0; k < example.value.length; k++) {
      holder.appendChild(meta.image ? tile(i, firstColumn + k, example.value[k]) : context(example, k, max));
    }
    if (holder !== box) box.appendChild(holder);
    return box;
  }

  function logitTable(title, className, pair) {
    const table = el("table", className);
    const head = el("tr");
    head.appendChild(el("th", null, title));
    table.appendChild(head);
    pair[0].forEach(function (id, k) {
      const tr = el("tr");
      tr.appendChild(el("td", null, tokenText(id)));
      tr.appendChild(el("td", "num", fmt(pair[1][k])));
      table.appendChild(tr);
    });
    return table;
  }

  function histogram(title, counts, label) {
    const box = el("div", "histogram");
    box.appendChild(el("h3", null, title));
    const canvas = el("canvas");
    canvas.width = 420;
    canvas.height = 110;
    const g = canvas.getContext("2d");
    const top = Math.max(1, Math.max.apply(null, counts));
    const w = canvas.width / counts.length;
    g.fillStyle = "#4c78a8";
    counts.forEach(function (c, k) {
      const h = (canvas.height - 14) * c / top;
      g.fillRect(k * w + 1, canvas.height - 14 - h, w - 2, h);
    });
    g.fillStyle = "#555";
    g.font = "10px sans-serif";
    g.fillText(label[0], 2, canvas.height - 3);
    g.textAlign = "right";
    g.fillText(label[1], canvas.width - 2, canvas.height - 3);
    box.appendChild(canvas);
    return box;
  }

  function activationHistogram(counts) {
    // the log-spaced bins from the first to the last one holding a count
    let first = counts.findIndex(function (c) { return c > 0; });
    if (first < 0) return el("p", "hint", "no activations");
    let last = counts.length - 1;
    while (counts[last] === 0) last--;
    const edges = meta.hist_edges;
    return histogram("activations (log-spaced bins)", counts.slice(first, last + 1),
                     [fmt(edges[first]), fmt(edges[last + 1])]);
  }

  function renderPanel(i, entry) {
    const panel = document.getElementById("panel");
    const parts = [];
    parts.push(el("h2", null, "latent " + i + (rows.label[i] ? "  \u2014  " + rows.label[i] : "")));
    const facts = el("p", "facts");
    facts.appendChild(el("span", null, "density " + pct(rows.density[i])));
    facts.appendChild(el("span", null, "max " + fmt(rows.max[i])));
    facts.appendChild(el("span", null, "mean when firing " + fmt(rows.mean[i])));
    parts.push(facts);
    const tables = el("div", "tables");
    if (entry.raise) {
      tables.appendChild(logitTable("raises", "raise", entry.raise));
      tables.appendChild(logitTable("lowers", "lower", entry.lower));
      const lh = entry.logit_hist;
      tables.appendChild(histogram("effect on every token's logit", lh[0], [fmt(lh[1][0]), fmt(lh[1][1])]));
    }
    tables.appendChild(activationHistogram(entry.hist));
    parts.push(tables);
    parts.push(contexts(i, "top activations", entry.top, rows.max[i], null, 0));
    parts.push(contexts(i, "a uniform sample of its firings, weakest first", entry.samples, rows.max[i],
                        "drawn at random among all the inputs where it fires: its typical range",
                        meta.top_slots));
    panel.replaceChildren.apply(panel, parts);
  }

  function open(i) {
    if (!(i >= 0 && i < rows.density.length)) return;
    selected = i;
    for (const tr of document.querySelectorAll("#latents tbody tr")) {
      tr.className = Number(tr.dataset.latent) === i ? "selected" : "";
    }
    const c = Math.floor(i / meta.chunk);
    loadChunk(c).then(function (chunk) {
      if (selected === i) renderPanel(i, chunk[i]);
    }, function (error) {
      document.getElementById("panel").replaceChildren(el("p", "hint", error.message));
    });
  }

  // ---- wiring --------------------------------------------------------------------------------
  document.getElementById("title").textContent = meta.title || "feature browser";
  document.title = meta.title || "feature browser";
  document.getElementById("about").textContent = [
    meta.sae, meta.hook, meta.model,
    meta.d_sae + " latents", meta.n_tokens.toLocaleString("en") + " " + meta.unit + " of " + meta.data,
  ].filter(Boolean).join(" \u00b7 ");
  document.getElementById("search").addEventListener("input", function () { shown = PAGE; renderList(); });
  document.getElementById("sort").addEventListener("change", renderList);
  document.getElementById("show-dead").addEventListener("change", renderList);
  document.getElementById("more").addEventListener("click", function () { shown += PAGE; renderList(); });
  document.querySelector("#latents tbody").addEventListener("click", function (event) {
    const tr = event.target.closest("tr");
    if (tr) location.hash = tr.dataset.latent;
  });
  window.addEventListener("hashchange", function () { open(Number(location.hash.slice(1))); });
  renderList();
  if (location.hash.length > 1) open(Number(location.hash.slice(1)));
})();
