"""How fast the feature browser opens for a wide dictionary, in headless Chromium from file://.

    python benchmarks/browser_load.py [--latents 16384] [--out runs/browser-load]

Writes a site for a synthetic dashboard (random statistics, 16 top and 16 sampled contexts of 17
tokens per latent, logit effects; the sizes `monosemantic browse` writes by default), then opens
it three times and prints, as JSON: the data sizes, the time until the list is drawn (page load,
parsing the per-latent list and vocabulary, first render), the time a search takes to redraw the
list, and the time to open a latent (loading its chunk) — the medians of the three.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from monosemantic.interpret.browser import CHROMIUM, CHROMIUM_FLAGS, write_browser
from monosemantic.interpret.dashboard import Dashboard
from monosemantic.interpret.examples import Examples
from monosemantic.interpret.feature_stats import LatentStats
from monosemantic.interpret.logit_effects import LogitEffects

VOCAB, N, WIDTH = 49152, 16, 17


def synthetic(d_sae: int) -> Dashboard:
    g = torch.Generator().manual_seed(0)

    def examples() -> Examples:
        return Examples(
            values=torch.rand(d_sae, N, generator=g) * 10,
            where=torch.randint(0, 10**6, (d_sae, N), generator=g),
            context_values=torch.rand(d_sae, N, WIDTH, generator=g).pow(4) * 10,
            context_ids=torch.randint(0, VOCAB, (d_sae, N, WIDTH), generator=g),
            left=12,
        )

    edges = torch.logspace(-3, 3, 41, dtype=torch.float64)
    ids = torch.randint(0, VOCAB, (d_sae, 10), generator=g)
    return Dashboard(
        stats=LatentStats(
            density=torch.rand(d_sae, generator=g, dtype=torch.float64) ** 4,
            max=torch.rand(d_sae, generator=g, dtype=torch.float64) * 10,
            mean=torch.rand(d_sae, generator=g, dtype=torch.float64),
            histogram=torch.randint(0, 1000, (d_sae, 40), generator=g),
            edges=edges,
        ),
        top=examples(),
        samples=examples(),
        logits=LogitEffects(
            raise_ids=ids,
            raise_values=torch.randn(d_sae, 10, generator=g),
            lower_ids=ids.flip(1),
            lower_values=-torch.randn(d_sae, 10, generator=g),
            hist_counts=torch.randint(0, 5000, (d_sae, 50), generator=g),
            hist_edges=torch.linspace(-1, 1, 51).expand(d_sae, 51),
        ),
        n_tokens=10**6,
        n_windows=8000,
        context_size=128,
        forward_s=0.0,
        stats_s=0.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latents", type=int, default=16384)
    parser.add_argument("--out", type=Path, default=Path("runs/browser-load"))
    args = parser.parse_args()
    meta = {"model": "synthetic", "hook": "x", "data": "random"}
    write_browser(
        synthetic(args.latents), args.out, lambda ids: [f"tok{i}" for i in ids], meta=meta
    )
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {"list_s": [], "search_s": [], "open_latent_s": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        for _ in range(3):
            page = browser.new_page()
            start = time.perf_counter()
            page.goto((args.out / "index.html").resolve().as_uri())
            page.wait_for_selector("#latents tbody tr")
            times["list_s"].append(time.perf_counter() - start)
            start = time.perf_counter()
            page.fill("#search", "tok12")
            page.wait_for_function("document.getElementById('count').textContent.includes('of')")
            times["search_s"].append(time.perf_counter() - start)
            start = time.perf_counter()
            page.evaluate(f"location.hash = '{args.latents - 1}'")
            page.wait_for_selector("#panel .context")
            times["open_latent_s"].append(time.perf_counter() - start)
            page.close()
        browser.close()
    data = args.out / "data"
    sizes = {name: (data / name).stat().st_size / 2**20 for name in ("latents.js", "vocab.js")}
    chunks = sum(p.stat().st_size for p in data.glob("chunk-*.js")) / 2**20
    print(json.dumps({
        "latents": args.latents,
        "latents_js_mb": round(sizes["latents.js"], 2),
        "vocab_js_mb": round(sizes["vocab.js"], 2),
        "chunks_mb": round(chunks, 1),
        **{k: round(statistics.median(v), 3) for k, v in times.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
