"""Training on a defense's encryptions (the utility side of the benchmark): models, the
authors' per-epoch encrypted batches, the training loop with epoch checkpoints."""
