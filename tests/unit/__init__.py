"""Unit tests: functions, classes and dry runs on small tensors and files; no training loop, no
launched process (``python -m pytest -q tests/unit``: the inner loop)."""
