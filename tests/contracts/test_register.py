"""The register tool: --check on the repo, and evolution rules on a copy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.contracts.catalogue import DEFAULT_ROOT, SchemaCatalogue
from pipeline.contracts.register import main
from pipeline.errors import SchemaError

REPO = DEFAULT_ROOT.parent


def test_every_source_is_registered() -> None:
    """Fails when a schema source was changed without `make schemas`."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.contracts.register", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "14 subjects registered" in result.stdout


def test_ids_are_frozen() -> None:
    catalogue = SchemaCatalogue.load()
    ids = {(s.subject, s.version): s.schema_id for s in catalogue}
    subjects = sorted(catalogue.subjects())
    audit, erasure = "omnipipe.identity.IdentityAudit", "omnipipe.control.ErasureCompleted"
    stock, trigger = "omnipipe.catalogue.StockChange", "omnipipe.triggers.Trigger"
    later = (audit, erasure, stock)
    assert [ids[(subject, 1)] for subject in subjects if subject not in later] == list(range(1, 12))
    assert ids[("omnipipe.events.WebEvent", 2)] == 12
    assert ids[(audit, 1)] == 13
    assert ids[(erasure, 1)] == 14
    assert ids[(stock, 1)] == 15
    assert ids[(trigger, 2)] == 16
    assert ids[("omnipipe.dlq.DeadLetter", 2)] == 17 == max(ids.values())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of schemas/src with an empty registry."""
    shutil.copytree(DEFAULT_ROOT / "src", tmp_path / "src")
    return tmp_path


def edit_web_event(root: Path, field: dict[str, object]) -> None:
    path = root / "src" / "web_event.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append(field)
    path.write_text(json.dumps(schema))


def test_register_then_evolve(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(root), "--check"]) == 1
    assert "not registered: omnipipe.events.WebEvent" in capsys.readouterr().err
    assert main(["--root", str(root)]) == 0
    assert main(["--root", str(root), "--check"]) == 0
    assert main(["--root", str(root)]) == 0  # nothing changed: nothing added
    assert len(SchemaCatalogue.load(root, fresh=True)) == 14

    edit_web_event(root, {"name": "campaign", "type": ["null", "string"], "default": None})
    assert main(["--root", str(root)]) == 0
    catalogue = SchemaCatalogue.load(root, fresh=True)
    latest = catalogue.latest("omnipipe.events.WebEvent")
    assert (latest.schema_id, latest.version) == (15, 2)
    assert (root / "registry" / "omnipipe.events.WebEvent" / "v2.avsc").exists()


def test_incompatible_change_is_refused_and_nothing_written(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--root", str(root)]) == 0
    ids_before = (root / "registry" / "ids.yaml").read_text()
    edit_web_event(root, {"name": "required_now", "type": "string"})
    assert main(["--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "required_now" in err and "has no default" in err
    assert (root / "registry" / "ids.yaml").read_text() == ids_before
    assert not (root / "registry" / "omnipipe.events.WebEvent" / "v2.avsc").exists()


def test_edited_snapshot_is_detected(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(root)]) == 0
    snapshot = root / "registry" / "omnipipe.events.PosEvent" / "v1.avsc"
    snapshot.write_text(snapshot.read_text().replace("till transaction", "till sale"))
    with pytest.raises(SchemaError, match="edited after registration"):
        SchemaCatalogue.load(root, fresh=True)
    assert main(["--root", str(root), "--check"]) == 2
    assert "edited after registration" in capsys.readouterr().err
