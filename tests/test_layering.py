"""workloads/ is plain PyTorch: it never imports ray or mlflow (DESIGN.md, layers)."""

import ast
import pathlib
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
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            found.add(str(node.args[0].value).split(".")[0])
    return found


def test_no_workloads_source_imports_ray_or_mlflow():
    files = sorted((ROOT / "workloads").rglob("*.py"))
    assert files, "workloads/ has no Python files"
    offenders = {str(f.relative_to(ROOT)): sorted(_imported_top_level_modules(f) & FORBIDDEN) for f in files}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_scan_sees_every_import_form(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nimport ray.train\nfrom mlflow import log_metric\n"
                     "importlib.import_module('ray')\n")
    assert _imported_top_level_modules(probe) >= FORBIDDEN


def test_importing_every_workloads_module_loads_neither_ray_nor_mlflow():
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for p in sorted((ROOT / "workloads").rglob("*.py"))]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
