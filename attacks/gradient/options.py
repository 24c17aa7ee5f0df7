"""The option names of the gradient-matching attacks' configs (checked by base.py, used by
matching.py)."""

DISTANCES = ("l2", "cosine", "cosine_layerwise")
IMPLS = ("auto", "func", "loop")
LABEL_MODES = ("auto", "known", "recover", "optimise")
