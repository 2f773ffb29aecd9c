"""Metrics and analyses of trained networks: accuracy / calibration metrics, neural collapse,
the gradient attraction / repulsion monitor, figures and evaluation reports.

Pure computations on tensors (no loops over data sets: the engine runs those), importable by
the engine, the scripts and tools.
"""
