"""SmolLM2-135M made bilinear in every layer, recovered: held-out CE against the tokens spent.

    python benchmarks/bilinear_recovery.py [--fit-steps 50] [--finetune-steps 400]
        [--finetune-lr 2e-5] [--every 25 50 100 200 400] [--windows 32]
        [--out docs/figures/bilinear_recovery]

Stages, each scored on the same held-out Shakespeare windows (``compare_models``): the converted
model before recovery; after the least-squares down projections (256 windows, local); after
``--fit-steps`` local Adam steps; and during the KL fine-tune, after each step count in
``--every``. Tokens spent count the positions of training text each stage read, cumulatively. Writes
``OUT.json`` (one row per point) and ``OUT.png`` (CE against tokens spent, the original as a line),
printing each row as it comes.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from monosemantic.data.sources import DataConfig, resolve
from monosemantic.evaluation.spliced import compare_models
from monosemantic.files import atomic_write, write_json
from monosemantic.models.bilinear_lm import convert_to_bilinear, fit_globally, fit_locally
from monosemantic.models.subject import load_subject

BATCH_WINDOWS = 8
SOLVE_WINDOWS = 256


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """CE of each recovered point against the tokens spent (log x), the original as a line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), layout="tight")
    ax = fig.subplots()
    spent = [r for r in rows if r["tokens"] > 0]
    for stage, marker in (("least squares", "s"), ("local Adam", "^"), ("KL fine-tune", "o")):
        points = [r for r in spent if r["stage"] == stage]
        if not points:
            continue
        ax.plot([r["tokens"] for r in points], [r["ce_candidate"] for r in points], marker,
                label=stage, ls="-" if stage == "KL fine-tune" else "")  # fmt: skip
    ax.axhline(rows[0]["ce_reference"], color="k", lw=1, label="original SmolLM2-135M")
    title = f"every MLP bilinear; before recovery: CE {rows[0]['ce_candidate']:.2f}"
    ax.set(xscale="log", xlabel="training tokens spent on recovery", ylabel="held-out CE (nats)",
           title=title)  # fmt: skip
    ax.legend(fontsize=8)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fit-steps", type=int, default=50)
    parser.add_argument("--fit-lr", type=float, default=1e-4)
    parser.add_argument("--finetune-steps", type=int, default=400)
    parser.add_argument("--finetune-lr", type=float, default=2e-5)
    parser.add_argument("--every", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("docs/figures/bilinear_recovery"))
    args = parser.parse_args()
    text = load_subject(resolve(replace(DataConfig(), truncate=False)))
    assert text is not None
    ctx = text.train_tokens.shape[1]
    held_out = text.eval_tokens[: args.windows]
    exclude = None if text.eval_exclude is None else text.eval_exclude[: args.windows]
    converted = copy.deepcopy(text.model)
    convert_to_bilinear(converted)
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()

    def score(stage: str, tokens: int, **extra: Any) -> None:
        row = {"stage": stage, "tokens": tokens, **extra}
        row |= compare_models(text.model, converted, held_out, exclude=exclude)
        row["wall_s"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_json(args.out.with_suffix(".json"), {"args": vars(args) | {"out": str(args.out)},
                                                   "rows": rows})  # fmt: skip

    score("none", 0)
    fit = dict(exclude=text.train_exclude, lr=args.fit_lr, batch_windows=BATCH_WINDOWS)
    fit_locally(text.model, converted, text.train_tokens, steps=0, solve_windows=SOLVE_WINDOWS,
                **fit)  # fmt: skip
    local_tokens = SOLVE_WINDOWS * ctx
    score("least squares", local_tokens)
    if args.fit_steps:
        fit_locally(text.model, converted, text.train_tokens, steps=args.fit_steps,
                    solve_windows=0, progress=True, **fit)  # fmt: skip
        local_tokens += args.fit_steps * BATCH_WINDOWS * ctx
        score("local Adam", local_tokens, steps=args.fit_steps)
    checkpoints = set(args.every)

    def after_step(step: int) -> None:
        if step in checkpoints:
            score("KL fine-tune", local_tokens + step * BATCH_WINDOWS * ctx, steps=step)

    fit_globally(text.model, converted, text.train_tokens, exclude=text.train_exclude,
                 steps=args.finetune_steps, lr=args.finetune_lr, batch_windows=BATCH_WINDOWS,
                 seed=1, progress=True, after_step=after_step)  # fmt: skip
    plot(rows, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
