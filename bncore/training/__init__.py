"""Networks, the training loop, checkpoints, epoch metrics, devices, the trained model and its plots."""
