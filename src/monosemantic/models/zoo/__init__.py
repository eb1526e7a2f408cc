"""Models the project trains itself from a seed: bilinear image classifiers (``mnist``) and
small Shakespeare transformers (``transformer``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def fresh_run_folder(out: str | None, default: Path) -> tuple[Path, Path]:
    """(folder, metrics log) for a training run: ``out`` or the zoo's ``default`` folder, created,
    with any log of an earlier run there removed (training restarts rather than resumes)."""
    folder = Path(out) if out else default
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "metrics.jsonl"
    log.unlink(missing_ok=True)
    return folder, log


def print_saved(metrics: dict[str, Any], folder: Path) -> None:
    print(json.dumps(metrics, indent=1))
    print(f"saved to {folder}")
