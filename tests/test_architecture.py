"""The layout's promises, checked: the import rules of ../shared/DESIGN.md hold (import-linter's contracts in
.importlinter), a deliberate violation is caught, terminal/ keeps few loose modules, and no module of this
package hides behind an ImportError guard (a broken import must fail loudly, never switch a feature off)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("terminal", "drivers", "sync")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_import_contracts_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-4000:]


@pytest.mark.parametrize("where, line, contract", [
    ("terminal/punch/rules.py", "from sync.device import push", "core wings of terminal/"),
    ("drivers/gpio.py", "from terminal.log import punchlog", "drivers/ imports neither"),
    ("sync/server/ingest.py", "from terminal.log import punchlog", "the reference server"),
    ("terminal/log/chain.py", "from terminal.log import punchlog", "no import cycles"),
])
def test_a_deliberate_violation_is_caught(tmp_path, where, line, contract):
    """A copy of the tree with one forbidden import added: lint-imports fails and names the contract."""
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "static",
                                                                                  "templates"))
    shutil.copy(REPO / ".importlinter", tmp_path)
    target = tmp_path / where
    target.write_text(target.read_text() + f"\n{line}  # deliberate violation\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout[-3000:]
    broken = result.stdout.split("Broken contracts")[-1]
    assert contract in " ".join(broken.split()), broken[:3000]


def test_terminal_top_level_holds_few_modules():
    """Everything lives in a wing; the top keeps a few shared helpers (errors, durable, identity, ...)."""
    loose = sorted(p.name for p in (REPO / "terminal").glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= 8, loose


def _guarded_project_imports(path: Path) -> list[int]:
    """Line numbers of try-blocks that import a module of this project and catch ImportError."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        catches = any(isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                      or isinstance(h.type, ast.Tuple) and any(getattr(e, "id", "") in ("ImportError",
                                                                                        "ModuleNotFoundError")
                                                               for e in h.type.elts)
                      for h in node.handlers)
        imports_own = any(
            isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").split(".")[0] in PACKAGES)
            or isinstance(n, ast.Import) and any(a.name.split(".")[0] in PACKAGES for a in n.names)
            for stmt in node.body for n in ast.walk(stmt))
        if catches and imports_own:
            found.append(node.lineno)
    return found


def test_no_import_error_guards_for_our_own_modules():
    offenders = {str(p.relative_to(REPO)): lines
                 for pkg in (*PACKAGES, "tests", "bench") for p in (REPO / pkg).rglob("*.py")
                 if (lines := _guarded_project_imports(p))}
    assert not offenders, offenders
