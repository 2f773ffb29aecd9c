"""Imported only in the fork server of the loader workers (a preload module of
:func:`datasets.workers.worker_context`): the fork server leaves SIGTERM to the main process, as
the workers do (it already ignores SIGINT).

A scheduler's SIGTERM goes to every process of the job. Were the fork server to die of it, the
workers it forked would exit too (a PyTorch loader worker stops once its parent is gone), and
the main process, finishing its step before saving, would fail with "DataLoader worker exited
unexpectedly" instead of saving a checkpoint. The fork server still exits when the main process
ends (it reads end-of-file on its pipe from it).
"""
import signal
import sys

# only in the fork server (``python -c 'from multiprocessing.forkserver import main; ...'``):
# a main process must keep its SIGTERM
if sys.argv == ["-c"] and "multiprocessing.forkserver" in sys.modules:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
