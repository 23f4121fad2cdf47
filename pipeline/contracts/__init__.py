"""Avro contracts: schema sources, the frozen local registry, and the codec.

Typical use::

    codec = AvroCodec(SchemaCatalogue.load())
    value = codec.encode("omnipipe.events.WebEvent", event)
    event = codec.decode(value, "omnipipe.events.WebEvent")
"""

from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.contracts.errors import (
    DECODE_REASONS,
    DecodeError,
    DecodeReason,
    EncodeError,
    IncompatibleSchema,
    SchemaRegistryError,
    UnknownSchemaId,
    UnknownSubject,
)
from pipeline.contracts.registry_client import RegistryConfig, RegistryResolver
from pipeline.contracts.resolver import RegisteredSchema, SchemaResolver
from pipeline.contracts.wire import frame, unframe

__all__ = [
    "DECODE_REASONS",
    "AvroCodec",
    "DecodeError",
    "DecodeReason",
    "EncodeError",
    "IncompatibleSchema",
    "RegisteredSchema",
    "RegistryConfig",
    "RegistryResolver",
    "SchemaCatalogue",
    "SchemaRegistryError",
    "SchemaResolver",
    "UnknownSchemaId",
    "UnknownSubject",
    "frame",
    "unframe",
]
