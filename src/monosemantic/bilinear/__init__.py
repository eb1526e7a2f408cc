"""Bilinear MLPs: features read from the weights (Pearce et al. 2024, arXiv 2410.08417).

The layers themselves (``Bilinear``, ``BilinearMLP``, GLU variants) are nn building blocks in
``monosemantic.models.layers``; this package analyses them:

- ``tensor``: the symmetrised tensor B, interaction matrices Q(u), eigendecomposition, folding;
- ``analysis``: effective rank, truncation, adversarial masks;
- ``sae_basis``: a bilinear LM's MLP read in a basis of SAE features;
- ``plots`` and ``report``: PNGs and JSON of a decomposed classifier.

The ``monosemantic bilinear`` commands over them are in ``monosemantic.commands.bilinear``.
"""
