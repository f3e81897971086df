"""The error family: every failure a user can cause or meet carries a one-line message.

Every bad-input path in haq raises a subclass of :class:`HaqError`; the command line prints
``haq: error: <message>`` for them instead of a traceback. The subclass says *what kind* of thing
was wrong, so callers (the CLI, a service, tests) can tell bad input from a broken run directory
from an unreachable device from a bug.
"""

from __future__ import annotations


class HaqError(Exception):
    """Base class: the message alone must tell the user what was wrong and what is valid."""


class ConfigError(HaqError):
    """A configuration value is out of range or inconsistent."""


class DivergedError(ConfigError):
    """Training or a fine-tune diverged: its learning rate (or a penalty's weight) is too high for the model."""


class PolicyError(HaqError):
    """A quantization policy is malformed or does not fit the model."""


class ModelError(HaqError):
    """A model name, import path, checkpoint or structure cannot be used."""


class DataError(HaqError):
    """A dataset name or local dataset directory cannot be used."""


class TableError(HaqError):
    """A device cost table is malformed or cannot cost a layer."""


class RunDirError(HaqError):
    """A run directory is missing, corrupt, written by another configuration, or not writable."""


class DeviceError(HaqError):
    """A device (local runtime or remote agent) cannot be reached, refused a request or failed to measure."""


class UsageError(HaqError):
    """An API was called in a state where it cannot act (e.g. stepping a finished episode)."""


class InternalError(HaqError):
    """An invariant of haq itself broke: a bug to report, never the user's input."""
