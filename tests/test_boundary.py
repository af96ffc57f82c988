"""The engine never imports the UI: DESIGN.md's one boundary, checked in a clean interpreter."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_engine_imports_no_textual_or_cockpit() -> None:
    code = (
        "import sys, pkgutil, importlib, engine\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('textual', 'cockpit'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"engine pulled in UI modules: {result.stdout}"


def test_engine_source_imports_no_ui_or_terminal_rendering() -> None:
    """Also the imports inside functions, which loading every module does not run: the engine
    returns data and the cockpit renders it (no textual, rich or plotext in engine/)."""
    ui = {"cockpit", "textual", "rich", "plotext"}
    for path in sorted((REPO / "engine").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            found = {n.split(".")[0] for n in names} & ui
            assert not found, f"{path.relative_to(REPO)}:{node.lineno} imports {sorted(found)}"


def test_style_is_clean() -> None:
    """ruff check and ruff format --check: style drift fails the build, not a review."""
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts_hold() -> None:
    """import-linter's contracts (pyproject.toml): the engine never imports the cockpit or
    textual, the TUI reaches the engine only through cockpit/client.py, the core imports no
    I/O. Run from the repository root, as CI does."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports)], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and " 0 broken" in result.stdout, result.stdout


def test_types_check() -> None:
    """mypy, configured in pyproject.toml ([tool.mypy]: engine and cockpit, strict about
    untyped definitions), finds no error. Run from the repository root, as CI does."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], capture_output=True, text=True, cwd=REPO, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr
