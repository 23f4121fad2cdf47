"""Errors of the contracts package, each carrying what a caller needs to act.

Decode failures carry a stable ``reason`` code because ingest copies it into
``DeadLetter.reason``; tests and dashboards match on the code, never on text.
"""

from __future__ import annotations

from typing import Final, Literal

from pipeline.errors import DependencyError, OmnipipeError, SchemaError

DecodeReason = Literal[
    "empty",
    "bad_magic_byte",
    "truncated",
    "unknown_schema_id",
    "schema_mismatch",
    "not_avro",
    "oversize",
    "registry_unavailable",
]

#: Every reason ``AvroCodec.decode`` may report. Only ``registry_unavailable``
#: says nothing about the record itself: the caller should retry, not dead-letter.
DECODE_REASONS: Final[frozenset[str]] = frozenset(DecodeReason.__args__)  # type: ignore[attr-defined]


class DecodeError(OmnipipeError):
    """A record value could not be turned into a dict; ``reason`` is stable."""

    def __init__(self, reason: DecodeReason, detail: str, *, schema_id: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DecodeReason = reason
        self.detail = detail
        self.schema_id = schema_id  # from the header, when it could be read

    @property
    def retryable(self) -> bool:
        """True when the record may be fine and the schema source was down."""
        return self.reason == "registry_unavailable"


class EncodeError(OmnipipeError):
    """A record does not fit its subject's schema; ``path`` names the field."""

    def __init__(self, subject: str, path: str, detail: str) -> None:
        where = f"{subject}.{path}" if path else subject
        super().__init__(f"cannot encode {where}: {detail}")
        self.subject = subject
        self.path = path
        self.detail = detail


class UnknownSchemaId(SchemaError, LookupError):
    """No schema is registered under this id."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"no schema registered with id {schema_id}")
        self.schema_id = schema_id


class UnknownSubject(SchemaError, LookupError):
    """No schema is registered under this subject."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"no schema registered for subject {subject!r}")
        self.subject = subject


class IncompatibleSchema(SchemaError):
    """A new schema version cannot read data written with an older one."""

    def __init__(self, subject: str, problems: list[str]) -> None:
        lines = "\n  ".join(problems)
        super().__init__(f"{subject} is not backward-transitive compatible:\n  {lines}")
        self.subject = subject
        self.problems = problems


class SchemaRegistryError(DependencyError):
    """The Schema Registry refused a request or could not be reached (never the record's fault)."""

    def __init__(self, message: str, *, status: int | None = None, error_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
