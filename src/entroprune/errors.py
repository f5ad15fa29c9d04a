"""One exception type for every bad input, so the CLI can turn it into one line and exit 2."""

from __future__ import annotations


class EntropruneError(Exception):
    """A problem with the user's input: the message names the problem and the fix."""


class DataError(EntropruneError):
    """A dataset is missing, corrupt or inconsistent."""


class CheckpointError(EntropruneError):
    """A checkpoint cannot be read or does not match its spec."""


class ConfigError(EntropruneError):
    """An option, policy or config value is invalid."""
