"""Tests by kind (tests/unit, tests/integration, tests/processes); shared helpers in
tests/fixtures.py, pytest fixtures in tests/conftest.py."""
