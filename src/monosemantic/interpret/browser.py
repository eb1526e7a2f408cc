"""The feature browser: a static site, opened from file:// with no network, from a ``Dashboard``.

    DIR/index.html, browser.js, browser.css     the page (copied from ``assets/browser``)
    DIR/data/meta.js        what was browsed (model, hook, tokens, sizes)
    DIR/data/latents.js     one row per latent for the list: density, max, mean, label
    DIR/data/vocab.js       the text of every token id the data shows (an array by id, null for
                            ids never shown), loaded with the first latent opened
    DIR/data/chunk-NNNN.js  contexts, samples, histograms and logit effects of ``chunk`` latents,
                            loaded only when one of them is opened

Data files are JavaScript assignments of JSON (``json.dumps``, ASCII only), since a page from
file:// may not fetch files; the page builds every element with ``textContent``, so a string from
the data (a token, a model name) is shown as text and never parsed as HTML or run.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from monosemantic.data.sources import Text
from monosemantic.files import atomic_write
from monosemantic.interpret.dashboard import Dashboard, collect
from monosemantic.interpret.examples import Examples
from monosemantic.sae.base import SAE

SITE_FILES = ("index.html", "browser.js", "browser.css")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Headless Chromium (the tests and benchmarks drive Debian's) with no background connections,
which a closed network refuses."""
LABEL_TOKENS = 3


def rounded(values: torch.Tensor | Iterable[float]) -> list[float]:
    """Floats to 3 significant digits: small data files, no precision a reader can see."""
    return [float(f"{float(v):.3g}") for v in values]


def token_strings(tokenizer: Any) -> Callable[[list[int]], list[str]]:
    """ids -> the text of each token alone (what the page shows)."""
    return lambda ids: [tokenizer.decode([i]) for i in ids]


def example_rows(examples: Examples, latent: int) -> dict[str, list[Any]]:
    """One latent's filled examples: activation, flat position, context ids and values."""
    filled = examples.where[latent] >= 0
    return {
        "value": rounded(examples.values[latent][filled]),
        "where": examples.where[latent][filled].tolist(),
        "ids": examples.context_ids[latent][filled].tolist(),
        "acts": [rounded(row) for row in examples.context_values[latent][filled]],
    }


def labels(dash: Dashboard, text: dict[int, str]) -> list[str]:
    """Per latent, its most frequent firing tokens among its top examples, most frequent first."""
    firing = dash.top.context_ids[:, :, dash.top.left]
    out = []
    for latent in range(firing.shape[0]):
        ids = [i for i in firing[latent].tolist() if i >= 0]
        common = Counter(text[i].strip() or text[i] for i in ids).most_common(LABEL_TOKENS)
        out.append(" · ".join(token for token, _ in common))
    return out


def write_js(path: Path, name: str, payload: Any) -> None:
    """``path``: a script setting ``window.monoData[name]`` to ``payload`` (as JSON)."""
    body = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
    script = f"(window.monoData = window.monoData || {{}})[{json.dumps(name)}] = {body};\n"
    atomic_write(path, lambda p: p.write_text(script))


def write_browser(
    dash: Dashboard,
    out: Path,
    decode: Callable[[list[int]], list[str]],
    *,
    meta: dict[str, Any],
    chunk: int = 64,
    images: torch.Tensor | None = None,
) -> Path:
    """Write the site for ``dash`` into ``out``; ``decode`` gives each token id's text (a row's
    name for a dashboard of matrix rows); ``meta`` (model, hook, SAE, data…) is shown in the page
    header. ``images`` [n_rows, height, width]: the rows of a ``collect_rows`` dashboard as
    pictures, drawn in the page from one sprite PNG per chunk. Returns ``out/index.html``."""
    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    site = resources.files("monosemantic") / "assets" / "browser"
    for name in SITE_FILES:
        with resources.as_file(site / name) as source:
            shutil.copyfile(source, out / name)
    logits = dash.logits
    shown = {i for i in dash.top.context_ids.unique().tolist() if i >= 0}
    shown |= {i for i in dash.samples.context_ids.unique().tolist() if i >= 0}
    if logits is not None:
        shown |= set(logits.raise_ids.unique().tolist()) | set(logits.lower_ids.unique().tolist())
    ordered = sorted(shown)
    text = dict(zip(ordered, decode(ordered), strict=True))
    d_sae = len(dash.stats.density)
    stats = dash.stats
    write_js(
        out / "data" / "meta.js",
        "meta",
        {
            **meta,
            "d_sae": d_sae,
            "n_tokens": dash.n_tokens,
            "chunk": chunk,
            "left": dash.top.left,
            "top_slots": dash.top.where.shape[1],
            "unit": "tokens" if dash.context_size > 1 else "rows",
            "hist_edges": rounded(stats.edges),
            "image": None if images is None else [*images.shape[1:], columns(dash)],
        },
    )
    rows: dict[str, Any] = {
        "density": [float(f"{v:.4g}") for v in stats.density.tolist()],
        "max": rounded(stats.max),
        "mean": rounded(stats.mean),
        "label": labels(dash, text) if dash.context_size > 1 else [""] * d_sae,
    }
    if logits is not None:
        rows["raises"] = [[text[i] for i in r[:LABEL_TOKENS]] for r in logits.raise_ids.tolist()]
    write_js(out / "data" / "latents.js", "latents", rows)
    vocab: list[str | None] = [None] * (max(text, default=-1) + 1)  # an array: an object
    for i, token in text.items():  # with 50k numeric keys took 10× longer to open
        vocab[i] = token
    write_js(out / "data" / "vocab.js", "vocab", vocab)
    for start in range(0, d_sae, chunk):
        latents = {}
        for latent in range(start, min(start + chunk, d_sae)):
            entry: dict[str, Any] = {
                "top": example_rows(dash.top, latent),
                "samples": example_rows(dash.samples, latent),
                "hist": stats.histogram[latent].tolist(),
            }
            if logits is not None:
                raised = [logits.raise_ids[latent].tolist(), rounded(logits.raise_values[latent])]
                lowered = [logits.lower_ids[latent].tolist(), rounded(logits.lower_values[latent])]
                entry["raise"], entry["lower"] = raised, lowered
                entry["logit_hist"] = [
                    logits.hist_counts[latent].tolist(),
                    rounded(logits.hist_edges[latent][[0, -1]]),
                ]
            latents[latent] = entry
        number = start // chunk
        write_js(out / "data" / f"chunk-{number:04d}.js", f"chunk-{number}", latents)
        if images is not None:
            write_sprite(
                dash,
                images,
                range(start, min(start + chunk, d_sae)),
                out / "data" / f"images-{number:04d}.png",
            )
    return out / "index.html"


def columns(dash: Dashboard) -> int:
    """Slots per latent in a sprite row: its top examples, then its samples."""
    return dash.top.where.shape[1] + dash.samples.where.shape[1]


def write_sprite(dash: Dashboard, images: torch.Tensor, latents: range, path: Path) -> None:
    """One grayscale PNG: a row per latent of ``latents``, its top then its sampled rows' images
    (blank where a slot is empty), scaled to 0–255 by the images' overall range."""
    from PIL import Image

    height, width = images.shape[1:]
    low, high = float(images.min()), float(images.max())
    grid = torch.zeros(len(latents) * height, columns(dash) * width)
    for r, latent in enumerate(latents):
        where = torch.cat([dash.top.where[latent], dash.samples.where[latent]])
        for c, row in enumerate(where.tolist()):
            if row >= 0:
                grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = images[row]
    pixels = ((grid - low) / max(high - low, 1e-12) * 255).round().clamp(0, 255).byte()
    atomic_write(path, lambda p: Image.fromarray(pixels.numpy(), mode="L").save(p, format="PNG"))


def browse_text(
    sae: SAE,
    text: Text,
    out: Path,
    *,
    meta: dict[str, Any],
    max_windows: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
    n_top: int = 16,
    n_samples: int = 16,
    left: int = 12,
    right: int = 4,
) -> tuple[Dashboard, Path]:
    """Collect the dashboard of ``sae`` over the windows of ``text`` (training then held-out, the
    first ``max_windows`` of them, default all; special tokens excluded; the other arguments are
    ``collect``'s) and write its site into ``out``. Returns (dashboard, index.html)."""
    tokens = torch.cat([text.train_tokens, text.eval_tokens])[:max_windows]
    exclude = None
    if text.train_exclude is not None and text.eval_exclude is not None:
        exclude = torch.cat([text.train_exclude, text.eval_exclude])[:max_windows]
    dash = collect(
        text.model,
        sae,
        tokens,
        exclude=exclude,
        n_top=n_top,
        n_samples=n_samples,
        left=left,
        right=right,
        batch_size=batch_size,
        progress=progress,
    )
    meta = {"title": f"{sae.architecture} SAE, {sae.d_sae} latents", "hook": sae.cfg.hook} | meta
    return dash, write_browser(dash, out, token_strings(text.tokenizer), meta=meta)
