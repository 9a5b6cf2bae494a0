"""Training utilities: learning-rate schedules, optimizers and freezing, checkpoints, model averaging.

Submodules are imported explicitly (``from wenet_echat.train.checkpoint import save_checkpoint``) so that importing
this package stays cheap and never pulls in DeepSpeed.
"""
