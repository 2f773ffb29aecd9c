"""Every error class and exit code of the command-line tools, and the one-line message helpers.

Anything a user can cause (bad yaml, missing data, bad checkpoint, an unwritable folder) is
raised as a :class:`UserError`. The entry points catch it with :func:`exit_on_user_error`,
print one line on stderr and exit with status 2 -- no traceback.

Exit codes: 0 done; 2 user error (:data:`EXIT_USER_ERROR`); 3 the training loss became NaN /
Inf (:data:`EXIT_NONFINITE`); 128 + N stopped by signal N after saving a resumable checkpoint
(143 for SIGTERM, 130 for SIGINT); 130 also for Ctrl-C (SIGINT) before training started
(:data:`EXIT_INTERRUPTED`, nothing to save).
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator, Union

EXIT_USER_ERROR = 2
EXIT_NONFINITE = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


class UserError(Exception):
    """An error caused by the user's input; the message is shown as is."""


class ConfigError(UserError):
    """A config key holds a value that is not accepted."""


class DataError(UserError):
    """Data files are missing or malformed."""


class CheckpointError(UserError):
    """A checkpoint cannot be read or does not fit the model."""


class ReportError(UserError):
    """A report folder cannot be created or written."""


class RunError(UserError):
    """A run folder cannot be read or written, or another process is using it."""


class NonFiniteLoss(Exception):
    """The training loss became NaN or Inf (exit code :data:`EXIT_NONFINITE`)."""

    def __init__(self, epoch: int, iteration: int, value: float):
        super().__init__(f"non-finite loss ({value}) at epoch {epoch + 1}, iteration "
                         f"{iteration + 1}; the last good checkpoint is left untouched")


class Interrupted(Exception):
    """SIGTERM / SIGINT received: training stopped after the current step."""


def first_line(err: Union[BaseException, str], default: str = "") -> str:
    """The first non-blank line of an exception's message (or of a text), for one-line errors
    that quote a library's message; ``default`` (else the exception's class name) when blank."""
    text = str(err).strip()
    if text:
        return text.splitlines()[0]
    if default or isinstance(err, str):
        return default
    return type(err).__name__


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
    """Turn a :class:`UserError` into ``prog: error: <message>`` on stderr and exit 2, and a
    Ctrl-C that reaches the script (SIGINT before training installed its own handler, e.g.
    while the data is being built) into ``prog: interrupted`` and exit 130, without a
    traceback. Whatever the block opened has been closed on the way out (loader workers
    included, see :func:`engine.runtime.distributed_session`)."""
    try:
        yield
    except UserError as e:
        msg = one_line(str(e))
        sys.stderr.write(f"{prog}: error: {msg}\n")
        sys.stderr.flush()
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        sys.stderr.flush()
        sys.exit(EXIT_INTERRUPTED)
