"""The scripts' command line (engine/cli.py): flags anywhere among the KEY VALUE overrides, one
line for every misuse, and a dry run that creates and downloads nothing."""
import os

import pytest

import datasets.cifar
from engine import commands
from engine.cli import ScriptParser
from tests.fixtures import DIGITS_ARB, ROOT, write_cifar
from utils.errors import ConfigError

CIFAR10 = os.path.join(ROOT, "config", "cifar10", "cifar10_imb01.yaml")


def one_error_line(capsys, prog="train_stage1.py") -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    return lines[0][len(f"{prog}: error: "):]


@pytest.mark.parametrize("argv", [
    ["--cfg", DIGITS_ARB, "num_epochs", "1", "lr", "0.5", "--dry-run"],
    ["num_epochs", "1", "--dry-run", "lr", "0.5", "--cfg", DIGITS_ARB],
    ["--dry-run", "num_epochs", "1", "--cfg=" + DIGITS_ARB, "lr", "0.5"],
    ["--cfg", DIGITS_ARB, "num_epochs", "1", "--local-rank=3", "lr", "0.5", "--dry-run"],
    ["--local_rank", "3", "--cfg", DIGITS_ARB, "--dry-run", "num_epochs", "1", "lr", "0.5"],
])
def test_train_flags_anywhere(argv):
    args = commands.stage1_args(argv)
    assert args.cfg == DIGITS_ARB and args.dry_run
    assert args.opts == ["num_epochs", "1", "lr", "0.5"]
    assert args.local_rank == (3 if any("local" in a for a in argv) else None)


def test_eval_flags_after_the_overrides():
    args = commands.eval_args(["--cfg", DIGITS_ARB, "resume", "x.pth.tar", "--out", "rep",
                                   "workers", "0", "--json", "--no-nc", "--no-report",
                                   "--local_rank", "1"])
    assert args.opts == ["resume", "x.pth.tar", "workers", "0"]
    assert (args.out, args.json, args.no_nc, args.no_report, args.local_rank) == (
        "rep", True, True, True, 1)
    args = commands.eval_args(["resume", "x.pth.tar", "--out=rep", "--cfg", DIGITS_ARB])
    assert args.opts == ["resume", "x.pth.tar"] and args.out == "rep" and not args.json


def test_values_with_one_dash_are_values_and_double_dash_ends_the_flags():
    args = commands.stage1_args(["--cfg", "c.yaml", "lr", "-1e-3", "seed", "-1", "name", "-x"])
    assert args.opts == ["lr", "-1e-3", "seed", "-1", "name", "-x"]
    args = commands.stage1_args(["--cfg", "c.yaml", "--", "name", "--dry-run"])
    assert args.opts == ["name", "--dry-run"] and not args.dry_run


@pytest.mark.parametrize("argv,message", [
    (["--cfg", DIGITS_ARB, "num_epochs", "1", "--dryrun"],
     "unknown flag '--dryrun' (did you mean '--dry-run'?); flags: --help, --cfg, --dry-run "
     "(see train_stage1.py --help)"),
    (["--cfg", DIGITS_ARB, "--lr", "0.1"],
     "unknown flag '--lr' (config keys take no dashes: write 'lr VALUE'); flags: --help, "
     "--cfg, --dry-run (see train_stage1.py --help)"),
    (["--cfg", DIGITS_ARB, "--num-epochs=3"],
     "unknown flag '--num-epochs' (config keys take no dashes: write 'num_epochs VALUE'); "
     "flags: --help, --cfg, --dry-run (see train_stage1.py --help)"),
    (["num_epochs", "1", "--dry-run"],
     "the following arguments are required: --cfg (see train_stage1.py --help)"),
    (["--dry-run", "--cfg"],
     "argument --cfg: expected one argument (see train_stage1.py --help)"),
    (["--cfg", DIGITS_ARB, "--local_rank", "one"],
     "argument --local_rank/--local-rank: invalid int value: 'one' (see train_stage1.py "
     "--help)"),
    (["--cfg", DIGITS_ARB, "--dry-run=yes"],
     "argument --dry-run: ignored explicit argument 'yes' (see train_stage1.py --help)"),
    (["--cfg", DIGITS_ARB, "lr", "--dry-run", "1", "x"],
     "overrides must come as KEY VALUE pairs; got an odd number: ['lr', '1', 'x']"),
])
def test_command_line_misuse_is_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        commands.train_stage1(argv)
    assert e.value.code == 2
    assert one_error_line(capsys) == message
    assert os.listdir(tmp_path) == []


def test_eval_unknown_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        commands.evaluate(["--cfg", DIGITS_ARB, "resume", "x", "--no-plot"])
    assert e.value.code == 2
    assert one_error_line(capsys, "eval.py").startswith(
        "unknown flag '--no-plot' (did you mean '--no-report'?); flags: --help, --cfg, --json, "
        "--out, --no-report, --no-nc")


def test_help_lists_the_flags_and_exits_0(capsys):
    with pytest.raises(SystemExit) as e:
        commands.stage1_args(["num_epochs", "1", "-h"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--dry-run" in out and "KEY VALUE" in out and "--local_rank" not in out


def test_script_parser_takes_flags_only():
    p = ScriptParser("x.py", "test")
    with pytest.raises(TypeError):
        p.add_argument("opts", nargs="*")
    with pytest.raises(ConfigError, match="unknown flag '--out'"):
        p.parse_args(["--cfg", "c.yaml", "--out", "d"])


# ----------------------------------------------------------------------- dry run creates nothing
def _tree(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, dirs, files in os.walk(root) for f in files + dirs)


def _no_download(*a, **k):
    raise AssertionError("a download was attempted")


def test_dry_run_with_cifar_missing_creates_and_downloads_nothing(tmp_path, monkeypatch,
                                                                  capsys):
    # the config's data_path is ./data/cifar10 with download True: a real run would download
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.cifar, "_try_download", _no_download)
    with pytest.raises(SystemExit) as e:
        commands.train_stage1(["--cfg", CIFAR10, "--dry-run"])
    assert e.value.code == 2
    assert one_error_line(capsys) == (
        "cifar10 not found under data_path './data/cifar10': expected "
        "cifar-10-batches-py/{data_batch_1,data_batch_2,data_batch_3,data_batch_4,data_batch_5,"
        "test_batch} or cifar-10-python.tar.gz (the python version from "
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz); set data_path to its folder; "
        "a dry run downloads nothing")
    assert os.listdir(tmp_path) == []


def test_dry_run_reads_an_archive_without_unpacking_it(tmp_path, monkeypatch, capsys):
    data = tmp_path / "cifar"
    write_cifar(str(data), "cifar10", 30, 2, tar=True)
    before = _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.cifar, "_try_download", _no_download)
    assert commands.train_stage1(["--cfg", CIFAR10, "data_path", str(data), "backbone",
                              "resnet8_fe", "--dry-run"]) == 0
    assert "training images: 118 (largest class 30, smallest 3" in capsys.readouterr().out
    assert _tree(tmp_path) == before == ["cifar", os.path.join("cifar", "cifar-10-python.tar.gz")]
    # the same numbers as from the unpacked files
    arc = datasets.cifar.load_cifar_arrays("cifar10", str(data), False, dry_run=True)
    files = datasets.cifar.load_cifar_arrays("cifar10", str(data), False)
    assert (data / "cifar-10-batches-py").is_dir()  # a real run unpacks
    assert all((a == b).all() for a, b in zip(arc, files))


def test_dry_run_on_a_truncated_archive_is_one_line(tmp_path, capsys):
    data = tmp_path / "cifar"
    write_cifar(str(data), "cifar10", 2, 1, tar=True)
    arc = data / "cifar-10-python.tar.gz"
    arc.write_bytes(arc.read_bytes()[:300])
    with pytest.raises(SystemExit) as e:
        commands.train_stage1(["--cfg", CIFAR10, "data_path", str(data), "--dry-run"])
    assert e.value.code == 2
    assert "cifar-10-python.tar.gz: cannot read the archive, truncated or corrupt" in (
        one_error_line(capsys))
    assert _tree(tmp_path) == ["cifar", os.path.join("cifar", "cifar-10-python.tar.gz")]


def test_failed_download_leaves_no_empty_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep").mkdir()
    calls = []

    def failed_download(spec, root):
        calls.append(root)
        assert os.path.isdir(root)
        return False
    monkeypatch.setattr(datasets.cifar, "_try_download", failed_download)
    with pytest.raises(SystemExit) as e:
        commands.train_stage1(["--cfg", CIFAR10, "output_dir", str(tmp_path / "out")])
    assert e.value.code == 2 and calls == ["./data/cifar10"]
    assert "cifar10 not found under data_path './data/cifar10'" in one_error_line(capsys)
    assert sorted(os.listdir(tmp_path)) == ["keep"]  # ./data and ./data/cifar10 removed
