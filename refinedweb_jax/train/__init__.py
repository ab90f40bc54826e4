"""Training: losses, optimizers, the train step, the loop, checkpoints and logs."""
