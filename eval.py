"""Evaluate a checkpoint (ours or a MiSLAS / ARB-Loss one) on the config's test set and write
an analysis report.

    python eval.py --cfg config/cifar10/cifar10_imb001_stage1_mixup.yaml resume CKPT
    python eval.py --cfg CFG --out DIR --no-nc resume CKPT
    python eval.py --cfg CFG resume CKPT --json           # flags may come anywhere
    python eval.py --cfg CFG resume CKPT --tau-sweep tau_norm [--tau-grid 0:2:0.1]

Prints the metrics (``--json``: one JSON object) and writes a report folder: by default
``<run folder>/eval_<checkpoint stem>/`` for a checkpoint in a run's ``ckps`` folder (the
sibling of ``ckps``), else ``eval_<checkpoint stem>/`` beside the checkpoint (with
``_tau_norm<tau>`` / ``_logit_adjust<tau>`` appended under post-hoc corrections); ``--out DIR``
chooses it, ``--no-report`` skips it. The folder holds ``report.json`` (overall and
per-class metrics, calibration table, neural-collapse metrics), ``per_class.csv`` and the
figures ``reliability.png``, ``per_class_accuracy.png`` and ``weight_norm.png``.
Neural-collapse metrics need one pass over the training set; ``--no-nc`` skips it.

``--tau-sweep tau_norm | logit_adjust`` chooses the tau of a post-hoc correction on held-out
data instead (``engine/tau_sweep.py``): it scores every tau of ``--tau-grid`` on the selection
split (``--select-on``: the data set's validation list, or a class-stratified half of the test
set where there is none), prints the table and the report split's metrics at the chosen tau,
and writes ``tau_sweep_<method>.json`` / ``.csv`` into the report folder.

Exit status: 0 done; 2 user error (one line on stderr, no report written: a checkpoint that
cannot be read, does not fit or holds NaN / Inf weights, an unreadable image...); 130 Ctrl-C.
"""
import sys

from engine.commands import evaluate

if __name__ == "__main__":
    sys.exit(evaluate())
