"""The code map holds: imports run downward only and no module imports another in a cycle.

    utils <- config <- datasets, models, methods <- analysis <- engine <- scripts, tools, bench

datasets, models and methods do not import each other; no module and no test imports a script
(train_stage1.py, train_stage2.py, eval.py): the scripts are shims over engine/commands.py,
whose functions the tests call in-process.
"""
import ast
import glob
import os

from tests.fixtures import ROOT

LEVEL = {"utils": 0, "config": 1, "datasets": 2, "models": 2, "methods": 2, "analysis": 3,
         "engine": 4}
SCRIPTS = {"train_stage1", "train_stage2", "eval"}


def modules():
    """name -> file of every project module outside tests."""
    out = {}
    for pkg in list(LEVEL) + ["tools", "bench"]:
        for path in glob.glob(os.path.join(ROOT, pkg, "*.py")):
            stem = os.path.splitext(os.path.basename(path))[0]
            out[pkg if stem == "__init__" else f"{pkg}.{stem}"] = path
    for name in SCRIPTS:
        out[name] = os.path.join(ROOT, f"{name}.py")
    return out


def _runtime_nodes(tree):
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def imports(path):
    """Absolute project imports of a file run at some point (also inside functions)."""
    found = set()
    for node in _runtime_nodes(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_imports_run_downward_only():
    wrong = []
    for name, path in modules().items():
        pkg = name.split(".")[0]
        for target in imports(path):
            top = target.split(".")[0]
            if top in SCRIPTS and top != pkg:
                wrong.append(f"{name} imports the script {top}")
            if pkg in LEVEL and top in LEVEL and top != pkg and LEVEL[top] >= LEVEL[pkg]:
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_no_import_cycles():
    mods = modules()
    graph = {name: {t for t in imports(path) if t in mods and t != name}
             for name, path in mods.items()}
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [])


def all_test_files():
    """Every Python file under tests/ (the kind folders included)."""
    return glob.glob(os.path.join(ROOT, "tests", "**", "*.py"), recursive=True)


def test_no_test_imports_a_script_and_the_scripts_are_shims():
    wrong = []
    for path in all_test_files():
        for target in imports(path):
            if target.split(".")[0] in SCRIPTS:
                wrong.append(f"{os.path.basename(path)} imports {target}")
    assert wrong == []
    for name in SCRIPTS:
        tree = ast.parse(open(os.path.join(ROOT, f"{name}.py")).read())
        defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert defs == [], f"{name}.py defines {[d.name for d in defs]}: move it to engine/"
        assert imports(os.path.join(ROOT, f"{name}.py")) & {"engine.commands"}, name


def test_library_code_reads_config_keys_without_fallbacks():
    """Every key has its default in config/defaults.py and is checked by config.validate, so
    library code reads ``cfg.key`` (a ``cfg.get(key, default)`` would repeat the default)."""
    wrong = []
    for pkg in LEVEL:
        for path in glob.glob(os.path.join(ROOT, pkg, "*.py")):
            for node in ast.walk(ast.parse(open(path).read())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "get" and isinstance(node.func.value, ast.Name)
                        and node.func.value.id == "cfg"):
                    wrong.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert wrong == []


def test_tools_and_bench_do_not_edit_sys_path():
    """They import the packages as installed (``pip install -e .``, pyproject.toml's
    build-system) or from PYTHONPATH, never by editing sys.path."""
    wrong = [os.path.relpath(p, ROOT) for pkg in ("tools", "bench")
             for p in glob.glob(os.path.join(ROOT, pkg, "*.py")) if "sys.path" in open(p).read()]
    assert wrong == []


def test_the_default_hooks_run_in_the_declared_order():
    """Each default hook reads what the ones before it published in the epoch record: the
    order is declared once (engine.hooks.DEFAULT_HOOKS) and the trainer keeps it."""
    from engine.hooks import (
        DEFAULT_HOOKS,
        AnalysisHook,
        CheckpointHook,
        EvalHook,
        GradMonitorHook,
        MetricsHook,
    )
    assert DEFAULT_HOOKS == (GradMonitorHook, EvalHook, AnalysisHook, MetricsHook,
                             CheckpointHook)
    from config import load_config
    from engine.trainer import Trainer
    from tests.fixtures import DIGITS_CE

    for freq, want in ((0, DEFAULT_HOOKS[1:]), (5, DEFAULT_HOOKS)):
        trainer = Trainer.__new__(Trainer)  # default_hooks reads only the config
        trainer.cfg = load_config(DIGITS_CE, ["grad_stats_freq", str(freq)])
        assert tuple(type(h) for h in trainer.default_hooks()) == want


def test_the_hooks_do_not_import_the_trainer():
    """No import circle, not even for type annotations."""
    assert "engine.trainer" not in imports(os.path.join(ROOT, "engine", "hooks.py"))


def test_engine_functions_and_classes_stay_small():
    """No function in engine/ over 60 lines, no class over 300 (docstrings included): a
    newcomer reads one concept at a time."""
    big = []
    for path in glob.glob(os.path.join(ROOT, "engine", "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if ((isinstance(node, ast.ClassDef) and size > 300)
                    or (isinstance(node, ast.FunctionDef) and size > 60)):
                big.append(f"{os.path.basename(path)}:{node.name} ({size} lines)")
    assert big == []


def test_utils_take_no_config():
    """utils/ is below config/: its functions take the few values they need, never a cfg."""
    wrong = []
    for path in glob.glob(os.path.join(ROOT, "utils", "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [a.arg for a in node.args.args + node.args.kwonlyargs]
                if "cfg" in names or "config" in names:
                    wrong.append(f"{os.path.basename(path)}:{node.name}")
    assert wrong == []


def test_the_configs_names_are_the_registries():
    """Each name a config key accepts has a builder, and each builder a name: the data sets,
    backbones, losses and samplers."""
    from config import _CHOICES
    from datasets import DATASETS
    from datasets.samplers import SAMPLERS
    from methods import LOSS_BUILDERS
    from models import BACKBONES
    assert set(_CHOICES["dataset"]) == set(DATASETS)
    assert set(_CHOICES["backbone"]) == set(BACKBONES)
    assert set(_CHOICES["loss"]) == {"auto", *LOSS_BUILDERS}
    assert set(_CHOICES["sampler"]) == set(SAMPLERS)


def test_tests_import_helpers_from_the_fixtures_module():
    """Shared test helpers live in tests/fixtures.py: no test imports conftest.py (pytest's
    plugin) or another test module."""
    wrong = []
    for path in all_test_files():
        for target in imports(path):
            parts = target.split(".")
            if parts[0] == "tests" and len(parts) > 1 and (
                    parts[1] == "conftest" or parts[1].startswith("test_")):
                wrong.append(f"{os.path.basename(path)} imports {target}")
    assert wrong == []


# The ConfigErrors outside config/: each needs a fact load_config cannot know (--dry-run, which
# builds data, network and loss, still meets every one that a config alone decides).
RUNTIME_CONFIG_ERRORS = {
    "analysis/metrics.py": 1,   # class ranges against the classes the data set has
    "engine/cli.py": 1,         # a bad command-line flag
    "engine/eval_cli.py": 2,    # eval.py's flags: no checkpoint given; --tau-sweep with a tau
    "engine/evaluation.py": 1,  # tau-norm of a checkpoint's cosine / ETF head
    "engine/stage2.py": 2,      # no stage-1 checkpoint given; resume auto finds no run
    "engine/tau_sweep.py": 5,   # --tau-grid / --tau-sweep / --select-on, and the data's splits
    "engine/trainer.py": 1,     # num_epochs against the checkpoint's epoch
    "methods/criterion.py": 1,  # the dot regression given a network without its ETF
    "models/__init__.py": 1,    # an ETF wider than the backbone's features
    "models/resnet_places.py": 2,  # ImageNet weights torchvision has not / cannot fetch
    "models/timm_backbone.py": 5,  # timm not installed, no such model, unreadable weights
    "utils/comm.py": 1,         # device cuda on a machine without one
    "utils/rundir.py": 3,       # output_dir cannot be created or written
}


def test_config_errors_outside_config_are_the_runtime_ones():
    """Every value a config alone decides is checked by load_config; a new ``raise
    ConfigError`` elsewhere must be one of these (or move to config/)."""
    found = {}
    for name, path in modules().items():
        if name.split(".")[0] in ("config", "tools", "bench") or name in SCRIPTS:
            continue
        n = sum(isinstance(node, ast.Call) and getattr(node.func, "id", "") == "ConfigError"
                for node in ast.walk(ast.parse(open(path).read())))
        if n:
            found[os.path.relpath(path, ROOT)] = n
    assert found == RUNTIME_CONFIG_ERRORS


KINDS = ("unit", "integration", "processes")
# what starting a process looks like in a test (tests/fixtures.py: start, run_cli)
PROCESS_CALLS = {"start", "run_cli", "Popen", "check_output", "check_call"}


def test_tests_live_in_folders_by_kind():
    """tests/unit (no training loop, no process), tests/integration (in-process runs),
    tests/processes (launched processes): no test module outside them, and no test outside
    processes/ starts a process."""
    loose = [os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "tests", "test_*.py"))]
    assert loose == []
    wrong = []
    for kind in KINDS[:2]:
        for path in glob.glob(os.path.join(ROOT, "tests", kind, "test_*.py")):
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.Call):
                    f = node.func
                    name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")
                    if name in PROCESS_CALLS or (name == "run" and "subprocess" in ast.unparse(f)):
                        wrong.append(f"{kind}/{os.path.basename(path)}: {ast.unparse(f)}")
    assert wrong == []
