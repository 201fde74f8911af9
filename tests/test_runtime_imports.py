"""What a runtime command imports never needs a test-only package (the `make demo` first-run failure)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import textwrap

import lmsbridge

TEST_ONLY = ("jsonschema", "hypothesis", "schemathesis", "standardwebhooks", "pytest", "mypy", "ruff")
# Modules that exist to support tests and are never imported by a runtime command.
TEST_SUPPORT = ("lmsbridge.testing.openapi",)


def test_every_runtime_module_imports_without_test_only_packages() -> None:
    """Every module under src/lmsbridge (the demo, CLI and stand-ins included) imports in a fresh
    interpreter where the test extras cannot be imported, and `lmsbridge demo --help` runs there."""
    modules = sorted(
        info.name
        for info in pkgutil.walk_packages(lmsbridge.__path__, "lmsbridge.")
        if info.name not in TEST_SUPPORT and ".migrations" not in info.name and info.name != "lmsbridge.__main__"
    )
    assert "lmsbridge.demo" in modules
    assert "lmsbridge.testing.stackone" in modules
    script = textwrap.dedent(
        f"""
        import importlib, importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {TEST_ONLY!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (test-only)")
                return None

        sys.meta_path.insert(0, Block())
        for name in {modules!r}:
            importlib.import_module(name)
        from lmsbridge.cli import main
        try:
            main(["demo", "--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
