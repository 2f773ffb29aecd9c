"""Imported only in the fork server of the loader workers (a preload module of
:func:`datasets.workers.worker_context`), to give it the workers' behaviour on signals.

* It ignores SIGTERM (it already ignores SIGINT). A scheduler's SIGTERM goes to every process
  of the job; were the fork server to die of it, the workers it forked would exit too (a
  PyTorch loader worker stops once its parent is gone), and the main process, finishing its
  step before saving, would fail with "DataLoader worker exited unexpectedly" instead of
  saving a checkpoint.
* It ends with the main process, however that ends (:func:`datasets.workers.die_with_parent`),
  and its workers with it.
"""
import signal
import sys

from datasets.workers import die_with_parent

# only in the fork server (``python -c 'from multiprocessing.forkserver import main; ...'``):
# a main process that imported this by mistake keeps its SIGTERM
if sys.argv == ["-c"] and "multiprocessing.forkserver" in sys.modules:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent()
