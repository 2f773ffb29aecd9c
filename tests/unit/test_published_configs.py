"""The published yaml files of ARB-Loss and MiSLAS (verbatim copies under
tests/data/published_configs, see the README.txt there) run unchanged, and our configs of the same
name carry the published values.

Here: the checks without a training loop or a process; the rest in
tests/integration/test_published_configs.py, tests/processes/test_published_configs.py."""
import glob
import os

import pytest
import yaml
from PIL import Image
from yacs.config import CfgNode

import datasets.cifar
from config import get_cfg_defaults, load_config
from datasets.imagelist import LIST_SPECS
from engine import commands
from engine.schedule import lr_at_epoch
from tests.fixtures import (
    PUBLISHED_TRAIN,
    ROOT,
    expected_loss,
    one_error_line,
    write_cifar,
)
from tools.make_baseline_configs import BASELINES

PUB = os.path.join(ROOT, "tests", "data", "published_configs")
PUBLISHED = sorted(os.path.relpath(p, PUB)
                   for p in glob.glob(os.path.join(PUB, "*", "*", "*.yaml")))


def raw(rel: str) -> dict:
    with open(os.path.join(PUB, rel)) as f:
        return yaml.safe_load(f)


STAGE1 = [p for p in PUBLISHED if raw(p)["mode"] == "stage1"]
STAGE2 = [p for p in PUBLISHED if raw(p)["mode"] == "stage2"]
ARB = [p for p in PUBLISHED if p.startswith("arbloss" + os.sep)]
# Keys the launcher or the machine decides; ours may differ from the published value.
EXEMPT = ("dist_url", "world_size", "rank", "gpu", "distributed", "multiprocessing_distributed",
          "workers", "print_freq")
# Published ARB-Loss files whose `name` is a copy-paste slip (ours say the file's stem).
WRONG_NAMES = {
    "cifar10/cifar10_imb001.yaml": "cifar10_imb01_stage1_mixup",
    "cifar10/cifar10_imb002.yaml": "cifar10_imb01_stage1_mixup",
    "cifar10/cifar10_imb01.yaml": "cifar10_imb01_stage1_mixup",
    "cifar100/cifar100_imb001.yaml": "cifar100_imb01_stage1_mixup",
    "cifar100/cifar100_imb002.yaml": "cifar100_imb01_stage1_mixup",
    "cifar100/cifar100_imb01.yaml": "cifar100_imb01_stage1_mixup",
    "imagenet/imagenet_resnet50.yaml": "imagenet_resnet50_stage1_mixup",
}


def yacs_load(path: str) -> CfgNode:
    """What the published code does: yacs merge_from_file onto the defaults."""
    cfg = get_cfg_defaults()
    cfg.merge_from_file(path)
    return cfg


def test_the_copies_are_all_published_files():
    assert len(PUBLISHED) == 50
    assert len(ARB) == 32 and len(STAGE2) == 9 and len(STAGE1) == 41
    assert all(p.startswith("mislas" + os.sep) for p in STAGE2)


@pytest.mark.parametrize("rel", STAGE1)
def test_stage1_files_load_as_yacs_loads_them(rel):
    ours = load_config(os.path.join(PUB, rel))
    ref = yacs_load(os.path.join(PUB, rel))
    assert dict(ours) == dict(ref)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty working folder and no CIFAR download (no network in tests)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.cifar, "_try_download", lambda spec, root: False)


@pytest.mark.parametrize("rel", PUBLISHED)
def test_as_published_each_file_stops_with_one_line(rel, offline, tmp_path, capsys):
    """Run as a user would, without the data: one line naming what is missing, nothing made."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        commands.train_stage1(["--cfg", os.path.join(PUB, rel), "--dry-run", "output_dir",
                               str(out)])
    assert e.value.code == 2
    line = one_error_line(capsys, "train_stage1.py")
    r = raw(rel)
    if r["mode"] == "stage2":
        assert "key 'mode' is 'stage2'" in line and "train_stage2.py" in line
    elif r["dataset"].startswith("cifar"):
        assert f"{r['dataset']} not found under data_path '{r['data_path']}'" in line
    else:
        name = LIST_SPECS[r["dataset"]].train_list
        listed = os.path.join(r["data_path"], name)
        assert f"training list '{name}' not found; looked in: {listed}" in line
    assert not out.exists()


# ------------------------------------------------------------------ with generated data
@pytest.fixture(scope="module")
def full_class_data(tmp_path_factory):
    """data_path per data set: CIFAR with 100 images a class (so imbalance factor 0.01 keeps
    one image in the rarest class), image lists with every published class (one line each,
    all pointing at one JPEG: a dry-run opens no image)."""
    root = tmp_path_factory.mktemp("full_class")
    paths = {name: write_cifar(str(root / name), name, 100, 1) for name in ("cifar10", "cifar100")}
    classes = {"imagenet": 1000, "ina2018": 8142, "places": 365}
    for name in classes:
        spec = LIST_SPECS[name]
        folder = root / name
        folder.mkdir()
        Image.new("RGB", (8, 8)).save(folder / "0.jpg")
        for list_name in (spec.train_list, spec.test_list):
            (folder / list_name).write_text("".join(f"0.jpg {c}\n" for c in range(classes[name])))
        paths[name] = str(folder)
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("rel", STAGE1)
def test_stage1_files_dry_run_on_data(rel, full_class_data, tmp_path, capsys):
    r = raw(rel)
    extra = ["not_pretrained", "True"] if r["dataset"] == "places" else []
    out = tmp_path / "out"
    assert commands.train_stage1(["--cfg", os.path.join(PUB, rel), "--dry-run", "data_path",
                              full_class_data[r["dataset"]], "download", "False",
                              "output_dir", str(out), *extra]) == 0
    text = capsys.readouterr().out
    assert f"dataset: {r['dataset']} (" in text and f"{r['num_classes']} classes" in text
    assert f"loss: {expected_loss(r)}\n" in text + "\n"
    assert f"backbone: {r['backbone']}, " in text
    if r["imb_factor"] is not None:
        assert (f"(largest class 100, smallest {int(100 * r['imb_factor'])}, imbalance ratio "
               f"{1 / r['imb_factor']:.1f})" in text)
    else:
        assert f"training images: {r['num_classes']} " in text
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("rel", STAGE2)
def test_stage2_files_dry_run_on_data(rel, full_class_data, tmp_path, capsys):
    """MiSLAS's stage-2 files, unchanged, with train_stage2.py: a dry run reads no checkpoint
    (their resume is a placeholder) and, for Places-LT, fetches no ImageNet weights."""
    r = raw(rel)
    out = tmp_path / "out"
    assert commands.train_stage2(["--cfg", os.path.join(PUB, rel), "--dry-run", "data_path",
                              full_class_data[r["dataset"]], "download", "False",
                              "output_dir", str(out)]) == 0
    text = capsys.readouterr().out
    frozen = "model, block" if r["dataset"] == "places" else "model"
    moving = ("block" if r["dataset"] == "places" else "model") if r["shift_bn"] else "none"
    assert f"stage 2: mislas; frozen: {frozen}; BatchNorm statistics moving: {moving}" in text
    assert f"stage-1 checkpoint (resume): {r['resume']} (not found)" in text
    assert f"backbone: {r['backbone']}, " in text
    assert not out.exists()


def recipe(rel: str) -> str:
    """The training loss and whether mixup is on."""
    return expected_loss(raw(rel)).split(" (alpha")[0]




def test_training_covers_every_recipe_and_kind_of_data():
    assert {recipe(p) for p in PUBLISHED_TRAIN} == {recipe(p) for p in STAGE1}
    assert {raw(p)["dataset"] for p in PUBLISHED_TRAIN} >= {"cifar10", "imagenet", "places"}


# ------------------------------------------------------------------ our configs
@pytest.mark.parametrize("rel", [os.path.relpath(p, "arbloss") for p in ARB])
def test_same_named_configs_carry_the_published_values(rel):
    ours = load_config(os.path.join(ROOT, "config", rel))
    pub = load_config(os.path.join(PUB, "arbloss", rel))
    stem = os.path.splitext(os.path.basename(rel))[0]
    differ = {k: (ours[k], pub[k]) for k in ours if k not in EXEMPT + ("name",)
              and ours[k] != pub[k]}
    assert differ == {}
    assert ours.name == stem
    assert pub.name == WRONG_NAMES.get(rel, stem)


@pytest.mark.parametrize("ds", ["cifar10", "cifar100"])
@pytest.mark.parametrize("r", ["001", "002", "01"])
def test_readme_stage1_mixup_configs_are_the_published_arbloss_mixup(ds, r):
    """The ARB-Loss README trains <ds>_imb<r>_stage1_mixup.yaml, which its repository lacks:
    ours holds the values of its <ds>_imb<r>_arbloss_mixup.yaml."""
    ours = load_config(os.path.join(ROOT, "config", ds, f"{ds}_imb{r}_stage1_mixup.yaml"))
    pub = load_config(os.path.join(PUB, "arbloss", ds, f"{ds}_imb{r}_arbloss_mixup.yaml"))
    assert ({k: v for k, v in ours.items() if k not in EXEMPT + ("name",)} ==
        {k: v for k, v in pub.items() if k not in EXEMPT + ("name",)})
    assert ours.name == f"{ds}_imb{r}_stage1_mixup"


SHIPPED = sorted(glob.glob(os.path.join(ROOT, "config", "*", "*.yaml")))
SHIPPED_STAGE1 = [p for p in SHIPPED if load_config(p, stage=None).mode != "stage2"]


@pytest.mark.parametrize("path", SHIPPED)
def test_each_shipped_config_says_where_its_values_come_from(path):
    text = open(path).read()
    header = text[:text.index("\nname:")]
    assert header.startswith("# ") and all(ln.startswith("#") for ln in header.splitlines())
    rel = os.path.relpath(path, os.path.join(ROOT, "config"))
    if os.path.isfile(os.path.join(PUB, "arbloss", rel)):
        assert "Published ARB-Loss config (github.com/lilydedbb/ARBLOSS," in header
    else:
        assert any(ln.startswith("# Ours") for ln in header.splitlines())
    for word in ("REFERENCE", "shared/", "HELPER"):
        assert word not in text


def arbloss_step_lr(base: float, epoch: int) -> float:
    """adjust_learning_rate of the ARB-Loss train_stage1.py, step branch (MiSLAS's own stage 1
    uses 180 where this says 240)."""
    e = epoch + 1
    if e <= 5:
        return base * e / 5
    return base * (0.01 if e > 240 else 0.1 if e > 160 else 1.0)


def _baseline(path: str) -> bool:
    """A generated comparison-baseline config: its own authors' schedule (tested in
    tests/test_baseline_configs.py)."""
    return any(path.endswith(f"_{b}.yaml") for b in BASELINES) and "/cifar" in path


@pytest.mark.parametrize("path", [p for p in SHIPPED_STAGE1
                                  if not load_config(p).cos and not _baseline(p)])
def test_step_schedules_are_the_arbloss_code_s(path):
    cfg = load_config(path)
    got = [lr_at_epoch(cfg, e) for e in range(cfg.num_epochs)]
    assert got == pytest.approx([arbloss_step_lr(cfg.lr, e) for e in range(cfg.num_epochs)])
