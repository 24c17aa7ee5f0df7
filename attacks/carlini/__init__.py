"""Carlini et al., "An Attack on InstaHide: Is Private Learning Possible with Instance
Encoding?" (arXiv 2011.05315), as a staged release attack: ``carlini``.

Module map: config (one section per stage; the grouping's sections come from
hidebench.attacks.grouping), stages (the declared stages, their inputs and outputs), mixing
(the mixing model the regression inverts: designs and coefficients), regression / sign_sync /
reassignment (stage 4), signs (stage 5), evaluation (metrics with the key), attack (the
registered class). With `recovery = "fusion"` stages 4-5 are fdn's fusion network instead
(hidebench.attacks.fdn.stages). The grouping (similarity, clustering, assignment, the second graph, the T
estimate) is hidebench.attacks.grouping, shared with the decoders and fdn. Presets:
challenge_data/presets/carlini/*.toml (`--config demo`, `--config paper`).
"""

# The stages in run order: the names ExecutionContext.recompute (`--stages`) takes.
STAGE_NAMES = ("similarity_model", "grouping", "decoder_prior", "regression", "signs", "fusion", "decryption")
