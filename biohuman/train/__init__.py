"""Training and held-out evaluation of the video -> pose + activations model: splits, data,
losses, metrics, baselines, trainer, evaluation (see docs/training.md)."""
