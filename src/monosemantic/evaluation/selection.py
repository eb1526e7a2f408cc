"""Choosing among dictionaries by minimum description length: among the SAEs whose FVU is within a
tolerance, the one whose codes take the fewest bits per input (Ayonrinde, Pearce, Sharkey 2024,
arXiv 2410.11179). The candidates are SAE folders holding the ``eval.json`` that ``monosemantic
train`` writes, or whole run folders (every SAE in their ``summary.json``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monosemantic.config import check


@dataclass
class Candidate:
    """One SAE's record: its folder and the metrics of its ``eval.json``."""

    name: str
    folder: str
    d_sae: int
    metrics: dict[str, Any]
    within: bool = False
    """Whether its FVU is within the tolerance."""

    @property
    def description_length(self) -> float:
        return float(self.metrics.get("description_length", math.nan))


def read_candidates(paths: list[Path]) -> list[Candidate]:
    """Every SAE in ``paths``: SAE folders with an ``eval.json``, or run folders."""
    records: list[dict[str, Any]] = []
    for path in paths:
        if (path / "summary.json").is_file():
            records += json.loads((path / "summary.json").read_text())["saes"]
        elif (path / "eval.json").is_file():
            records.append(json.loads((path / "eval.json").read_text()))
        else:
            raise FileNotFoundError(
                f"{path} holds neither summary.json (a run folder) nor eval.json (an SAE folder "
                "written by `monosemantic train`)"
            )
    missing = [r["name"] for r in records if "description_length" not in r["eval"]]
    if missing:
        raise ValueError(
            f"no description length recorded for {', '.join(missing)}: they were evaluated by an "
            "older version; rerun `monosemantic train` on them"
        )
    return [Candidate(r["name"], r["folder"], r["config"]["d_sae"], r["eval"]) for r in records]


def select(candidates: list[Candidate], tolerance: float) -> Candidate | None:
    """Mark the candidates with FVU ≤ ``tolerance``; return the one among them with the least
    description length (None when none is within tolerance)."""
    check(tolerance > 0, "tolerance", tolerance, "a positive FVU")
    for candidate in candidates:
        candidate.within = candidate.metrics["fvu"] <= tolerance
    within = [c for c in candidates if c.within]
    return min(within, key=lambda c: c.description_length) if within else None
