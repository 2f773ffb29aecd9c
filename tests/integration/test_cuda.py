"""Every CUDA code path: mixed precision (bf16, fp16 with the loss scaler), channels_last,
torch.compile, the CIFAR and image-list device pipelines on the GPU, deterministic mode, exact
resume, a 1-process NCCL group. All marked ``cuda``: they skip without a CUDA device and are
run by ``bench/gpu_check.sh`` on a GPU machine.

Here: the in-process training and evaluation runs; the rest in tests/processes/test_cuda.py."""
import json
import os

import numpy as np
import pytest
import torch

from datasets.device_pipeline import DeviceLoader
from engine import commands
from tests.fixtures import (
    DIGITS_ARB,
    DIGITS_CE,
    only_run_dir,
    read_metrics,
    signal_after_step,
)
from utils.checkpoint import load_checkpoint

pytestmark = pytest.mark.cuda
CUDA = ["device", "cuda", "num_epochs", "2", "print_freq", "3", "workers", "0"]


def rows_of(out_dir):
    return [{k: v for k, v in r.items() if k != "seconds"}
            for r in read_metrics(only_run_dir(str(out_dir)))]


def train(cfg, out, *opts):
    assert commands.train_stage1(["--cfg", cfg, "output_dir", str(out), *CUDA, *opts]) == 0
    return only_run_dir(str(out))


def eval_json(cfg, ckpt, capsys, *opts):
    capsys.readouterr()
    assert commands.evaluate(["--json", "--no-report", "--cfg", cfg, *CUDA, *opts, "resume",
                             ckpt]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_and_eval_matches(amp, tmp_path, capsys):
    run = train(DIGITS_ARB, tmp_path, "amp", amp, "mixup", "True")
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["train_loss"]) for r in rows)
    ckpt = load_checkpoint(os.path.join(run, "ckps", "current.pth.tar"))
    if amp == "fp16":  # the loss scaler's state is saved for exact resume
        assert ckpt["scaler"]["scale"] > 0
    else:
        assert "scaler" not in ckpt
    m = eval_json(DIGITS_ARB, os.path.join(run, "ckps", "current.pth.tar"), capsys, "amp", amp)
    assert m["acc1"] == pytest.approx(rows[-1]["acc1"], abs=1e-9)


def test_channels_last_gives_the_same_logits(tmp_path, monkeypatch):
    from config import load_config
    from models import build_network
    cfg = load_config(DIGITS_CE)
    torch.manual_seed(0)
    net = build_network(cfg, 10, 1).cuda().eval()
    x = torch.randn(16, 1, 8, 8, device="cuda")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare in full fp32
    with torch.no_grad():
        ref = net(x)
        net.to(memory_format=torch.channels_last)
        got = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    run = train(DIGITS_CE, tmp_path, "channels_last", "True")
    assert len(read_metrics(run)) == 2


def test_compile_trains(tmp_path):
    run = train(DIGITS_CE, tmp_path, "compile", "True", "num_epochs", "1")
    assert np.isfinite(read_metrics(run)[-1]["train_loss"])


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_the_compiled_step_trains_like_eager_and_resumes_exactly(tmp_path, monkeypatch, mode):
    """compile_mode on CUDA (reduce-overhead: CUDA graphs), mixup + ARB-Loss batch counts:
    the digits demo within 1 point of eager, and an interrupted compiled run resumed exactly
    as the uninterrupted compiled one."""
    common = ["deterministic", "True", "mixup", "True", "num_epochs", "3"]
    eager = rows_of(train_dir(DIGITS_ARB, tmp_path / "eager", *common))
    base = rows_of(train_dir(DIGITS_ARB, tmp_path / "base", *common, "compile_mode", mode))
    assert abs(base[-1]["acc1"] - eager[-1]["acc1"]) <= 1.0, (base[-1], eager[-1])
    signal_after_step(monkeypatch, 10)  # SIGTERM during step 3 of epoch 2
    args = ["--cfg", DIGITS_ARB, "output_dir", str(tmp_path / "cut"), *CUDA, *common,
            "compile_mode", mode]
    assert commands.train_stage1(args) == 128 + 15
    monkeypatch.undo()
    assert commands.train_stage1(args + ["resume", "auto"]) == 0
    assert rows_of(tmp_path / "cut") == base


def train_dir(cfg, out, *opts):
    train(cfg, out, *opts)
    return out


def test_deterministic_cuda_runs_are_identical(tmp_path):
    for i in range(2):
        train(DIGITS_ARB, tmp_path / str(i), "deterministic", "True", "mixup", "True")
    assert rows_of(tmp_path / "0") == rows_of(tmp_path / "1")


def test_exact_resume_on_cuda(tmp_path, monkeypatch):
    base = tmp_path / "base"
    train(DIGITS_CE, base, "deterministic", "True", "mixup", "True", "num_epochs", "3")
    signal_after_step(monkeypatch, 10)  # SIGTERM during step 3 of epoch 2
    cut = tmp_path / "cut"
    args = ["--cfg", DIGITS_CE, "output_dir", str(cut), *CUDA, "deterministic", "True",
            "mixup", "True", "num_epochs", "3"]
    assert commands.train_stage1(args) == 128 + 15
    monkeypatch.undo()
    assert commands.train_stage1(args + ["resume", "auto"]) == 0
    assert rows_of(cut) == rows_of(base)


def test_cifar_device_pipeline_on_cuda_equals_cpu():
    """The augmentation draws are made on the CPU, the gather on the device: the CUDA batches
    equal the CPU batches, so the CPU statistical tests of tests/test_device_pipeline.py hold
    on the GPU."""
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(300, 32, 32, 3), dtype=np.uint8)
    targets = rng.randint(0, 10, size=300)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    batches = {}
    for dev in ("cpu", "cuda"):
        ld = DeviceLoader(images, targets, 64, dev, mean, std, pad=4, flip=True, seed=3)
        ld.sampler.set_epoch(1)
        batches[dev] = [(x.cpu(), y.cpu()) for x, y in ld]
    assert len(batches["cuda"]) == 5
    for (xc, yc), (xg, yg) in zip(batches["cpu"], batches["cuda"]):
        assert torch.equal(yc, yg)
        torch.testing.assert_close(xg, xc, atol=1e-6, rtol=0)
    # flip rate and crop offsets on CUDA: the draws themselves are device-independent
    ld = DeviceLoader(images, targets, 64, "cuda", mean, std, pad=4, flip=True, seed=3)
    flips = torch.cat([ld.augment_params(0, b, 1000)[2] for b in range(4)]).float()
    assert abs(float(flips.mean()) - 0.5) < 0.03


def test_imagelist_fast_path_on_cuda_equals_cpu(tmp_path):
    from PIL import Image

    from datasets.imagelist import ImageListDataset, transforms
    from datasets.imagelist_pipeline import ImageListLoader
    rng = np.random.RandomState(0)
    names = []
    for i in range(24):
        arr = rng.randint(0, 256, size=(60 + i, 80, 3), dtype=np.uint8)
        names.append(f"{i}.jpg")
        Image.fromarray(arr).save(tmp_path / names[-1], quality=90)
    targets = np.arange(24) % 4
    for train in (True, False):
        ds = ImageListDataset(str(tmp_path), names, targets, transforms(train, 32, 36))
        out = {}
        for dev in ("cpu", "cuda"):
            ld = ImageListLoader(ds, 8, dev, train, image_size=32, resize_size=36, seed=1)
            ld.sampler.set_epoch(0)
            out[dev] = [(x.cpu(), y.cpu()) for x, y in ld]
        for (xc, yc), (xg, yg) in zip(out["cpu"], out["cuda"]):
            assert torch.equal(yc, yg)
            torch.testing.assert_close(xg, xc, atol=1e-4, rtol=1e-4)
