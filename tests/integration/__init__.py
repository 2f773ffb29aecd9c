"""Integration tests: in-process training, evaluation and sweep runs of the commands on tiny
data (engine/commands.py, as the scripts call it)."""
