"""Helpers shared by the tests (the pytest fixtures and the CUDA skip live in conftest.py):
generated data in the real on-disk formats, command-line runs in fresh processes, and run-folder
helpers. Tests import from here, never from conftest.py or another test module."""
from __future__ import annotations

import json
import os
import pickle
import random
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import time
from typing import List

import numpy as np
import torch
from PIL import Image

from config import get_cfg_defaults
from datasets.imagelist import LIST_SPECS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def write_cifar(root: str, name: str, train_per_class: int, test_per_class: int,
                seed: int = 0, tar: bool = False) -> str:
    """Write a CIFAR python-version archive layout (random images) under ``root``."""
    rng = np.random.RandomState(seed)
    c = 10 if name == "cifar10" else 100
    folder = "cifar-10-batches-py" if c == 10 else "cifar-100-python"
    key = "labels" if c == 10 else "fine_labels"
    out = os.path.join(root, folder)
    os.makedirs(out, exist_ok=True)

    def batch(per_class):
        labels = np.repeat(np.arange(c), per_class)
        rng.shuffle(labels)
        data = (rng.randint(0, 256, size=(len(labels), 3072), dtype=np.uint8)
            if len(labels) * 3072 < 5e7 else np.zeros((len(labels), 3072), np.uint8))
        return data, labels.tolist()

    def dump(fname, data, labels):
        with open(os.path.join(out, fname), "wb") as f:
            pickle.dump({b"batch_label": b"x", b"data": data, key.encode(): labels,
                         b"filenames": [b"f"] * len(labels)}, f, protocol=2)

    data, labels = batch(train_per_class)
    if c == 10:
        for i, part in enumerate(np.array_split(np.arange(len(labels)), 5)):
            dump(f"data_batch_{i + 1}", data[part], [labels[j] for j in part])
        dump("test_batch", *batch(test_per_class))
        with open(os.path.join(out, "batches.meta"), "wb") as f:
            pickle.dump({"label_names": [str(i) for i in range(c)]}, f)
    else:
        dump("train", data, labels)
        dump("test", *batch(test_per_class))
        with open(os.path.join(out, "meta"), "wb") as f:
            pickle.dump({"fine_label_names": [str(i) for i in range(c)]}, f)
    if tar:
        archive = os.path.join(root, "cifar-10-python.tar.gz" if c == 10
                               else "cifar-100-python.tar.gz")
        with tarfile.open(archive, "w:gz") as t:
            t.add(out, arcname=folder)
        import shutil
        shutil.rmtree(out)
    return root


# Guards against hangs only (a normal run of any command here takes seconds; a loaded 2-core
# machine needs minutes just to import torch). On expiry the whole process group is killed, so
# a hung launcher cannot leave workers behind, and the test fails with the output so far.
HANG_TIMEOUT = 600


def child_env(extra=None) -> dict:
    """Environment of a command started by a test: the repository on the path and gloo on the
    loopback interface (no network needed). The thread count is inherited: a run compared
    bit for bit with an in-process one must use the same number of threads."""
    path = [ROOT] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    e = dict(os.environ, PYTHONPATH=os.pathsep.join(path), GLOO_SOCKET_IFNAME="lo")
    e.update(extra or {})
    return e


def start(args: List[str], env=None, cwd: str = ROOT, merge: bool = True) -> subprocess.Popen:
    """Start a command in its own process group (stderr merged into stdout if ``merge``)."""
    return subprocess.Popen(args, cwd=cwd, env=child_env(env), text=True,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                            start_new_session=True)


def descendants(pid: int) -> List[int]:
    """Every process below ``pid`` (from /proc), including ones in sessions of their own."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(p: subprocess.Popen) -> None:
    """SIGKILL ``p``, its process group and every descendant (a launcher's workers may run in
    sessions of their own and would keep the output pipes open)."""
    victims = descendants(p.pid)
    for kill in [lambda: os.killpg(p.pid, signal.SIGKILL)] + [
            (lambda c=c: os.kill(c, signal.SIGKILL)) for c in victims]:
        try:
            kill()
        except OSError:
            pass


def finish(p: subprocess.Popen, timeout: float = HANG_TIMEOUT):
    """Wait for ``p``; returns (stdout, stderr). Kills it and all its descendants on a hang."""
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(p)
        out, err = p.communicate(timeout=60)
        raise AssertionError(f"no exit after {timeout} s: {' '.join(map(str, p.args))}\n"
                             f"{(out or '')[-3000:]}{(err or '')[-3000:]}") from None


def run_cli(script: str, *args: str, cwd: str = ROOT, env=None,
            timeout: float = HANG_TIMEOUT) -> subprocess.CompletedProcess:
    """Run one of the command-line scripts in a fresh interpreter (separate stdout/stderr)."""
    p = start([sys.executable, os.path.join(ROOT, script), *args], env, cwd, merge=False)
    out, err = finish(p, timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def wait_for_rows(run_parent: str, n: int, proc: subprocess.Popen,
                  timeout: float = HANG_TIMEOUT) -> str:
    """Poll until the (single) run folder under ``run_parent`` has ``n`` metrics rows while
    ``proc`` runs; returns the run folder."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, finish(proc)
        runs = os.listdir(run_parent) if os.path.isdir(run_parent) else []
        if runs:
            f = os.path.join(run_parent, runs[0], "metrics.jsonl")
            if os.path.isfile(f) and len(open(f).read().splitlines()) >= n:
                return os.path.join(run_parent, runs[0])
        time.sleep(0.2)
    kill_tree(proc)
    raise AssertionError(f"training made no progress: {finish(proc)[0][-3000:]}")


def read_metrics(run_dir: str) -> List[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def snapshot(root: str) -> dict:
    """Every file and folder under ``root`` with its modification time (and a file's bytes):
    equal snapshots mean nothing there was written, created, renamed or removed."""
    out = {}
    for d, _, files in os.walk(root):
        out[d] = os.stat(d).st_mtime_ns
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[p] = (os.stat(p).st_mtime_ns, fh.read())
    return out


def only_run_dir(output_dir: str) -> str:
    runs = [d for d in os.listdir(output_dir) if os.path.isdir(os.path.join(output_dir, d))]
    assert len(runs) == 1, runs
    return os.path.join(output_dir, runs[0])


DIGITS_CE = os.path.join(ROOT, "config", "digits", "digits_imb005_ce.yaml")
DIGITS_ARB = os.path.join(ROOT, "config", "digits", "digits_imb005_arbloss.yaml")
RESUME_MIX = ["mixup", "True", "print_freq", "3"]  # the exact-resume runs (conftest: baseline)


def signal_after_step(monkeypatch, step: int, signum: int = signal.SIGTERM) -> None:
    """Make an in-process run see ``signum`` after its ``step``-th training step (counted over
    the run, from 1), as if the signal arrived during that step; ``monkeypatch.undo()`` (or the
    test's end) removes it."""
    from engine.state import StopFlag
    calls = {"n": 0}
    real = StopFlag.any_rank

    def fake(self):
        calls["n"] += 1
        if calls["n"] == step:
            self.signum = signum
        return real(self)

    monkeypatch.setattr(StopFlag, "any_rank", fake)


# ---------------------------------------------------------------- image lists
# Original ids 0..4 with counts chosen so that frequency order != id order, and a tie (2, 3).
TRAIN_COUNTS = {0: 2, 1: 6, 2: 4, 3: 4, 4: 1}
TEST_PER_CLASS = 2
SMALL = ["image_size", "32", "resize_size", "36"]
RANGES = ["head_class_idx", "[0, 1]", "med_class_idx", "[1, 3]", "tail_class_idx", "[3, 5]"]
SEED_CONFIGS = {
    "imagenet": "config/imagenet/imagenet_resnet50_arbloss_ugcc_mixup.yaml",
    "ina2018": "config/ina2018/ina2018_resnet50_arbloss_ugcc_mixup.yaml",
    "places": "config/places/places_resnet50_arbloss_ugcc_mixup.yaml",
}


def write_image_tree(root: str, dataset: str = "imagenet", train_counts=None,
                     test_per_class: int = TEST_PER_CLASS, size: int = 16, seed: int = 0,
                     list_dir=None) -> str:
    """Tiny JPEGs under ``root/{train,test}/<label>/`` and the data set's two list files in
    ``list_dir`` (default ``root``; shuffled lines, so label order in the file differs from
    frequency order)."""
    rng = random.Random(seed)
    counts = TRAIN_COUNTS if train_counts is None else train_counts
    spec = LIST_SPECS[dataset]
    list_dir = root if list_dir is None else list_dir
    os.makedirs(list_dir, exist_ok=True)
    for split, per_class, list_name in (("train", counts, spec.train_list),
                                        ("test", {c: test_per_class for c in counts},
                                         spec.test_list)):
        lines = []
        for label, n in per_class.items():
            folder = os.path.join(root, split, str(label))
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                rel = f"{split}/{label}/{i}.jpg"
                colour = (40 * label % 256, rng.randrange(256), 255 - 30 * label % 256)
                Image.new("RGB", (size + i, size), colour).save(os.path.join(root, rel))
                lines.append(f"{rel} {label}\n")
        rng.shuffle(lines)
        with open(os.path.join(list_dir, list_name), "w") as f:
            f.writelines(lines)
    return root


def make_cfg(dataset: str, data_path: str, **kw):
    cfg = get_cfg_defaults()
    cfg.dataset, cfg.data_path, cfg.num_classes = dataset, data_path, 5
    cfg.image_size, cfg.resize_size = 32, 36
    for k, v in kw.items():
        cfg[k] = v
    return cfg


def labels_in(path):
    with open(path) as f:
        return [(ln.rsplit(None, 1)[0], int(ln.rsplit(None, 1)[1])) for ln in f if ln.strip()]


def free_port() -> int:
    """A free TCP port on the loopback interface (for a rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strip_seconds(rows):
    """metrics.jsonl rows without their wall-clock field (to compare runs)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def final_weights(run):
    """Backbone and classifier tensors of a run's current checkpoint."""
    from utils.checkpoint import load_checkpoint
    ckpt = load_checkpoint(os.path.join(run, "ckps", "current.pth.tar"))
    return {**ckpt["state_dict_model"], **ckpt["state_dict_classifier"]}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


PUBLISHED_CONFIGS = os.path.join(ROOT, "tests", "data", "published_configs")


def one_error_line(capsys, prog: str = "") -> str:
    """The one stderr line of a refused command (no traceback), starting ``<prog>: error: ``
    when ``prog`` is given."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: " if prog else ""), err
    assert "Traceback" not in err
    return lines[0]


def expected_loss(r: dict) -> str:
    """The dry-run's loss line of a published config ``r`` (its raw yaml), from its flags."""
    if r.get("arbloss"):
        loss = ("ARB-Loss (global counts)" if r.get("arb_loss_use_global_class_cnt")
                else "ARB-Loss (batch counts)")
    else:
        loss = "cross-entropy"
    return loss + (f" + mixup (alpha {r['alpha']})" if r["mixup"] else "")


def random_net(cfg, in_channels, seed=0, lws=False):
    """A network of the config with random weights whose classifier rows have very
    different norms (so tau matters)."""
    from models import build_network
    from models.heads import LearnableWeightScaling
    torch.manual_seed(seed)
    net = build_network(cfg, cfg.num_classes, in_channels)
    with torch.no_grad():
        w = net.classifier.fc.weight
        w.mul_(torch.linspace(3.0, 0.3, w.shape[0])[:, None])
    if lws:
        net.lws = LearnableWeightScaling(cfg.num_classes)
        with torch.no_grad():
            net.lws.learned_norm.uniform_(0.5, 1.5)
    return net.eval()


def save_network(net, path, epoch=7):
    """``net`` as a checkpoint file (network state and epoch only)."""
    from utils.checkpoint import network_state
    torch.save({**network_state(net), "epoch": epoch}, path)
    return str(path)


# the loss line of --dry-run and of the run log, per loss key (defaults of the loss keys)
LOSS_DESCRIPTIONS = {
    "ce": "loss: cross-entropy",
    "arb": "loss: ARB-Loss (batch counts)",
    "balanced_softmax": "loss: Balanced Softmax (training-set counts)",
    "logit_adjust": "loss: logit-adjusted cross-entropy (tau 1)",
    "ldam": "loss: LDAM (max margin 0.5, scale 30)",
    "focal": "loss: focal loss (gamma 2)",
    "cb": "loss: class-balanced softmax cross-entropy (beta 0.9999)",
    "label_smoothing": "loss: label smoothing (epsilon 0.1)",
    "dr": "loss: dot regression to the fixed ETF (per-batch class scaling)",
}


def fake_scontrol(tmp_path, code=0):
    """An ``scontrol`` on PATH that records its arguments in ``calls.txt``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "scontrol"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'calls.txt'}\n"
                      f"echo 'scontrol: error: refused' >&2\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir


# ---------------------------------------------------------------- your own data (folder trees)
CLASSES = ["cat", "dog", "eel", "fox", "gnu", "yak"]


def write_folder_tree(root, train_per_class=20, test_per_class=2, classes=CLASSES, size=16,
                      test_split="test"):
    """Tiny JPEGs (a colour per class) in ImageFolder's layout: root/train/<class>/ and
    root/<test_split>/<class>/."""
    rng = np.random.RandomState(0)
    for split, n in (("train", train_per_class), (test_split, test_per_class)):
        for k, c in enumerate(classes):
            folder = os.path.join(root, split, c)
            os.makedirs(folder, exist_ok=True)
            for i in range(n if isinstance(n, int) else n[k]):
                colour = (40 * k % 256, int(rng.randint(256)), 255 - 30 * k % 256)
                Image.new("RGB", (size + i % 3, size), colour).save(
                    os.path.join(folder, f"{i:03d}.jpg"))
    return str(root)


def folder_yaml(tmp_path, text=""):
    p = tmp_path / "own.yaml"
    p.write_text("dataset: folder\nbackbone: resnet8_fe\n" + text)
    return str(p)


# One training run per loss recipe (cheapest on CIFAR-10 at imbalance factor 10: 36 images
# from 10 a class) and per kind of data: image lists (imb_factor null), Places-LT (frozen
# backbone + block).
PUBLISHED_TRAIN = [
    "arbloss/cifar10/cifar10_imb01.yaml",  # cross-entropy
    "mislas/cifar10/cifar10_imb01_stage1_mixup.yaml",  # cross-entropy + mixup
    "arbloss/cifar10/cifar10_imb01_arbloss.yaml",  # ARB-Loss, batch counts
    "arbloss/cifar10/cifar10_imb01_arbloss_mixup.yaml",  # ... + mixup
    "arbloss/cifar10/cifar10_imb01_arbloss_ugcc.yaml",  # ARB-Loss, training-set counts
    "arbloss/imagenet/imagenet_resnet50_arbloss_ugcc_mixup.yaml",  # ... + mixup
    "arbloss/places/places_resnet50_arbloss_ugcc_mixup.yaml",
]
