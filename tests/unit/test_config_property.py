"""Property tests of the config check, for EVERY key of config/defaults.py.

Wrong values (wrong types, empty, null, huge, negative, NaN / inf, strings, nested lists, yaml
mappings), given in the yaml file or on the command line of ``train_stage1.py``, end in one
line on stderr and exit status 2, without a traceback and without creating anything. Right
values (the key's type, inside its range) load and survive the round trip through
``cfg_to_yaml`` / ``cfg_from_yaml_string``.

The types come from the defaults; the ranges below are written out here, independently of
config/__init__.py, from what the code using each key needs. A numeric key missing here (a
new one) is still checked for its type, finiteness and 64-bit range, and loads its default.
"""
import contextlib
import io
import math
import os
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import config
from config import cfg_from_yaml_string, cfg_to_yaml, get_cfg_defaults, load_config
from engine import commands
from tests.fixtures import DIGITS_CE

DEFAULTS = get_cfg_defaults()
KEYS = sorted(DEFAULTS.keys())
INT64 = 2 ** 63 - 1
SEED_MAX = 2 ** 32 - 1  # numpy's np.random.seed accepts [0, 2**32 - 1]
# The type of the keys whose default is null (the others: the type of their default).
NULL_DEFAULT_TYPES = {"mode": str, "smooth_tail": float, "smooth_head": float,
                      "lr_factor": float}
# Keys that accept null in a stage-1 digits run (imb_factor null is for image lists only).
NULL_OK = {k for k, v in DEFAULTS.items() if v is None} | {"gpu", "alpha"}
# Integer keys: inclusive (low, high); high None = any 64-bit integer.
INT_RANGES = {
    **{k: (1, None) for k in ("print_freq", "num_classes", "batch_size", "num_epochs",
                              "eval_freq", "image_size", "resize_size")},
    **{k: (0, None) for k in ("workers", "test_batch_size", "warmup_epochs", "grad_stats_freq",
                              "nc_freq", "plot_freq", "digits_test_per_class", "gpu")},
    "rank": (-1, None),
    "seed": (0, SEED_MAX),
}
# Float keys: (low, high, low open, high open); high None = no upper bound.
FLOAT_RANGES = {
    "imb_factor": (0.0, 1.0, True, False),
    "lr": (0.0, None, True, False),
    "lr_factor": (0.0, None, True, False),
    "las_power": (0.0, None, True, False),
    "weight_decay": (0.0, None, False, False),
    "momentum": (0.0, None, False, False),
    "alpha": (0.0, None, False, False),
    "smooth_head": (0.0, 1.0, False, True),
    "smooth_tail": (0.0, 1.0, False, True),
    "dr_reg_lambda": (0.0, None, False, False),
}
CLASS_RANGE_KEYS = ("head_class_idx", "med_class_idx", "tail_class_idx")


def key_type(key):
    default = DEFAULTS[key]
    if default is None:
        # a key added later with a null default: its declared type (see test_config.py)
        return NULL_DEFAULT_TYPES.get(key) or config._NULL_DEFAULT_TYPES[key]
    return list if isinstance(default, list) else type(default)


def choices(key):
    if key == "mode":
        return ("stage1",)  # stage 1: 'stage2' is refused; null is accepted
    return config._CHOICES.get(key)


# ---------------------------------------------------------------------------- wrong values
WORDS = st.text(string.ascii_letters + "_", min_size=1, max_size=8).filter(
    lambda s: s not in ("True", "False", "None"))  # plain words are strings for every key
SCALARS = st.one_of(st.integers(-10 ** 6, 10 ** 6), st.floats(), WORDS, st.booleans())
MAPPINGS = st.dictionaries(WORDS, SCALARS, min_size=1, max_size=3)
NESTED = st.lists(st.lists(SCALARS, min_size=1, max_size=2), min_size=1, max_size=3)
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
NOT_INTEGRAL = st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda x: not x.is_integer())
BEYOND_INT64 = st.one_of(st.integers(INT64 + 1, 10 ** 40), st.integers(-10 ** 40, -INT64 - 2))


def out_of_int_range(key):
    low, high = INT_RANGES.get(key, (None, None))
    parts = [BEYOND_INT64]
    if low is not None:
        below = st.integers(-10 ** 12, low - 1)
        parts += [below, below.map(float)]  # an integral float is an integer
    if high is not None:
        parts.append(st.integers(high + 1, 10 ** 20))
    if key == "world_size":
        parts.append(st.sampled_from([0, -2, -10 ** 9]))
    return st.one_of(parts)


def out_of_float_range(key):
    parts = [NON_FINITE, st.integers(10 ** 400, 10 ** 401)]  # beyond float: inf
    if key in FLOAT_RANGES:
        low, high, low_open, high_open = FLOAT_RANGES[key]
        parts.append(st.floats(max_value=low, exclude_max=not low_open, allow_nan=False))
        if high is not None:
            parts.append(st.floats(min_value=high, exclude_min=not high_open,
                                   allow_nan=False))
    return st.one_of(parts)


def bad_class_range(key):
    others_default = st.lists(st.integers(-5, 50), min_size=2, max_size=2).filter(
        lambda v: v != [0, 1])  # alone, any range but the placeholder breaks all-or-none
    return st.one_of(others_default, st.lists(st.integers(0, 50), max_size=5).filter(
        lambda v: len(v) != 2))


BAD_LR_STEPS = st.one_of(
    st.tuples(st.integers(1, 500), st.integers(0, 499)).filter(lambda t: t[1] < t[0]).map(list),
    st.lists(st.integers(-500, -1), min_size=1, max_size=2),
)


def wrong_values(key):
    """Values ``key`` must refuse, as yaml objects (None = null)."""
    t = key_type(key)
    parts = [MAPPINGS, NESTED]
    if key not in NULL_OK:
        parts.append(st.none())
    if t is bool:
        parts += [st.integers(), st.floats(), WORDS, st.just(""), st.lists(st.booleans())]
    elif t is int:
        parts += [WORDS, st.just(""), st.booleans(), NOT_INTEGRAL, NON_FINITE,
                  st.lists(st.integers(), max_size=2), out_of_int_range(key)]
    elif t is float:
        parts += [WORDS, st.just(""), st.booleans(), st.lists(st.floats(), max_size=2),
                  out_of_float_range(key)]
    elif t is list:
        bad_items = st.one_of(WORDS, st.booleans(), NOT_INTEGRAL, NON_FINITE, st.none(),
                              st.lists(st.integers(), min_size=1, max_size=2), BEYOND_INT64)
        parts += [st.integers(), st.floats(), WORDS, st.just(""), st.booleans(),
                  st.lists(bad_items, min_size=1, max_size=3)]
        if key in CLASS_RANGE_KEYS:
            parts.append(bad_class_range(key))
        if key == "lr_steps":
            parts.append(BAD_LR_STEPS)
        if key == "lr_factors":  # each > 0, and one per lr_steps entry (the default has two)
            parts += [st.lists(st.floats(max_value=0.0, allow_nan=False), min_size=2,
                               max_size=2),
                      st.lists(st.floats(0.001, 1.0), min_size=1, max_size=1),
                      st.lists(st.floats(0.001, 1.0), min_size=3, max_size=4)]
    elif t is str:
        parts.append(st.lists(WORDS, max_size=2))
        if key == "name":  # a path would put the run folder outside output_dir
            parts.append(st.sampled_from(["a/b", "../up", "/abs", "x\\y"]))
        if choices(key):
            parts += [WORDS.filter(lambda s: s not in choices(key)), st.integers(),
                      st.just("")]
    return st.one_of(parts)


def command_line_token(key, value):
    """The token a user would type for ``value``, or None where every token is a valid value
    (any text is a valid string for a free string key)."""
    if key_type(key) is str:
        return value if isinstance(value, str) and choices(key) else None
    return value if isinstance(value, str) else repr(value)


@contextlib.contextmanager
def inside(folder):
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("config_property")


with open(DIGITS_CE) as _f:
    DIGITS = yaml.safe_load(_f)
# A tiny run, should a wrong value ever get through (the test then fails on the exit status).
TINY = ["num_epochs", "1", "workers", "0"]


def run_main(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = commands.train_stage1(argv)
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


@pytest.mark.parametrize("key", KEYS)
@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_wrong_values_exit_2_with_one_line(key, work, data):
    value = data.draw(wrong_values(key), label="value")
    token = command_line_token(key, value)
    source = data.draw(st.sampled_from(["yaml", "command line"] if token is not None
                                       else ["yaml"]), label="source")
    folder = work / key
    folder.mkdir(exist_ok=True)
    out = folder / "out"
    cfg_file = folder / "cfg.yaml"
    argv = ["--cfg", str(cfg_file), "output_dir", str(out), *TINY]
    if source == "yaml":
        content = {k: v for k, v in DIGITS.items() if k != key}
        text = yaml.safe_dump(content)
        # null as yaml's empty value (``lr:``) or as ``null``, by turns
        text += f"{key}:\n" if value is None and len(text) % 2 else yaml.safe_dump({key: value})
    else:
        text = yaml.safe_dump(DIGITS)
        argv += [key, token]
    cfg_file.write_text(text)
    with inside(folder):
        code, err = run_main(argv)
    lines = err.strip().splitlines()
    assert code == 2, (key, value, err)
    assert len(lines) == 1 and lines[0].startswith("train_stage1.py: error: "), err
    assert "Traceback" not in err
    assert f"'{key}'" in lines[0], lines[0]
    assert sorted(os.listdir(folder)) == ["cfg.yaml"]  # no run folder, nothing else


# ---------------------------------------------------------------------------- right values
PRINTABLE = st.text(string.ascii_letters + string.digits + " ._-/:", max_size=12)


def right_values(key):
    """Values ``key`` accepts (for list keys: a dict of keys to set together)."""
    t = key_type(key)
    if key in CLASS_RANGE_KEYS:
        cut = st.tuples(st.integers(1, 10 ** 4), st.integers(1, 10 ** 4), st.integers(1, 10 ** 4))
        return cut.map(lambda c: {"head_class_idx": [0, c[0]],
                                  "med_class_idx": [c[0], c[0] + c[1]],
                                  "tail_class_idx": [c[0] + c[1], sum(c)]})
    if key == "lr_steps":
        values = st.lists(st.integers(0, 10 ** 6), max_size=4).map(sorted)
    elif key == "lr_factors":  # set with as many lr_steps
        steps = st.lists(st.integers(0, 10 ** 6), max_size=4).map(sorted)
        return steps.flatmap(lambda s: st.lists(
            st.floats(1e-6, 10.0), min_size=len(s), max_size=len(s)).map(
            lambda f: {"lr_steps": s, "lr_factors": f}))
    elif t is bool:
        values = st.booleans()
    elif t is int and key == "world_size":
        values = st.one_of(st.just(-1), st.integers(1, INT64))
    elif t is int and key in INT_RANGES:
        low, high = INT_RANGES[key]
        values = st.integers(low, INT64 if high is None else high)
    elif t is float and key in FLOAT_RANGES:
        low, high, low_open, high_open = FLOAT_RANGES[key]
        values = st.floats(low, high, exclude_min=low_open, exclude_max=high_open,
                           allow_nan=False, allow_infinity=False)
    elif key == "mode":
        values = st.sampled_from(["stage1", "stage2"])
    elif key == "name":  # a folder name: no path separators
        values = PRINTABLE.filter(lambda s: not set(s) & set("/\\"))
    elif t is str:
        values = st.sampled_from(choices(key)) if choices(key) else PRINTABLE
    else:
        values = st.just(DEFAULTS[key])  # a numeric key without a range written here
    if key in NULL_OK or key == "imb_factor":
        values = st.one_of(st.none(), values)
    return values.map(lambda v: {key: v})


def same(a, b):
    return a == b and type(a) is type(b) if not isinstance(a, list) else (
        len(a) == len(b) and all(same(x, y) for x, y in zip(a, b)))


@pytest.mark.parametrize("key", KEYS)
@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_right_values_load_and_round_trip(key, work, data):
    values = data.draw(right_values(key), label="values")
    # null for a string key is yaml's alone (a command-line token is a string)
    cli_ok = not any(v is None and key_type(k) is str for k, v in values.items())
    source = data.draw(st.sampled_from(["yaml", "command line"] if cli_ok else ["yaml"]),
                       label="source")
    # a base where every single key's accepted values are usable (imb_factor null: an image
    # list data set; alpha null: mixup off; LAS on: smoothing given; dataset places: an
    # ImageNet ResNet; dataset imagelist: list files named)
    base = {"dataset": "imagenet", "backbone": "resnet50_fe", "mixup": False,
            "smooth_head": 0.3, "smooth_tail": 0.0, "train_list": "t.txt", "test_list": "v.txt"}
    opts = []
    if source == "yaml":
        base.update(values)
    else:
        for k, v in values.items():
            opts += [k, v if isinstance(v, str) else repr(v)]
    path = work / f"right_{key}.yaml"
    path.write_text(yaml.safe_dump(base))
    cfg = load_config(str(path), opts, stage=None)  # evaluation takes stage-2 keys too
    for k, v in values.items():
        expected = float(v) if key_type(k) is float and v is not None else v
        if k == "name" and not v:
            expected = f"right_{key}"  # an empty name becomes the file's stem
        assert same(cfg[k], expected), (k, cfg[k], v)
    again = cfg_from_yaml_string(cfg_to_yaml(cfg))
    assert again == cfg
    assert all(same(again[k], cfg[k]) for k in cfg)
