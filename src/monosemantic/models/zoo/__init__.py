"""Models the project trains itself from a seed: bilinear image classifiers (``mnist``) and
small Shakespeare transformers (``transformer``). ``monosemantic zoo train`` trains them; a few
ship inside the package (``SHIPPED``), so the demo and tests need not train them."""

from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[2] / "assets" / "zoo"
