"""The customer-360 OpenAPI document says what the guard does: bearer auth, 401, 403 and 429."""

from __future__ import annotations

from pathlib import Path

import yaml

SPEC = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "customer-360.yaml"


def test_every_operation_requires_the_bearer_scheme_and_documents_the_refusals() -> None:
    spec = yaml.safe_load(SPEC.read_text())
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        **spec["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert spec["security"] == [{"bearerAuth": []}]
    responses = spec["components"]["responses"]
    assert "WWW-Authenticate" in responses["Unauthorized"]["headers"]
    assert "Retry-After" in responses["TooManyRequests"]["headers"]
    operations = [(path, op) for path, item in spec["paths"].items() for op in item.values()]
    assert operations
    for path, op in operations:
        for code, name in (("401", "Unauthorized"), ("403", "Forbidden"), ("429", "TooManyRequests")):
            assert op["responses"][code] == {"$ref": f"#/components/responses/{name}"}, (path, code)
