"""``monosemantic browse`` (write the feature browser) and ``monosemantic serve`` (show it)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import resource
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from monosemantic.commands.options import add_out, add_threads
from monosemantic.config import add_arguments, from_arguments
from monosemantic.data.arrays import load_matrix
from monosemantic.data.sources import DataConfig, resolve
from monosemantic.hooks import HookPoint, is_layer_pattern
from monosemantic.interpret.browser import browse_text, token_strings, write_browser
from monosemantic.interpret.dashboard import Dashboard, collect_rows
from monosemantic.interpret.neuronpedia import write_neuronpedia
from monosemantic.models.subject import load_subject
from monosemantic.runtime import set_threads
from monosemantic.sae.base import SAE
from monosemantic.sae.io import load_sae


def register(commands: argparse._SubParsersAction) -> None:
    browse = commands.add_parser(
        "browse",
        help="write a feature browser (a static site) for an SAE",
        description="Run --data's windows through the model and the SAE once, streaming each "
        "latent's density, activation histogram, top contexts and a uniform sample of its "
        "firings, with its logit effects; write a site that opens from file:// with no network "
        "(index.html), and with --neuronpedia the same as SAEDashboard's Neuronpedia batch "
        "JSON. Example: monosemantic browse runs/l3/saes/topk-4608-k32 --out browser",
    )
    browse.add_argument("sae", help="SAE folder (ours, SAELens's, sparsify's)")
    add_out(browse, "the site's folder (default: the SAE's folder/browser)")
    browse.add_argument("--top", type=int, default=16, help="top contexts kept per latent")
    browse.add_argument("--samples", type=int, default=16, help="sampled contexts per latent")
    browse.add_argument("--left", type=int, default=12, help="context tokens before a firing")
    browse.add_argument("--right", type=int, default=4, help="context tokens after it")
    browse.add_argument(
        "--neuronpedia", action="store_true", help="also write OUT/neuronpedia/batch-N.json"
    )
    browse.add_argument(
        "--image-shape",
        type=int,
        nargs=2,
        metavar=("HEIGHT", "WIDTH"),
        help="a matrix --data whose rows are images (e.g. 28 28 for MNIST): show them as pictures",
    )
    add_threads(browse)
    add_arguments(browse, DataConfig, skip=("extra", "hook", "hook_out"))
    browse.set_defaults(func=run_browse)

    serve = commands.add_parser(
        "serve",
        help="serve a feature browser's folder on localhost",
        description="Serve DIR (a site `monosemantic browse` wrote) at http://127.0.0.1:PORT/ "
        "until interrupted. The site also opens straight from disk; this is for browsers or "
        "machines where file:// is awkward. Example: monosemantic serve browser --port 8000",
    )
    serve.add_argument("folder", help="the site's folder (holding index.html)")
    serve.add_argument("--port", type=int, default=8000, help="0: any free port")
    serve.set_defaults(func=run_serve)


def run_browse(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    sae = load_sae(Path(args.sae))
    if is_layer_pattern(sae.cfg.hook):
        raise ValueError(
            f"{args.sae} reads every layer ({sae.cfg.hook}); browse reads one hook point: "
            "browse its layers with `monosemantic eval` (per-layer activity) instead"
        )
    data = from_arguments(DataConfig, args)
    if sae.cfg.hook:  # an SAE trained on a matrix has none
        data = replace(data, hook=[sae.cfg.hook])
    if sae.cfg.model and data.model == DataConfig.model:
        data = replace(data, model=sae.cfg.model)
    out = Path(args.out) if args.out else Path(args.sae) / "browser"
    meta = {"sae": str(args.sae), "model": data.model, "data": data.data}
    resolved = resolve(data)
    if resolved.kind == "matrix":
        title = f"{sae.architecture} SAE, {sae.d_sae} latents"
        return browse_matrix(args, sae, data, out, {"title": title, **meta, "model": ""})
    text = load_subject(resolved)
    if text is None:
        raise ValueError(
            "browse needs the tokens: give text as --data (or the text a cache was made from), "
            "or a matrix whose rows the SAE reads"
        )
    if args.image_shape:
        raise ValueError("--image-shape is for a matrix --data whose rows are images")
    dash, index = browse_text(
        sae,
        text,
        out,
        meta=meta,
        batch_size=data.windows_per_forward,
        progress=True,
        n_top=args.top,
        n_samples=args.samples,
        left=args.left,
        right=args.right,
    )
    if args.neuronpedia:
        write_neuronpedia(
            dash,
            sae,
            out / "neuronpedia",
            token_strings(text.tokenizer),
            model_id=data.model,
            layer=layer_number(sae.cfg.hook),
            sae_set=f"{sae.architecture}-{sae.d_sae}",
            dataset=data.data,
        )
    print_summary(index, dash)
    return 0


def browse_matrix(
    args: argparse.Namespace, sae: SAE, data: DataConfig, out: Path, meta: dict[str, str]
) -> int:
    """``browse`` on the rows of a matrix: examples are rows, shown as images with
    ``--image-shape``."""
    if args.neuronpedia:
        raise ValueError(
            "--neuronpedia exports a language model's features: a matrix has no tokens"
        )
    rows = load_matrix(data.data, drop_non_finite=data.drop_non_finite)
    images = None
    if args.image_shape:
        height, width = args.image_shape
        if height * width != rows.shape[1]:
            raise ValueError(
                f"--image-shape {height} {width} holds {height * width} pixels but the rows of "
                f"{data.data} have {rows.shape[1]} values"
            )
        images = rows.reshape(-1, height, width)
    dash = collect_rows(sae, rows, n_top=args.top, n_samples=args.samples)
    names = lambda ids: [f"row {i}" for i in ids]  # noqa: E731
    print_summary(write_browser(dash, out, names, meta=meta, images=images), dash)
    return 0


def print_summary(index: Path, dash: Dashboard) -> None:
    """One JSON line: the site, what was read, the time split and the peak memory."""
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {
        "site": str(index),
        "tokens": dash.n_tokens,
        "forward_s": round(dash.forward_s, 1),
        "stats_s": round(dash.stats_s, 1),
        "peak_memory_mb": round(peak_mb),
    }
    print(json.dumps(summary))


def layer_number(hook: str) -> int:
    """The first number in a hook's module path (``model.layers.3.mlp`` -> 3), else 0."""
    parts = HookPoint.parse(hook).module.split(".")
    return next((int(part) for part in parts if part.isdigit()), 0)


def site_server(folder: Path, port: int) -> ThreadingHTTPServer:
    """An HTTP server of ``folder``'s files on 127.0.0.1:``port`` (0: any free port)."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    return ThreadingHTTPServer(("127.0.0.1", port), handler)


def run_serve(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if not (folder / "index.html").is_file():
        raise FileNotFoundError(
            f"{folder} holds no index.html: write a site with `monosemantic browse SAE --out "
            f"{folder}`"
        )
    with site_server(folder, args.port) as server:
        print(f"serving {folder} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0
