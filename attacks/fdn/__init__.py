"""The fusion-denoising attack of Luo, Xiao, Wu, Liu, Ooi, "Fusion-denoising attack on InstaHide
with data augmentation" (AAAI 2022, arXiv 2105.07754), as a staged release attack: ``fdn``.

Module map: config (the grouping's sections with the comparative network as the similarity,
and the fusion network's), groups (groups as the fusion network reads them: the release's and
the attacker's simulated ones), nets (the fusion-denoising network), training (its training
through the model cache, and inference), stages (the fusion stage, shared with carlini's
`recovery = "fusion"`, and the decryption), evaluation (metrics with the key), attack (the
registered class). The comparative network itself is a similarity method of the shared
grouping (hidebench.attacks.grouping, `similarity.method = "comparative"`). Presets:
challenge_data/presets/fdn/*.toml.
"""

# The stages in run order: the names ExecutionContext.recompute (`--stages`) takes.
STAGE_NAMES = ("similarity_model", "grouping", "fusion", "decryption")
