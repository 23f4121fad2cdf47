"""A worker with a broken stage configuration stops at once, before any broker, naming what to fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import ExitCode


@pytest.mark.parametrize(("variable", "content", "message"), [
    ("OMNIPIPE_ACTIONS_CONFIG", "channels: {}\n", "actions.yaml: top level: missing ['actions', 'policy']"),
    ("OMNIPIPE_PROFILE_CONFIG", "caps: {memo: 0}\n", "caps.memo must be a positive integer"),
    ("OMNIPIPE_IDENTITY_CONFIG", "limits: {email: zero}\n", "'limits' must map identifier kinds"),
])
def test_a_broken_stage_configuration_fails_fast(tmp_path: Path, variable: str, content: str,
                                                 message: str) -> None:
    name = {"OMNIPIPE_ACTIONS_CONFIG": "actions.yaml", "OMNIPIPE_PROFILE_CONFIG": "profile.yaml",
            "OMNIPIPE_IDENTITY_CONFIG": "identity.yaml"}[variable]
    path = tmp_path / name
    path.write_text(content)
    env = {**os.environ, variable: str(path), "OMNIPIPE_DATA_DIR": str(tmp_path / "data")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the embedded broker would start next: it must not get there
    result = subprocess.run([sys.executable, "-m", "pipeline", "worker"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == ExitCode.CONFIG, result.stderr[-2000:]
    assert message in result.stderr and str(path) in result.stderr
    assert "Tansu" not in result.stderr and "broker on" not in result.stderr
