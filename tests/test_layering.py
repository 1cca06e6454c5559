"""workloads/ is plain PyTorch: it never imports ray or mlflow (DESIGN.md, layers)."""

import ast
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORBIDDEN = {"ray", "mlflow"}


def _imported_top_level_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(str(node.args[0].value).split(".")[0])
    return found


def test_no_workloads_source_imports_ray_or_mlflow():
    files = sorted((ROOT / "workloads").rglob("*.py"))
    assert files, "workloads/ has no Python files"
    offenders = {str(f.relative_to(ROOT)): sorted(_imported_top_level_modules(f) & FORBIDDEN) for f in files}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_scan_sees_every_import_form(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nimport ray.train\nfrom mlflow import log_metric\nimportlib.import_module('ray')\n")
    assert _imported_top_level_modules(probe) >= FORBIDDEN


def test_importing_every_workloads_module_loads_neither_ray_nor_mlflow():
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in sorted((ROOT / "workloads").rglob("*.py"))
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# The command modules (python -m orchestrator.X): argument parsing and printing only. The work they
# share lives in modules they import, never in another command module.
COMMANDS = {"ablate", "compare", "ensemble", "prepare", "sweep", "train"}


def _orchestrator_imports(path: pathlib.Path) -> set[str]:
    """The ``orchestrator.<module>`` names ``path`` imports (``from orchestrator import x`` included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module == "orchestrator":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("orchestrator."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("orchestrator."))
    return found


def test_every_command_module_is_a_command():
    for name in COMMANDS:
        source = (ROOT / "orchestrator" / f"{name}.py").read_text()
        assert "def main(" in source and "cli.run(main)" in source, name


def test_no_command_module_imports_another():
    offenders = {
        name: sorted(_orchestrator_imports(ROOT / "orchestrator" / f"{name}.py") & COMMANDS - {name})
        for name in COMMANDS
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_no_orchestrator_module_imports_a_command_module():
    library = [p for p in (ROOT / "orchestrator").rglob("*.py") if p.stem not in COMMANDS]
    offenders = {str(p.relative_to(ROOT)): sorted(_orchestrator_imports(p) & COMMANDS) for p in library}
    assert not {k: v for k, v in offenders.items() if v}


# Spellings of the MLflow record that only orchestrator/tracking/ may hold (tracking.schema names them):
# an ``orchestrator.*`` tag key (module names, as in cli.parser("orchestrator.train"), aside), MLflow's
# own tag keys, artifact paths and tag values.
MODULES = {p.stem for p in (ROOT / "orchestrator").glob("*.py")}
SCHEMA_SPELLINGS = [
    '"checkpoints/',
    'f"checkpoints',
    "state.pt",
    "runs:/",
    "mlflow.parentRunId",
    "mlflow.runName",
    '"ensemble-evaluation"',
    '"probabilities.parquet"',
]


def _schema_spellings(code: str) -> list[str]:
    keys = [k for k in re.findall(r"[\"']orchestrator\.([\w.]+)[\"']", code) if k not in MODULES]
    return keys + [s for s in SCHEMA_SPELLINGS if s in code]


def test_only_tracking_spells_a_tag_key_or_an_artifact_path():
    files = [
        p
        for p in [*(ROOT / "orchestrator").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]
        if "tracking" not in p.relative_to(ROOT).parts
    ]
    offenders = {}
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            hits = _schema_spellings(line.split("#")[0])
            if hits:
                offenders[f"{path.relative_to(ROOT)}:{number}"] = hits
    assert not offenders


def test_the_schema_scan_sees_a_tag_key_and_an_artifact_path():
    assert _schema_spellings('tags={"orchestrator.kind": "x"}') == ["kind"]
    assert {'f"checkpoints', "state.pt"} <= set(_schema_spellings('f"checkpoints/{label}/state.pt"'))
    assert _schema_spellings('cli.parser("orchestrator.train", __doc__)') == []


HEAVY = {"ray", "mlflow", "torchvision"}  # each takes seconds to import; argument parsing needs none


def test_help_and_argument_errors_load_neither_ray_nor_mlflow_nor_torchvision():
    """``--help``, ``--version`` and a mistyped flag answer before the heavy imports (speed itself is
    bench/tune_overhead.py's: start-up over ``import torch``). --version exits where --help does, in
    argparse: one command's is enough."""
    cases = [(name, flag) for name in sorted(COMMANDS) for flag in ("--help", "--no-such-flag")] + [
        ("train", "--version")
    ]
    for name, flag in cases:
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", f"orchestrator.{name}", flag],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == (2 if flag == "--no-such-flag" else 0), (name, flag, out.stderr[-500:])
        loaded = {
            line.rsplit("|", 1)[-1].strip().split(".")[0]
            for line in out.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert "orchestrator" in loaded and not loaded & HEAVY, (name, flag, sorted(loaded & HEAVY))


def test_the_modules_every_ray_process_of_a_run_imports_load_no_torchvision():
    """A CLI driver, a Tune trial actor and a Train controller (which unpickles ``train_worker``)
    import these; torchvision (~2 s of CPU, most of it torch._dynamo) loads only where an image is
    resized or decoded, so a run from memory never pays for it."""
    modules = ["orchestrator.trainer", "orchestrator.ablation", "orchestrator.sweeping", "orchestrator.worker"]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False"], out.stderr[-2000:]


def test_a_lazily_exported_name_is_never_its_module():
    """``workloads.data`` exports lazily; a name that is also a module of it stays the function after
    that module is imported (a fresh interpreter, so no earlier test has imported it)."""
    code = (
        "import workloads.data.registry, workloads.data as d, types\n"
        "print([n for n in d.__all__ if isinstance(getattr(d, n), types.ModuleType)])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
