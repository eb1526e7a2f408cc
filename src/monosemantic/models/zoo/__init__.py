"""Models the project trains itself from a seed: bilinear image classifiers (``mnist``) and
small Shakespeare transformers (``transformer``). ``monosemantic zoo train`` trains them."""
