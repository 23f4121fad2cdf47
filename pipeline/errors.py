"""Omnipipe's own error types; library errors are wrapped in these.

Each error carries the exit code ``omnipipe`` ends with when it stops a
command (``pipeline/cli.py`` prints its message as one line and returns
``exit_code``). The codes are documented in the README (Exit codes).
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """What ``omnipipe`` exits with; defined here only."""

    OK = 0
    #: an unexpected error (a traceback), or a failure with no more specific code below
    FAILURE = 1
    #: the command line is wrong (argparse's own code)
    USAGE = 2
    #: configuration is invalid (environment, topologies/, schemas/); the message names what to fix
    CONFIG = 3
    #: a dependency (Kafka, the schema registry, the embedded broker) cannot be reached or started
    UNAVAILABLE = 4
    #: stopped by Ctrl-C (128 + SIGINT)
    INTERRUPTED = 130


class OmnipipeError(Exception):
    """Base of every error Omnipipe raises on purpose."""

    exit_code: ClassVar[ExitCode] = ExitCode.FAILURE


class ConfigError(OmnipipeError):
    """Configuration is invalid; the message says what to fix."""

    exit_code = ExitCode.CONFIG


class DependencyError(OmnipipeError):
    """Something Omnipipe needs and does not own cannot be reached; the message names it."""

    exit_code = ExitCode.UNAVAILABLE


class BrokerUnreachable(DependencyError):
    """The first contact with the Kafka cluster failed."""

    def __init__(self, servers: str, reason: str, variable: str | None = None) -> None:
        self.servers = servers
        self.reason = reason
        self.variable = variable
        where = f"Kafka at {servers} ({variable})" if variable else f"the Kafka broker at {servers}"
        super().__init__(f"cannot reach {where}: {reason}")

    def naming(self, variable: str) -> BrokerUnreachable:
        """The same failure, naming the environment variable that holds the address."""
        return BrokerUnreachable(self.servers, self.reason, variable)


class BrokerStartError(DependencyError):
    """The embedded broker could not be started."""


class TopologyError(ConfigError):
    """The topic catalogue in topologies/ is invalid."""


class SchemaError(ConfigError):
    """A schema under schemas/ is invalid or the catalogue is inconsistent."""
