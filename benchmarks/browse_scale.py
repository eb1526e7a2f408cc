"""The browser's cost at scale: memory and time of `monosemantic browse` against a harvest alone.

    python benchmarks/browse_scale.py SAE [--max-tokens 1000000] [--out runs/browse-scale]

Runs ``monosemantic browse SAE --max-tokens N`` in a child process (its peak resident memory is
read from the kernel's accounting of the child, ``RUSAGE_CHILDREN``), then, in this process, a
harvest alone: the same windows through the same model to the SAE's hook point, nothing kept.
Prints one JSON line: tokens, latents, browse wall time and its split (model forward passes vs
encoding and keeping), peak memory, harvest time and the ratio browse / harvest.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from monosemantic.data.harvest import forward_activations
from monosemantic.data.sources import DataConfig, resolve
from monosemantic.models.subject import load_subject
from monosemantic.sae.io import load_sae


def harvest_seconds(sae_folder: str, max_tokens: int) -> tuple[float, int]:
    """Seconds to run every window browse reads through the model to the SAE's hook."""
    sae = load_sae(Path(sae_folder))
    data = replace(DataConfig(), model=sae.cfg.model, hook=[sae.cfg.hook], max_tokens=max_tokens)
    text = load_subject(resolve(data))
    assert text is not None
    tokens = torch.cat([text.train_tokens, text.eval_tokens])
    start = time.perf_counter()
    for first in range(0, len(tokens), data.windows_per_forward):
        forward_activations(
            text.model, tokens[first : first + data.windows_per_forward], [sae.cfg.hook]
        )
    return time.perf_counter() - start, tokens.numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sae")
    parser.add_argument("--max-tokens", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("runs/browse-scale"))
    args = parser.parse_args()
    command = [str(Path(sys.executable).parent / "monosemantic"), "browse", args.sae, "--out",
               str(args.out), "--max-tokens", str(args.max_tokens)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    browse = json.loads(done.stdout.strip().splitlines()[-1])
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    harvest_s, tokens = harvest_seconds(args.sae, args.max_tokens)
    site_mb = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file()) / 2**20
    print(json.dumps({
        "tokens_browsed": browse["tokens"],
        "tokens_in_windows": tokens,
        "latents": load_sae(Path(args.sae)).d_sae,
        "browse_wall_s": round(wall, 1),
        "browse_forward_s": browse["forward_s"],
        "browse_stats_s": browse["stats_s"],
        "peak_memory_mb": round(peak_mb),
        "harvest_s": round(harvest_s, 1),
        "browse_over_harvest": round(wall / harvest_s, 2),
        "site_mb": round(site_mb, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
