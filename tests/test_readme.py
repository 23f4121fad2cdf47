"""The README's configuration table and exit codes are checked against the code, so they cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import ExitCode
from pipeline.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def _table_after(marker: str) -> list[list[str]]:
    """The rows (cells) of the first Markdown table after the line starting with ``marker``."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(marker))
    rows: list[list[str]] = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    assert len(rows) > 2, f"no table after {marker!r}"
    return rows[2:]  # without the header and the |---| line


def test_every_setting_is_in_the_configuration_table_and_nothing_else() -> None:
    documented = {name for row in _table_after("Configuration (all environment variables")
                  for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row[0])}
    aliases = {field.alias for field in Settings.model_fields.values()}
    assert aliases - documented == set(), "settings missing from the README table"
    assert documented - aliases == set(), "README table rows for variables the code does not read"


def test_every_exit_code_is_documented_with_its_number() -> None:
    rows = _table_after("Exit codes (")
    assert sorted(int(row[0]) for row in rows) == sorted(int(code) for code in ExitCode)
