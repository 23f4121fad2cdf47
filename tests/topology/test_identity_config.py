from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import TopologyError
from pipeline.topology.identity_config import load_identity_limits


def test_shipped_limits_load() -> None:
    limits = load_identity_limits()
    assert limits.roaming_fanout == 12
    assert len(limits.per_kind) == 6


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("limits: {shoe_size: 2}", "unknown identifier kind"),
        ("limits: {email: 0}", "at least 1"),
        ("limits: {email: two}", "integers"),
        ("limitz: {}", "only"),
        ("roaming_fanout: 0", "roaming_fanout"),
    ],
)
def test_bad_limits_fail_with_a_message(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "identity.yaml"
    path.write_text(body)
    with pytest.raises(TopologyError, match=message):
        load_identity_limits(path)
