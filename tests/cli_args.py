"""Command-line arguments the end-to-end tests share: a tiny model's text, a fast schedule."""

FAST = [
    "--steps",
    "30",
    "--batch-size",
    "64",
    "--lr",
    "3e-3",
    "--no-progress",
    "--expansion",
    "2",
    "--k",
    "4",
]


def text_args(folder, text):
    return [
        "--model",
        str(folder),
        "--data",
        str(text),
        "--hook",
        "model.layers.0.mlp:output",
        "--context-size",
        "16",
        "--max-tokens",
        "4096",
        "--spliced-windows",
        "4",
    ]


def eval_args(args):
    """``eval`` reads the hook point from the SAE's config: no --hook."""
    at = args.index("--hook")
    return args[:at] + args[at + 2 :]
