"""What every scenario reports: one PASS/FAIL line with its figures, and the checks behind it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    name: str
    checks: dict[str, bool] = field(default_factory=dict)  # what must hold -> whether it held
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def check(self, what: str, ok: bool) -> bool:
        self.checks[what] = bool(ok)
        return bool(ok)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    def finish(self) -> Result:
        self.seconds = time.monotonic() - self.started
        return self

    def render(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'} {self.name} ({self.seconds:.0f}s)"
        lines = [head]
        lines += [f"    {k}: {_fmt(v)}" for k, v in self.figures.items()]
        lines += [f"    [{'ok' if ok else 'FAILED'}] {what}" for what, ok in self.checks.items()]
        lines += [f"    note: {n}" for n in self.notes]
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)
