"""Process tests: the scripts as users launch them (python, torchrun, torch.distributed.launch),
signals, crashes and faults in real processes."""
