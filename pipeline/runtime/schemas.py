"""Pick the schema resolver: a Schema Registry when configured, else the local catalogue."""

from __future__ import annotations

from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.contracts.registry_client import RegistryConfig, RegistryResolver
from pipeline.settings import Settings


def registry_config(settings: Settings) -> RegistryConfig | None:
    """The Schema Registry client settings (SCHEMA_REGISTRY_*), or None without SCHEMA_REGISTRY_URL."""
    if not settings.schema_registry_url:
        return None
    return RegistryConfig(
        url=settings.schema_registry_url,
        username=settings.schema_registry_username,
        password=settings.schema_registry_password,
        bearer_token=settings.schema_registry_bearer_token,
        ssl_ca_location=settings.schema_registry_ssl_ca_location,
        ssl_certificate_location=settings.schema_registry_ssl_certificate_location,
        ssl_key_location=settings.schema_registry_ssl_key_location,
    )


def build_codec(
    settings: Settings, max_record_size: int | None = None, *, strict_encode: bool = True
) -> AvroCodec:
    """With SCHEMA_REGISTRY_URL, local versions are registered there and ids come from it.

    ``strict_encode=False`` skips the unknown-key check on encode: for records
    the pipeline builds itself from fixed literals, where it can never fire
    and costs ~1 us per record.
    """
    limit = max_record_size or settings.max_record_bytes
    catalogue = SchemaCatalogue.load()
    config = registry_config(settings)
    if config is None:
        return AvroCodec(catalogue, max_record_size=limit, check_unknown_fields=strict_encode)
    resolver = RegistryResolver(config)
    resolver.ensure_registered(catalogue)
    return AvroCodec(resolver, max_record_size=limit, check_unknown_fields=strict_encode)
