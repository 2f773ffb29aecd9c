"""Failures of real processes with loader workers: every error exit ends the process and all of
its processes (loader workers, the fork server, the launcher's ranks) within seconds, with the
promised exit status and one line; a second process never takes a running run's folder.

Each run carries a marker in its environment, inherited by every process it starts; after the
exit no process with the marker may be left (also processes started after the tree was
collected). The runs synchronise through files (``tests/train_with_fault.py``: ``pause`` waits
at the end of the first epoch, workers running) and a named pipe (eval), never by sleeping.

Here: the launched processes; the rest in tests/unit/test_faults_processes.py."""
import errno
import os
import re
import shutil
import signal
import sys
import time
import uuid

import pytest

from engine import commands
from tests.fixtures import (
    DIGITS_CE,
    HANG_TIMEOUT,
    ROOT,
    SEED_CONFIGS,
    SMALL,
    descendants,
    finish,
    kill_tree,
    labels_in,
    only_run_dir,
    read_metrics,
    snapshot,
    start,
    write_image_tree,
)
from utils.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow
FAULTY = os.path.join(ROOT, "tests", "train_with_fault.py")
MARK = "ARB_TEST_RUN"
# how long every process of a run may take to be gone after its exit (they go at once; the
# margin is for a loaded 2-core machine)
GONE_WITHIN = 60
IMAGENET = os.path.join(ROOT, SEED_CONFIGS["imagenet"])
IMAGES = ["num_classes", "3", "backbone", "resnet8_fe", *SMALL, "head_class_idx", "[0, 1]",
          "med_class_idx", "[1, 2]", "tail_class_idx", "[2, 3]", "batch_size", "4"]
DIGITS = ["num_epochs", "2", "print_freq", "3", "workers", "2"]


# ------------------------------------------------------------------ helpers
class Run:
    """A launched command with its own marker and sync folder."""

    def __init__(self, tmp_path, args, fault="", extra_env=None):
        self.sync = tmp_path / f"sync_{uuid.uuid4().hex[:8]}"
        self.sync.mkdir()
        self.token = uuid.uuid4().hex
        env = {MARK: self.token, "ARB_TEST_SYNC": str(self.sync), "ARB_TEST_FAULT": fault,
               "OMP_NUM_THREADS": "1", **(extra_env or {})}
        self.proc = start(args, env, merge=False)
        self.seen = set()

    def wait_paused(self, ranks=(0,)):
        """Wait until every rank in ``ranks`` is paused (``paused.<rank>`` written)."""
        for r in ranks:
            wait_for(lambda r=r: (self.sync / f"paused.{r}").exists(), self.proc)

    def collect(self):
        """The process tree now (the command, its children and theirs)."""
        pids = [self.proc.pid] + descendants(self.proc.pid)
        self.seen.update(pids)
        return pids

    def go(self):
        (self.sync / "go").write_text("")

    def finish(self, timeout=HANG_TIMEOUT):
        out, err = finish(self.proc, timeout)
        return self.proc.returncode, out, err

    def with_workers_then_go(self):
        """Wait for the pause, check the loader workers are up, let the run go on."""
        self.wait_paused()
        assert len(workers_of(self.collect())) >= 2
        self.go()
        return self.finish()

    def assert_all_gone(self):
        """No process of this run is left (zombies count as gone), within GONE_WITHIN s."""
        t0 = time.time()
        while True:
            left = [p for p in alive_pids() if p in self.seen or has_marker(p, self.token)]
            if not left or time.time() - t0 > GONE_WITHIN:
                break
            time.sleep(0.1)
        assert not left, f"still running after the exit: {[cmdline(p) for p in left]}"


def wait_for(condition, proc, timeout=HANG_TIMEOUT):
    """Poll ``condition`` while ``proc`` runs (a guard, not a synchronisation, is the timeout)."""
    t0 = time.time()
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"exited {proc.returncode} early:\n{out[-3000:]}{err[-3000:]}")
        if time.time() - t0 > timeout:
            kill_tree(proc)
            raise AssertionError(f"no progress in {timeout} s: {finish(proc)[0][-3000:]}")
        time.sleep(0.05)


def alive_pids():
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in ("Z", "X"):
                out.append(int(d))
    return out


def has_marker(pid, token):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{MARK}={token}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f"{pid}: " + f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return f"{pid}: (gone)"


def one_error_line(err, prog):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), err[-3000:]
    return lines[0]


def parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def workers_of(pids):
    """The loader workers among ``pids``: the children of a fork server."""
    servers = {p for p in pids if "forkserver" in cmdline(p)}
    return [p for p in pids if parent(p) in servers]


# ------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A small ImageNet-LT tree (3 classes) and a 1-epoch checkpoint trained on it."""
    root = tmp_path_factory.mktemp("faults_images")
    data = write_image_tree(str(root / "data"), "imagenet", train_counts={0: 8, 1: 6, 2: 4},
                            test_per_class=4)
    out = root / "runs"
    assert commands.train_stage1(["--cfg", IMAGENET, "data_path", data, *IMAGES, "workers", "0",
                              "num_epochs", "1", "output_dir", str(out)]) == 0
    return data, os.path.join(only_run_dir(str(out)), "ckps", "current.pth.tar")


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults_digits")
    assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(out), "num_epochs", "1",
                              "print_freq", "3"]) == 0
    return os.path.join(only_run_dir(str(out)), "ckps", "current.pth.tar")


def private_copy(data, dest):
    shutil.copytree(data, dest)
    return str(dest)


def corrupt_image(data, list_name):
    """Overwrite the image of the list's last line (the first is checked at start-up) with a
    JPEG that breaks off after its header; returns its path."""
    path = os.path.join(data, labels_in(os.path.join(data, list_name))[-1][0])
    with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20)
    return path


# ------------------------------------------------------------------ (a) error exits end everything
def test_corrupt_image_mid_epoch_ends_training_and_its_workers(images, tmp_path):
    data = private_copy(images[0], tmp_path / "data")
    out = tmp_path / "out"
    run = Run(tmp_path, [sys.executable, FAULTY, "--cfg", IMAGENET, "data_path", data,
                         *IMAGES, "workers", "2", "num_epochs", "2", "print_freq", "1",
                         "output_dir", str(out)], fault="pause")
    run.wait_paused()
    pids = run.collect()
    assert len(workers_of(pids)) >= 2, [cmdline(p) for p in pids]
    bad = corrupt_image(data, "ImageNet_LT_train.txt")
    run.go()
    code, _, err = run.finish()
    assert code == 2, err[-3000:]
    line = one_error_line(err, "train_with_fault.py")
    assert line.startswith(f"train_with_fault.py: error: cannot read image {bad} (listed in ")
    run.assert_all_gone()
    log = open(os.path.join(only_run_dir(str(out)), "logs",
                            "imagenet_resnet50_arbloss_ugcc_mixup.txt")).read()
    # the data error in the run's log, with where it happened (a step of epoch 2)
    assert re.search(r"ERROR stopped at epoch 2, step [1-5]: cannot read image "
                     + re.escape(f"{bad} (listed in "), log), log[-2000:]


def test_corrupt_image_in_eval_ends_eval_and_its_workers(images, tmp_path):
    """The image of a later line of the test list is a named pipe: the worker reading it
    blocks until the test writes a broken JPEG into it, so the tree is collected while the
    workers surely run."""
    data = private_copy(images[0], tmp_path / "data")
    bad = os.path.join(data, labels_in(os.path.join(data, "ImageNet_LT_test.txt"))[-1][0])
    os.remove(bad)
    os.mkfifo(bad)
    report = tmp_path / "report"
    run = Run(tmp_path, [sys.executable, os.path.join(ROOT, "eval.py"), "--cfg", IMAGENET,
                         "data_path", data, *IMAGES, "workers", "2", "--no-nc", "--out",
                         str(report), "resume", images[1]])
    fd = None

    def reader_is_there():
        nonlocal fd
        try:
            fd = os.open(bad, os.O_WRONLY | os.O_NONBLOCK)
            return True
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: nobody reads the pipe yet
                raise
            return False

    wait_for(reader_is_there, run.proc)
    pids = run.collect()
    os.write(fd, b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20)
    os.close(fd)
    assert len(workers_of(pids)) >= 2, [cmdline(p) for p in pids]
    code, _, err = run.finish()
    assert code == 2, err[-3000:]
    line = one_error_line(err, "eval.py")
    assert line.startswith(f"eval.py: error: cannot read image {bad} (listed in ")
    assert not report.exists()
    run.assert_all_gone()


def test_user_error_before_training_exits_2_and_creates_nothing(digits_ckpt, tmp_path):
    origin = os.path.dirname(os.path.dirname(digits_ckpt))
    before = snapshot(origin)
    out = tmp_path / "out"
    run = Run(tmp_path, [sys.executable, FAULTY, "--cfg", DIGITS_CE, *DIGITS, "backbone",
                         "resnet20_fe", "output_dir", str(out), "resume", digits_ckpt])
    code, _, err = run.finish()
    assert code == 2, err[-3000:]
    line = one_error_line(err, "train_with_fault.py")
    assert f"error: {digits_ckpt}: 'state_dict_model' does not fit this model" in line
    run.assert_all_gone()
    assert not out.exists()
    assert snapshot(origin) == before


def digits_run(tmp_path, fault):
    """(output folder, the launched digits run with ``fault``)."""
    out = tmp_path / "out"
    return out, Run(tmp_path, [sys.executable, FAULTY, "--cfg", DIGITS_CE, *DIGITS,
                               "output_dir", str(out)], fault=fault)


def test_non_finite_loss_exits_3_and_ends_the_workers(tmp_path):
    out, run = digits_run(tmp_path, "pause+nan")
    code, stdout, _ = run.with_workers_then_go()
    assert code == 3, stdout[-3000:]
    assert "non-finite loss (nan) at epoch 2, iteration 2" in stdout
    run.assert_all_gone()
    ckpt = os.path.join(only_run_dir(str(out)), "ckps", "current.pth.tar")
    assert load_checkpoint(ckpt)["epoch"] == 1  # the last good one


def ignored_signals(pid):
    """The signal numbers ``pid`` ignores (SigIgn of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        mask = int(next(ln for ln in f if ln.startswith("SigIgn:")).split()[1], 16)
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


def test_sigterm_to_the_process_group_saves_and_ends_everything(tmp_path):
    """As a scheduler does: SIGTERM to every process of the job. Every process but the main
    one ignores it (a fork server killed by it would take its workers along, and the main
    process could not finish its step and save)."""
    out = tmp_path / "out"
    run = Run(tmp_path, [sys.executable, FAULTY, "--cfg", DIGITS_CE, *DIGITS,
                         "output_dir", str(out)], fault="pause")
    run.wait_paused()
    pids = run.collect()
    assert len(workers_of(pids)) >= 2
    for pid in pids[1:]:
        assert {signal.SIGTERM, signal.SIGINT} <= ignored_signals(pid), cmdline(pid)
    os.killpg(run.proc.pid, signal.SIGTERM)
    run.go()
    code, stdout, _ = run.finish()
    assert code == 128 + signal.SIGTERM, stdout[-3000:]
    assert "interrupted by signal 15 at epoch 2, iteration 1" in stdout
    run.assert_all_gone()
    ckpt = load_checkpoint(os.path.join(only_run_dir(str(out)), "ckps", "current.pth.tar"))
    assert (ckpt["epoch"], ckpt["iteration"]) == (1, 1)


def test_ctrl_c_during_start_up_exits_130_at_once(tmp_path):
    """SIGINT to the process group (a terminal's Ctrl-C) while the data is being built."""
    run = Run(tmp_path, [sys.executable, FAULTY, "--cfg", DIGITS_CE, *DIGITS,
                         "output_dir", str(tmp_path / "out")], fault="block_in_build")
    run.wait_paused()
    run.collect()
    os.killpg(run.proc.pid, signal.SIGINT)
    code, _, err = run.finish(timeout=GONE_WITHIN)
    assert code == 130, err[-3000:]
    assert one_error_line(err, "train_with_fault.py") == "train_with_fault.py: interrupted"
    run.assert_all_gone()


def test_disk_full_while_saving_exits_2_and_keeps_the_previous_checkpoint(tmp_path):
    out, run = digits_run(tmp_path, "pause+enospc")
    code, _, err = run.with_workers_then_go()
    assert code == 2, err[-3000:]
    folder = os.path.join(only_run_dir(str(out)), "ckps")
    line = one_error_line(err, "train_with_fault.py")
    assert line == (f"train_with_fault.py: error: cannot save checkpoint "
                    f"{folder}/current.pth.tar: no space left on device in {folder}; the "
                    "previous checkpoint there is unchanged")
    run.assert_all_gone()
    assert sorted(os.listdir(folder)) == ["current.pth.tar", "model_best.pth.tar"]
    assert load_checkpoint(os.path.join(folder, "current.pth.tar"))["epoch"] == 1
    log = open(os.path.join(os.path.dirname(folder), "logs", "digits_imb005_ce.txt")).read()
    assert ("ERROR stopped at the end of epoch 2 (evaluation, metrics or checkpoint): cannot "
            "save checkpoint") in log


# ------------------------------------------------------------------ (c) one process per folder
def test_second_process_on_a_running_folder_stops_and_touches_nothing(tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, FAULTY, "--cfg", DIGITS_CE, *DIGITS, "output_dir", str(out)]
    first = Run(tmp_path, args, fault="pause")
    first.wait_paused()  # its checkpoint of epoch 1 is saved; it holds the folder
    folder = only_run_dir(str(out))
    before = snapshot(str(out))
    second = Run(tmp_path, args + ["resume", "auto"])
    code, _, err = second.finish()
    assert code == 2, err[-3000:]
    assert one_error_line(err, "train_with_fault.py") == (
        f"train_with_fault.py: error: run folder {folder} is in use by process "
        f"{first.proc.pid} (a run of this config is writing there); wait for it to end or "
        "stop it first")
    second.assert_all_gone()
    assert snapshot(str(out)) == before
    # the holder is killed (SIGKILL to the main process alone: it cleans nothing up); its
    # fork server and workers end with it, and its lock does not block the folder
    assert len(workers_of(first.collect())) >= 2
    first.proc.kill()
    first.finish(timeout=GONE_WITHIN)  # its output pipes close only when all of them are gone
    first.assert_all_gone()
    assert commands.train_stage1(["--cfg", DIGITS_CE, *DIGITS, "workers", "0",
                              "output_dir", str(out), "resume", "auto"]) == 0
    assert only_run_dir(str(out)) == folder
    assert [r["epoch"] for r in read_metrics(folder)] == [1, 2]


# ------------------------------------------------------------------ torchrun
@pytest.mark.distributed
def test_corrupt_image_under_torchrun_ends_every_rank_and_worker(images, tmp_path):
    from tests.fixtures import free_port
    data = private_copy(images[0], tmp_path / "data")
    run = Run(tmp_path, [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                         "2", "--master_port", str(free_port()), FAULTY, "--cfg", IMAGENET,
                         "data_path", data, *IMAGES, "workers", "4", "num_epochs", "2",
                         "print_freq", "1", "output_dir", str(tmp_path / "out")],
              fault="pause")
    run.wait_paused(ranks=(0, 1))
    pids = run.collect()
    assert len(pids) >= 1 + 2 + 4, [cmdline(p) for p in pids]  # launcher, ranks, workers
    bad = corrupt_image(data, "ImageNet_LT_train.txt")
    run.go()
    code, out, err = run.finish()
    assert code != 0
    assert f"train_with_fault.py: error: cannot read image {bad} (listed in " in err, (
        out[-3000:] + err[-3000:])
    run.assert_all_gone()
    # whichever rank read it, the run's log says so (rank 1 marks its line)
    log = open(os.path.join(only_run_dir(str(tmp_path / "out")), "logs",
                            "imagenet_resnet50_arbloss_ugcc_mixup.txt")).read()
    assert re.search(r"ERROR (rank 1: )?stopped at epoch 2, step \d+: cannot read image "
                     + re.escape(f"{bad} (listed in "), log), log[-2000:]


@pytest.mark.distributed
def test_disk_full_under_torchrun_stops_every_rank_with_the_same_line(tmp_path):
    """Only rank 0 writes; the failed save is shared, so rank 1 is not left waiting in the
    next collective: both exit 2 with the same line."""
    from tests.fixtures import free_port
    out = tmp_path / "out"
    run = Run(tmp_path, [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                         "2", "--master_port", str(free_port()), FAULTY, "--cfg", DIGITS_CE,
                         *DIGITS, "workers", "4", "output_dir", str(out)],
              fault="pause+enospc")
    run.wait_paused(ranks=(0, 1))
    assert len(workers_of(run.collect())) >= 4
    run.go()
    code, stdout, err = run.finish()
    assert code != 0
    folder = os.path.join(only_run_dir(str(out)), "ckps")
    line = (f"train_with_fault.py: error: cannot save checkpoint {folder}/current.pth.tar: no "
            f"space left on device in {folder}; the previous checkpoint there is unchanged")
    assert err.count(line) == 2, stdout[-3000:] + err[-3000:]
    assert not re.search(r"\[rank\d\]: Traceback", err), err[-3000:]  # no rank's traceback
    run.assert_all_gone()
    assert load_checkpoint(os.path.join(folder, "current.pth.tar"))["epoch"] == 1
