"""Exceptions a user can act on. Every message names the file, key or value and what to do."""

from __future__ import annotations


class OnceflowError(Exception):
    """Base class: an error whose message is meant for the user, not a traceback."""

    exit_code = 1


class ConfigError(OnceflowError):
    """params.yaml (or another config) is malformed: unknown key, wrong type, bad value."""

    exit_code = 2


class DataError(OnceflowError):
    """Input data is missing, truncated or inconsistent (a user's input: exit code 2)."""

    exit_code = 2


class ValidationFailed(OnceflowError):
    """The data validation gate failed; downstream stages must not run (bad input: exit 2)."""

    exit_code = 2


class BackendUnavailable(OnceflowError):
    """A latency/deploy backend cannot run here (missing package, no GPU)."""


class SearchError(OnceflowError):
    """The search cannot satisfy its constraints (e.g. an impossible latency budget)."""


class RegistryError(OnceflowError):
    """Object storage or registry content is unreachable, malformed or fails verification."""

    exit_code = 2


# EX_TEMPFAIL: the failure is transient (a service did not answer); the flows retry it.
TRANSIENT_EXIT = 75


class StoreUnreachable(RegistryError):
    """The object store did not answer (endpoint down, network): worth retrying, not bad input."""

    exit_code = TRANSIENT_EXIT
