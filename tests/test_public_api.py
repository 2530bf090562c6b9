"""`import specprobe` exposes the entry points; every saved result reloads as its own class."""

from __future__ import annotations

import subprocess
import sys

import specprobe


def test_every_public_name_resolves():
    assert specprobe.__all__ == ["__version__", *specprobe._SUBPACKAGES, *specprobe._API]
    for name in specprobe.__all__:
        assert getattr(specprobe, name) is not None, name


def test_type_checking_imports_match_the_lazy_names():
    """The `if TYPE_CHECKING:` imports (what IDEs and pyright see) name each public name from the module
    `__getattr__` resolves it from, and nothing else."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(specprobe))
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    seen = {a.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for a in node.names}
    expected = {name: module for name, module in specprobe._API.items()}
    expected.update({sub: "specprobe" for sub in specprobe._SUBPACKAGES})
    assert seen == expected


def test_subpackages_declare_all():
    import importlib

    for sub in ("core", "terms", "probe", "finetune", "reports"):
        module = importlib.import_module(f"specprobe.{sub}")
        assert module.__all__, sub
        for name in module.__all__:
            assert hasattr(module, name), f"specprobe.{sub}.{name}"


def test_importing_terms_does_not_load_torch():
    code = "import specprobe.terms, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_load_result_finds_a_kind_whose_module_was_not_imported(tmp_path):
    code = (
        "from specprobe.finetune.evaluation import MCEvaluation\n"  # any class: we only need one saved file
        "import pandas as pd, sys\n"
        f"MCEvaluation(pd.DataFrame({{'a': [1]}})).save(r'{tmp_path / 'r.json'}')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    probe = f"import sys, specprobe\nr = specprobe.load_result(r'{tmp_path / 'r.json'}')\nprint(type(r).__name__)\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "MCEvaluation"
