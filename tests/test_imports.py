"""Every module imports on its own: an import cycle shows only when one module happens to be imported first."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import miniature

MODULES = sorted(m.name for m in pkgutil.walk_packages(miniature.__path__, "miniature."))


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_in_a_fresh_interpreter(module):
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_module_is_covered():
    assert {"miniature.outputs", "miniature.config", "miniature.cli", "miniature.report.html"} <= set(MODULES)
