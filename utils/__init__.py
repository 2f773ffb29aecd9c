"""Shared helpers: config loading, logging, metrics, checkpoints, distributed plumbing."""
