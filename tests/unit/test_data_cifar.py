"""Long-tailed CIFAR construction on generated archives in torchvision's on-disk layout."""
import os
import pickle

import numpy as np
import pytest

from config import load_config
from datasets import build_data
from datasets.common import lt_counts
from tests.fixtures import ROOT, write_cifar
from utils.errors import DataError

TOTALS = {("cifar10", 0.01): 12406, ("cifar10", 0.02): 13996, ("cifar10", 0.1): 20431,
          ("cifar100", 0.01): 10847, ("cifar100", 0.02): 12608, ("cifar100", 0.1): 19573}


def cfg_for(name, data_path, imb=0.01, **kw):
    tag = {0.01: "001", 0.02: "002", 0.1: "01"}.get(imb, "001")
    path = os.path.join(ROOT, "config", name, f"{name}_imb{tag}_stage1_mixup.yaml")
    opts = ["data_path", str(data_path), "imb_factor", str(imb), "download", "False"]
    for k, v in kw.items():
        opts += [k, str(v)]
    return load_config(path, opts)


@pytest.mark.slow
@pytest.mark.parametrize("name,imb", sorted(TOTALS))
def test_lt_totals_on_full_size_archives(full_cifar, name, imb):
    sub = "c10" if name == "cifar10" else "c100"
    data = build_data(cfg_for(name, full_cifar / sub, imb))
    assert sum(data.cls_num_list) == TOTALS[(name, imb)] == len(data.train)
    assert data.cls_num_list == lt_counts(5000 if name == "cifar10" else 500,
                                          len(data.cls_num_list), imb)
    assert data.cls_num_list[0] == (5000 if name == "cifar10" else 500)
    # the test set stays balanced
    assert len(set(np.bincount(data.test.targets).tolist())) == 1


def test_lt_selection_is_the_reference_one(small_cifar10):
    """Per class in order: numpy seed 0, shuffle that class's indices, keep the first n."""
    from datasets.cifar import load_cifar_arrays
    x, y, _, _ = load_cifar_arrays("cifar10", small_cifar10, download=False)
    data = build_data(cfg_for("cifar10", small_cifar10, 0.1))
    np.random.seed(0)
    expected = []
    for c, n in enumerate(lt_counts(60, 10, 0.1)):
        idx = np.where(y == c)[0]
        np.random.shuffle(idx)
        expected.append(idx[:n])
    expected = np.concatenate(expected)
    assert np.array_equal(data.train.images, x[expected])
    assert np.array_equal(data.train.targets, y[expected])


def test_step_profile():
    assert lt_counts(500, 10, 0.1, "step") == [500] * 5 + [50] * 5
    assert lt_counts(5000, 10, 0.01) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_unpacks_tar_gz(tmp_path):
    write_cifar(str(tmp_path), "cifar100", 3, 1, tar=True)
    assert os.listdir(tmp_path) == ["cifar-100-python.tar.gz"]
    data = build_data(cfg_for("cifar100", tmp_path, 0.1))
    assert sum(data.cls_num_list) == sum(lt_counts(3, 100, 0.1))
    assert os.path.isdir(tmp_path / "cifar-100-python")


def test_missing_data_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py.*cifar-10-python.tar.gz"):
        build_data(cfg_for("cifar10", tmp_path / "nothing"))


def test_truncated_batch_file(tmp_path):
    write_cifar(str(tmp_path), "cifar10", 5, 1)
    f = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(DataError, match="data_batch_3.*truncated"):
        build_data(cfg_for("cifar10", tmp_path))


def test_truncated_tar_gz(tmp_path):
    write_cifar(str(tmp_path), "cifar10", 5, 1, tar=True)
    f = tmp_path / "cifar-10-python.tar.gz"
    f.write_bytes(f.read_bytes()[:2000])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        build_data(cfg_for("cifar10", tmp_path))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    write_cifar(str(tmp_path), "cifar10", 5, 1)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(DataError, match="test_batch"):
        build_data(cfg_for("cifar10", tmp_path))
    assert not marker.exists()


def test_num_classes_must_match(small_cifar10):
    with pytest.raises(DataError, match="num_classes"):
        build_data(cfg_for("cifar10", small_cifar10, num_classes=100))


@pytest.mark.slow
def test_digits_split():
    cfg = load_config(os.path.join(ROOT, "config", "digits", "digits_imb005_ce.yaml"))
    data = build_data(cfg)
    assert len(data.test) == 10 * cfg.digits_test_per_class
    assert np.bincount(data.test.targets).tolist() == [cfg.digits_test_per_class] * 10
    counts = data.cls_num_list
    assert counts == lt_counts(counts[0], 10, 0.05)
    assert counts[-1] == int(counts[0] * 0.05)
    # no image is both in training and test data (1,797 distinct real images)
    from sklearn.datasets import load_digits
    assert len(data.train) + len(data.test) <= len(load_digits().target)
    x, _ = data.train[0]
    assert tuple(x.shape) == (1, 8, 8)
