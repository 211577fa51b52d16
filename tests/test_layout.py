"""The layout stays findable: leadflow/ holds one package per domain and a handful of loose modules, and no
module grows past what reads in one sitting (split it along its sections instead)."""

from __future__ import annotations

from leadflow.platform.settings import PROJECT_ROOT

LONGEST = 420  # lines: "about 400", with room for a docstring that grows
LOOSE_MODULES = {"__init__.py", "contracts.py"}


def test_no_module_is_longer_than_one_sitting() -> None:
    long = {
        str(path.relative_to(PROJECT_ROOT)): lines
        for folder in ("leadflow", "workflows", "activities")
        for path in (PROJECT_ROOT / folder).rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > LONGEST
    }
    assert not long, long


def test_leadflow_holds_domain_packages_and_a_handful_of_loose_modules() -> None:
    loose = {path.name for path in (PROJECT_ROOT / "leadflow").glob("*.py")}
    assert loose <= LOOSE_MODULES, loose - LOOSE_MODULES
