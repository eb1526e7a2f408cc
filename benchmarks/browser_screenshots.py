"""Screenshots of a feature browser for the docs, taken in headless Chromium from file://.

    python benchmarks/browser_screenshots.py SITE --latent 12 [--search "thou"]
        [--out docs/figures/browser] [--name smollm2]

Writes NAME-list.png (the list, searched when --search is given) and NAME-latent.png (the
latent's panel), and prints how long the page took to become interactive.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from monosemantic.interpret.browser import CHROMIUM, CHROMIUM_FLAGS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("site", type=Path)
    parser.add_argument("--latent", type=int, required=True)
    parser.add_argument("--search", default="")
    parser.add_argument("--out", type=Path, default=Path("docs/figures/browser"))
    parser.add_argument("--name", default="browser")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        start = time.perf_counter()
        page.goto((args.site / "index.html").resolve().as_uri())
        page.wait_for_selector("#latents tbody tr")
        loaded = time.perf_counter() - start
        if args.search:
            page.fill("#search", args.search)
        page.screenshot(path=str(args.out / f"{args.name}-list.png"))
        start = time.perf_counter()
        page.evaluate(f"location.hash = '{args.latent}'")
        page.wait_for_selector("#panel .context, #panel .tile")
        page.wait_for_timeout(300)  # sprites draw once loaded
        opened = time.perf_counter() - start
        page.screenshot(path=str(args.out / f"{args.name}-latent.png"))
        browser.close()
    print(f"list interactive in {loaded:.2f} s, latent {args.latent} opened in {opened:.2f} s")


if __name__ == "__main__":
    main()
