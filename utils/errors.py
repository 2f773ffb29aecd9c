"""User-facing errors.

Anything a user can cause (bad yaml, missing data, bad checkpoint) is raised as a
:class:`UserError`. The command-line entry points catch it, print one line on stderr and
exit with status 2 -- no traceback.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


class UserError(Exception):
    """An error caused by the user's input; the message is shown as is."""


class ConfigError(UserError):
    """A config key holds a value that is not accepted."""


class DataError(UserError):
    """Data files are missing or malformed."""


class CheckpointError(UserError):
    """A checkpoint cannot be read or does not fit the model."""


EXIT_USER_ERROR = 2


def one_line(msg: str) -> str:
    """The user-facing line of an error message.

    An error raised in a DataLoader worker arrives re-raised with the worker's traceback in
    its message; its last line is ``module.ErrorClass: <message>``: keep only the message.
    """
    if "Traceback" in msg:
        last = [line for line in msg.splitlines() if line.strip()][-1]
        head, sep, tail = last.partition(": ")
        msg = tail if sep and "Error" in head else last
    return " ".join(msg.split("\n")).strip()


@contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """Turn a :class:`UserError` into ``prog: error: <message>`` on stderr and exit 2."""
    try:
        yield
    except UserError as e:
        msg = one_line(str(e))
        sys.stderr.write(f"{prog}: error: {msg}\n")
        sys.stderr.flush()
        sys.exit(EXIT_USER_ERROR)
