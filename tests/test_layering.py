"""Dependency direction: simulations → strategies → fedkd, and a Flower-free core.

Two checks: a fresh interpreter imports the core modules and must not pull in Flower, Ray,
Hydra or the heavy data/plotting libraries; and a static scan of every module's imports
(including those inside functions) enforces the package layering.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Modules that devices and plain-PyTorch users import; the design keeps them free of the
# federated/simulation stack.
CORE = [
    "fedkd.kd",
    "fedkd.models",
    "fedkd.data",
    "fedkd.training",
    "fedkd.config",
    "fedkd.compression",
    "fedkd.compress.prune",
    "fedkd.compress.quantize",
    "fedkd.compress.export",
]
FORBIDDEN_AT_IMPORT = ["flwr", "ray", "hydra", "omegaconf", "wandb"]
# imported lazily, inside functions
HEAVY_AT_IMPORT = ["datasets", "flwr_datasets", "matplotlib", "torchao", "onnx", "onnxruntime"]


def _loaded_after_import(modules: list[str], watch: list[str]) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(json.dumps([w for w in {watch!r} if w in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def core_loaded() -> list[str]:
    """What importing the core pulls in (one fresh interpreter for both checks below)."""
    return _loaded_after_import(CORE, FORBIDDEN_AT_IMPORT + HEAVY_AT_IMPORT)


def test_core_imports_no_federated_or_simulation_stack(core_loaded: list[str]) -> None:
    assert [m for m in core_loaded if m in FORBIDDEN_AT_IMPORT] == []


def test_core_imports_no_heavy_libraries(core_loaded: list[str]) -> None:
    assert [m for m in core_loaded if m in HEAVY_AT_IMPORT] == []


def test_subprocess_check_can_fail() -> None:
    # Guard against a vacuous check: importing the ClientApp does load Flower.
    assert "flwr" in _loaded_after_import(["fedkd.client_app"], FORBIDDEN_AT_IMPORT)


# ----------------------------------------------------------------------------- static scan
def _imports(path: Path) -> set[str]:
    """Top-level package names imported anywhere in the file (function bodies included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _modules(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules found under {package}/"
    return files


# (package, top-level names its modules must never import)
RULES = [
    ("fedkd", {"strategies", "simulations", "hydra", "omegaconf", "ray", "wandb"}),
    ("strategies", {"simulations", "hydra", "omegaconf", "ray", "wandb"}),
]


@pytest.mark.parametrize(("package", "forbidden"), RULES, ids=[p for p, _ in RULES])
def test_import_direction(package: str, forbidden: set[str]) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & forbidden)
        for path in _modules(package)
        if _imports(path) & forbidden
    }
    assert offenders == {}


def test_scanner_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text(
        "def f():\n    from simulations.engine import run_apps\n    import ray.util\n"
    )
    assert _imports(sample) == {"simulations", "ray"}
