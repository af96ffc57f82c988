"""The engine never imports the UI: DESIGN.md's one boundary, checked in a clean interpreter."""

import subprocess
import sys


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


def test_style_is_clean() -> None:
    """ruff check and ruff format --check: style drift fails the build, not a review."""
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
