"""Omnipipe's own error types; library errors are wrapped in these."""

from __future__ import annotations


class OmnipipeError(Exception):
    """Base of every error Omnipipe raises on purpose."""


class ConfigError(OmnipipeError):
    """Configuration is invalid; the message says what to fix."""


class BrokerStartError(OmnipipeError):
    """The embedded broker could not be started."""


class TopologyError(ConfigError):
    """The topic catalogue in topologies/ is invalid."""


class SchemaError(ConfigError):
    """A schema under schemas/ is invalid or the catalogue is inconsistent."""
