"""One frozen settings object, read from the environment in ``main`` only.

Every field maps to one documented environment variable; invalid or
incomplete configuration fails at start with a message that names the
variable to fix.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import ConfigError

#: Used only with the embedded broker, where every byte is synthetic and local.
EMBEDDED_DEV_HASH_KEY = "omnipipe-embedded-dev-key-not-for-production"


def is_loopback(host: str) -> bool:
    """True for an address (or ``localhost``) that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    # Kafka
    kafka_bootstrap_servers: str | None = Field(None, alias="KAFKA_BOOTSTRAP_SERVERS")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", alias="KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", alias="KAFKA_SASL_MECHANISM"
    )
    kafka_sasl_username: str | None = Field(None, alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(None, alias="KAFKA_SASL_PASSWORD")
    kafka_ssl_ca_location: FilePath | None = Field(None, alias="KAFKA_SSL_CA_LOCATION")  # must exist

    # Schema registry (optional: without it, ids come from schemas/registry)
    schema_registry_url: str | None = Field(None, alias="SCHEMA_REGISTRY_URL")
    schema_registry_username: str | None = Field(None, alias="SCHEMA_REGISTRY_USERNAME")
    schema_registry_password: SecretStr | None = Field(None, alias="SCHEMA_REGISTRY_PASSWORD")
    schema_registry_bearer_token: SecretStr | None = Field(None, alias="SCHEMA_REGISTRY_BEARER_TOKEN")
    schema_registry_ssl_ca_location: Path | None = Field(None, alias="SCHEMA_REGISTRY_SSL_CA_LOCATION")
    schema_registry_ssl_certificate_location: Path | None = Field(
        None, alias="SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION")
    schema_registry_ssl_key_location: Path | None = Field(None, alias="SCHEMA_REGISTRY_SSL_KEY_LOCATION")
    # ingest waits (never dead-letters) while the registry is down; backoff doubles up to this
    registry_retry_max_s: float = Field(30.0, alias="OMNIPIPE_REGISTRY_RETRY_MAX_S", gt=0)

    # Omnipipe
    pii_hash_key: SecretStr | None = Field(None, alias="OMNIPIPE_PII_HASH_KEY")
    group_id: str = Field("omnipipe", alias="OMNIPIPE_GROUP_ID", min_length=1)
    web_host: str = Field("127.0.0.1", alias="OMNIPIPE_WEB_HOST")
    web_port: int = Field(6066, alias="OMNIPIPE_WEB_PORT", ge=0, le=65535)
    # bearer tokens accepted by the API, comma-separated (several at once for rotation); required once
    # OMNIPIPE_WEB_HOST is not a loopback address
    api_tokens: SecretStr | None = Field(None, alias="OMNIPIPE_API_TOKENS")
    # worker-to-worker routing is signed with this (HMAC); default: derived from OMNIPIPE_PII_HASH_KEY,
    # which every worker of a cluster shares already
    cluster_secret: SecretStr | None = Field(None, alias="OMNIPIPE_CLUSTER_SECRET")
    # /metrics, /healthz and /readyz on their own listener (no customer data there)
    metrics_host: str = Field("127.0.0.1", alias="OMNIPIPE_METRICS_HOST")
    metrics_port: int = Field(6067, alias="OMNIPIPE_METRICS_PORT", ge=0, le=65535)
    lookup_rate_per_s: float = Field(20.0, alias="OMNIPIPE_LOOKUP_RATE_PER_S", gt=0)
    lookup_burst: int = Field(40, alias="OMNIPIPE_LOOKUP_BURST", ge=1)
    web_debug: bool = Field(False, alias="OMNIPIPE_WEB_DEBUG",
                            description="Serve Faust's own pages (/, /router/, /table/...).")
    # dead letters keep the rejected record's bytes encrypted under per-person keys wrapped with this;
    # default: derived from OMNIPIPE_PII_HASH_KEY
    dlq_key: SecretStr | None = Field(None, alias="OMNIPIPE_DLQ_KEY")
    data_dir: Path = Field(Path("var"), alias="OMNIPIPE_DATA_DIR")
    topology_path: Path | None = Field(None, alias="OMNIPIPE_TOPOLOGY")
    topic_partitions: int | None = Field(None, alias="OMNIPIPE_TOPIC_PARTITIONS", ge=1)
    max_record_bytes: int = Field(256 * 1024, alias="OMNIPIPE_MAX_RECORD_BYTES", ge=1024)
    max_future_skew_s: float = Field(300.0, alias="OMNIPIPE_MAX_FUTURE_SKEW_S", ge=0)
    max_event_age_days: float = Field(400.0, alias="OMNIPIPE_MAX_EVENT_AGE_DAYS", gt=0)
    ingest_batch_size: int = Field(2000, alias="OMNIPIPE_INGEST_BATCH_SIZE", ge=1, le=100_000)
    ingest_commit_interval_s: float = Field(0.5, alias="OMNIPIPE_INGEST_COMMIT_INTERVAL_S", gt=0)
    identity_config_path: Path | None = Field(None, alias="OMNIPIPE_IDENTITY_CONFIG")
    identity_batch_size: int = Field(2000, alias="OMNIPIPE_IDENTITY_BATCH_SIZE", ge=1, le=100_000)
    identity_commit_interval_s: float = Field(0.2, alias="OMNIPIPE_IDENTITY_COMMIT_INTERVAL_S", gt=0)
    identity_settle: bool = Field(False, alias="OMNIPIPE_IDENTITY_SETTLE")  # replays: identity/settle.py
    profile_config_path: Path | None = Field(None, alias="OMNIPIPE_PROFILE_CONFIG")
    actions_config_path: Path | None = Field(None, alias="OMNIPIPE_ACTIONS_CONFIG")
    profile_batch_size: int = Field(2000, alias="OMNIPIPE_PROFILE_BATCH_SIZE", ge=1, le=100_000)
    profile_commit_interval_s: float = Field(0.2, alias="OMNIPIPE_PROFILE_COMMIT_INTERVAL_S", gt=0)
    # next-best-action decision time: "wall" (production) or "event": the newest event time the
    # worker has seen (stream time), for replays of history such as the demo's simulation
    nba_clock: Literal["wall", "event", "occasion"] = Field("wall", alias="OMNIPIPE_NBA_CLOCK")
    web_advertised_url: str | None = Field(
        None, alias="OMNIPIPE_WEB_ADVERTISED_URL",
        description="How other workers reach this one's web server (lookups are routed to the owner).",
    )
    local_broker: bool = Field(
        False, alias="OMNIPIPE_LOCAL_BROKER",
        description="The cluster is an embedded broker on this machine: short group timeouts.",
    )
    # which embedded broker to start when KAFKA_BOOTSTRAP_SERVERS is unset: Apache Kafka where Java 17+
    # and its jars are present (auto), else Tansu
    embedded_broker: Literal["auto", "kafka", "tansu"] = Field("auto", alias="OMNIPIPE_EMBEDDED_BROKER")
    # the broker's known defects to work around (DESIGN.md): "tansu" for the embedded Tansu broker
    # (set automatically when it is started), "none" for Apache Kafka and every real cluster
    broker_quirks: Literal["none", "tansu"] = Field("none", alias="OMNIPIPE_BROKER_QUIRKS")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="OMNIPIPE_LOG_LEVEL")

    @property
    def advertised_url(self) -> str:
        if self.web_advertised_url:
            return self.web_advertised_url.rstrip("/")
        return f"http://{self.web_host}:{self.web_port}"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        if self.web_host in ("0.0.0.0", "::") and not self.web_advertised_url:
            raise ValueError(
                f"OMNIPIPE_WEB_HOST={self.web_host} listens on every interface: set "
                "OMNIPIPE_WEB_ADVERTISED_URL to the URL other workers use to reach this one"
            )
        if self.kafka_bootstrap_servers is not None and not self.kafka_bootstrap_servers.strip():
            raise ValueError("KAFKA_BOOTSTRAP_SERVERS is set but empty; unset it to use the embedded broker")
        if self.kafka_bootstrap_servers and self.pii_hash_key is None:
            raise ValueError(
                "OMNIPIPE_PII_HASH_KEY is required with an external Kafka cluster: "
                "e-mails and phones are hashed with it (use at least 32 random bytes, "
                "e.g. `openssl rand -hex 32`)"
            )
        if self.pii_hash_key is not None and len(self.pii_hash_key.get_secret_value()) < 16:
            raise ValueError("OMNIPIPE_PII_HASH_KEY must be at least 16 characters")
        if not is_loopback(self.web_host) and not self.api_token_values():
            raise ValueError(
                f"OMNIPIPE_WEB_HOST={self.web_host} is reachable beyond this machine: set "
                "OMNIPIPE_API_TOKENS (comma-separated bearer tokens, e.g. `openssl rand -hex 32`)"
            )
        if any(len(t) < 16 for t in self.api_token_values()):
            raise ValueError("OMNIPIPE_API_TOKENS: every token must be at least 16 characters")
        if self.dlq_key is not None and len(self.dlq_key.get_secret_value()) < 16:
            raise ValueError("OMNIPIPE_DLQ_KEY must be at least 16 characters")
        if self.cluster_secret is not None and len(self.cluster_secret.get_secret_value()) < 16:
            raise ValueError("OMNIPIPE_CLUSTER_SECRET must be at least 16 characters")
        self._check_schema_registry()
        return self

    def _check_schema_registry(self) -> None:
        """SCHEMA_REGISTRY_*: one kind of auth, a key only with its certificate, files that exist."""
        extras = {
            "SCHEMA_REGISTRY_USERNAME": self.schema_registry_username,
            "SCHEMA_REGISTRY_PASSWORD": self.schema_registry_password,
            "SCHEMA_REGISTRY_BEARER_TOKEN": self.schema_registry_bearer_token,
            "SCHEMA_REGISTRY_SSL_CA_LOCATION": self.schema_registry_ssl_ca_location,
            "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION": self.schema_registry_ssl_certificate_location,
            "SCHEMA_REGISTRY_SSL_KEY_LOCATION": self.schema_registry_ssl_key_location,
        }
        if not self.schema_registry_url:
            given = [name for name, value in extras.items() if value is not None]
            if given:
                raise ValueError(f"{', '.join(given)} set without SCHEMA_REGISTRY_URL: set it, or unset them")
            return
        if (self.schema_registry_username is None) != (self.schema_registry_password is None):
            raise ValueError("SCHEMA_REGISTRY_USERNAME and SCHEMA_REGISTRY_PASSWORD go together: set both")
        if self.schema_registry_username is not None and self.schema_registry_bearer_token is not None:
            raise ValueError("SCHEMA_REGISTRY_USERNAME/PASSWORD (basic auth) and "
                             "SCHEMA_REGISTRY_BEARER_TOKEN are both set: choose one")
        if self.schema_registry_ssl_key_location and not self.schema_registry_ssl_certificate_location:
            raise ValueError("SCHEMA_REGISTRY_SSL_KEY_LOCATION needs "
                             "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION (the client certificate of that key)")
        for name in ("SCHEMA_REGISTRY_SSL_CA_LOCATION", "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION",
                     "SCHEMA_REGISTRY_SSL_KEY_LOCATION"):
            path = extras[name]
            if isinstance(path, Path) and not path.exists():
                raise ValueError(f"{name}={path}: no such file")

    def api_token_values(self) -> list[bytes]:
        """The accepted bearer tokens (OMNIPIPE_API_TOKENS, comma-separated), empty when unset."""
        if self.api_tokens is None:
            return []
        return [t.strip().encode() for t in self.api_tokens.get_secret_value().split(",") if t.strip()]

    def routing_secret(self) -> bytes:
        """The key that signs worker-to-worker requests (shared by every worker of the cluster)."""
        if self.cluster_secret is not None:
            return self.cluster_secret.get_secret_value().encode()
        return hmac.new(self.hash_key(), b"omnipipe-routing-v1", hashlib.sha256).digest()

    def dlq_master_key(self) -> bytes:
        """The key that wraps the per-person keys of dead letters; default: derived from the hash key."""
        if self.dlq_key is not None:
            return self.dlq_key.get_secret_value().encode()
        return hmac.new(self.hash_key(), b"omnipipe-dlq-v1", hashlib.sha256).digest()

    @property
    def embedded(self) -> bool:
        """True when no cluster is configured and the embedded broker is used."""
        return self.kafka_bootstrap_servers is None

    @property
    def tansu(self) -> bool:
        """True when the cluster is Tansu, whose defects the pipeline works around (only there)."""
        return self.broker_quirks == "tansu"

    def hash_key(self) -> bytes:
        if self.pii_hash_key is not None:
            return self.pii_hash_key.get_secret_value().encode()
        if not self.embedded:  # pragma: no cover - the validator refuses this
            raise ConfigError("OMNIPIPE_PII_HASH_KEY is required")
        return EMBEDDED_DEV_HASH_KEY.encode()

    def with_bootstrap(self, servers: str, data_dir: Path, *, tansu: bool = False) -> Settings:
        """A copy pointing at a broker started by us (dev hash key, its own state dir).

        Every embedded broker starts empty (fresh storage), so local table state
        from an earlier broker would contradict its (empty) changelogs. ``tansu``:
        the broker is Tansu, whose defects the pipeline then works around
        (``broker_quirks="tansu"``); Apache Kafka gets none of the workarounds.
        """
        key = self.pii_hash_key or SecretStr(EMBEDDED_DEV_HASH_KEY)
        return self.model_copy(
            update={
                "kafka_bootstrap_servers": servers, "pii_hash_key": key,
                "local_broker": True, "data_dir": data_dir,
                "broker_quirks": "tansu" if tansu else "none",
            }
        )


def load_settings(**overrides: object) -> Settings:
    """Read the environment; turn validation errors into one readable ConfigError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
