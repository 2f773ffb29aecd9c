"""Evaluate a checkpoint (ours or a MiSLAS / ARB-Loss one) and write an analysis report, or
choose a post-hoc tau on held-out data:

    python eval.py --cfg CFG resume CKPT [--json] [--out DIR] [--no-nc] [--no-report]
    python eval.py --cfg CFG resume CKPT --tau-sweep tau_norm | logit_adjust [--tau-grid 0:2:0.1]

A shim over :func:`engine.commands.evaluate`; what it prints and writes, and its exit statuses,
are described in engine/eval_cli.py.
"""
import sys

from engine.commands import evaluate

if __name__ == "__main__":
    sys.exit(evaluate())
