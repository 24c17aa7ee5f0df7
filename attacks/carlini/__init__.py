"""Carlini et al., "An Attack on InstaHide: Is Private Learning Possible with Instance
Encoding?" (arXiv 2011.05315), as a staged release attack: ``carlini``.

Module map: config (one section per stage), stages (the declared stages and their inputs and
outputs), pipeline (the cached stage runner), mixing (the mixing model: designs, memberships,
coefficients), similarity / clustering / assignment / grouping (stages 1-3; group_model: the
second graph, an encryption against a whole group; scalable_grouping: the same without an E x E
matrix, for releases over `dense_max` encryptions), regression /
sign_sync / reassignment (stage 4), signs (stage 5), evaluation (metrics with the key), attack
(the registered class).
"""

# The stages in run order: the names ExecutionContext.recompute (`--stages`) takes.
STAGE_NAMES = ("similarity_model", "grouping", "decoder_prior", "regression", "signs", "decryption")

# The library preset for the embedded `faces` demo (demo, notebook, benchmarks): half the
# similarity training, so that the demo runs in under two minutes on 2 CPU cores (README
# results). Its T=20 is below reassignment.min_T, so the default runs no reassignment rounds.
DEMO_CONFIG = {"similarity": {"train_steps": 300}}
