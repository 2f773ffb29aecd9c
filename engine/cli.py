"""The command line shared by the scripts: ``--cfg FILE``, the script's own flags and ``KEY
VALUE`` config overrides, in any order.

    p = ScriptParser("train_stage1.py", "Stage-1 training.")   # --cfg, --local_rank built in
    p.add_argument("--dry-run", action="store_true", help="...")
    args = p.parse_args(argv)     # args.cfg, args.local_rank, args.dry_run, args.opts

A token that is a known flag (``--name``, ``--name=value``; flags with a value take the next
token) is the script's; ``--`` ends the flags; everything else is a ``KEY VALUE`` override,
kept in order in ``args.opts``. An unknown ``--name`` is an error, so a mistyped flag is never
taken for a config key. Values may start with one dash (``lr -1e-3`` reaches the config
check). ``python -m torch.distributed.launch`` passes ``--local-rank=N`` (or, before torch 2.0,
``--local_rank N``) before the script's own arguments: both spellings are flags. Errors
(an unknown flag, a missing ``--cfg``, a flag without its value) raise one-line
:class:`utils.errors.ConfigError`, which the scripts turn into exit status 2.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from typing import Dict, List, NoReturn, Optional, Sequence, Tuple

from config import get_cfg_defaults, load_config
from utils.errors import ConfigError

__all__ = ["ScriptParser", "training_parser", "run_training"]


class ScriptParser(argparse.ArgumentParser):
    """An argument parser whose flags may appear anywhere among the ``KEY VALUE`` overrides.

    Built in: ``--cfg FILE`` (required) and ``--local_rank`` / ``--local-rank N`` (set by
    ``python -m torch.distributed.launch``; ``dest`` ``local_rank``, default None).
    ``overrides`` is the help text of the ``KEY VALUE`` overrides.
    """

    def __init__(self, prog: str, description: str,
                 overrides: str = "config overrides, e.g. lr 0.05 num_epochs 10"):
        # flag spelling -> whether it takes a value (filled by add_argument, -h included)
        self._takes_value: Dict[str, bool] = {}
        super().__init__(prog=prog, description=description, allow_abbrev=False,
                         usage=f"{prog} --cfg FILE [flags] [KEY VALUE ...]",
                         epilog=f"KEY VALUE: {overrides}; keys are listed in "
                                "config/defaults.py. Flags may come before, between or after "
                                "the overrides.")
        self.add_argument("--cfg", required=True, metavar="FILE", help="yaml config file")
        self.add_argument("--local_rank", "--local-rank", type=int, default=None,
                          dest="local_rank", help=argparse.SUPPRESS)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        """As :meth:`argparse.ArgumentParser.add_argument`, for flags only (the overrides are
        the only positional arguments)."""
        action = super().add_argument(*args, **kwargs)
        if not action.option_strings:
            raise TypeError("ScriptParser takes flags only; KEY VALUE overrides are built in")
        for name in action.option_strings:
            self._takes_value[name] = action.nargs != 0
        return action

    def split(self, argv: Sequence[str]) -> Tuple[List[str], List[str]]:
        """(flag tokens, override tokens) of ``argv``, each in order."""
        flags: List[str] = []
        opts: List[str] = []
        i = 0
        while i < len(argv):
            tok = argv[i]
            i += 1
            if tok == "--":
                opts.extend(argv[i:])
                break
            name, eq, _ = tok.partition("=")
            if name in self._takes_value:
                flags.append(tok)
                if self._takes_value[name] and not eq and i < len(argv):
                    flags.append(argv[i])  # its value (argparse refuses one like '--x')
                    i += 1
            elif tok.startswith("--"):
                self.error(f"unknown flag '{name}'{self._hint(name)}")
            else:
                opts.append(tok)
        return flags, opts

    def _hint(self, name: str) -> str:
        """What to say after 'unknown flag': the config key meant, or the closest flag."""
        flags = self._flags()
        key = name[2:].replace("-", "_")
        if key in get_cfg_defaults():
            hint = f" (config keys take no dashes: write '{key} VALUE')"
        else:
            close = difflib.get_close_matches(name, flags, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{hint}; flags: {', '.join(flags)}"

    def _flags(self) -> List[str]:
        """The flags to list in messages (not the launcher's --local_rank)."""
        return [n for n in self._takes_value
                if n.startswith("--") and n not in ("--local_rank", "--local-rank")]

    def parse_args(self, args: Optional[Sequence[str]] = None,  # type: ignore[override]
                   namespace: Optional[argparse.Namespace] = None) -> argparse.Namespace:
        """The flags and ``opts`` (the ``KEY VALUE`` tokens, in order) of ``args`` (default:
        ``sys.argv[1:]``)."""
        argv = list(sys.argv[1:] if args is None else args)
        flags, opts = self.split(argv)
        ns = super().parse_args(flags, namespace)
        ns.opts = opts
        return ns

    def error(self, message: str) -> NoReturn:
        """One line, as every user error (argparse would print the usage first and exit)."""
        raise ConfigError(f"{message} (see {self.prog} --help)")


def training_parser(prog: str, description: str) -> ScriptParser:
    """The command line of a training script: ``--cfg``, ``--dry-run``, ``--local_rank`` and
    the ``KEY VALUE`` overrides."""
    p = ScriptParser(prog, description)
    p.add_argument("--dry-run", action="store_true",
                   help="build data, model and loss, print a summary and exit; creates and "
                        "downloads nothing, reads no checkpoint")
    return p


def run_training(prog: str, description: str, stage: int, trainer_cls,
                 argv: Optional[List[str]] = None, hooks: Sequence = ()) -> int:
    """A training script from end to end: arguments -> config (validated for ``stage``) ->
    process group and device -> ``trainer_cls(cfg, dist, hooks)`` -> ``train()`` (or its
    summary with ``--dry-run``). Returns the exit status; user errors exit 2 with one line."""
    from datasets import build_data
    from engine.runtime import distributed_session
    from utils import comm
    from utils.errors import exit_on_user_error

    with exit_on_user_error(prog):
        args = training_parser(prog, description).parse_args(argv)
        cfg = load_config(args.cfg, args.opts, stage=stage)
        with distributed_session(cfg, args.local_rank) as dist:
            # A dry run creates nothing: no download, no unpacked archive, no run folder.
            data = build_data(cfg, dry_run=True) if args.dry_run else None
            trainer = trainer_cls(cfg, dist, hooks, data=data, dry_run=args.dry_run)
            if args.dry_run:
                comm.on_main(print, trainer.summary())
                return 0
            return trainer.train()
