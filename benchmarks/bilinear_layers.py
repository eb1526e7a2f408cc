"""SmolLM2-135M made bilinear in its first N layers: held-out CE before and after the local
least-squares recovery, as a function of N.

    python benchmarks/bilinear_layers.py [--layers 10 20 30] [--windows 32] [--solve-windows 256]

For each N, a copy of the model with MLPs 0..N−1 converted (SiLU → identity) is scored against
the original on held-out Shakespeare windows (``compare_models``), then each converted down
projection is solved by least squares (``solve_down_projections``) and it is scored again.
Prints one JSON line per N.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace

from monosemantic.data.sources import DataConfig, resolve
from monosemantic.evaluation.spliced import compare_models
from monosemantic.models.bilinear_lm import convert_to_bilinear, solve_down_projections
from monosemantic.models.subject import load_subject


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[10, 20, 30])
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--solve-windows", type=int, default=256)
    args = parser.parse_args()
    text = load_subject(resolve(replace(DataConfig(), truncate=False)))
    assert text is not None
    held_out = text.eval_tokens[: args.windows]
    exclude = None if text.eval_exclude is None else text.eval_exclude[: args.windows]
    train = text.train_tokens[: args.solve_windows]
    train_exclude = None if text.train_exclude is None else text.train_exclude[: args.solve_windows]
    for n in args.layers:
        converted = copy.deepcopy(text.model)
        convert_to_bilinear(converted, range(n))
        row: dict[str, object] = {"layers_converted": n}
        row["unrecovered"] = compare_models(text.model, converted, held_out, exclude=exclude)
        start = time.perf_counter()
        solve_down_projections(text.model, converted, train, exclude=train_exclude)
        row["solve_s"] = round(time.perf_counter() - start, 1)
        row["least_squares"] = compare_models(text.model, converted, held_out, exclude=exclude)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
