"""Errors that carry a one-line, user-facing message.

Every bad-input path in haq raises a subclass of :class:`HaqError`; the command line prints
``haq: error: <message>`` for them instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys


class HaqError(Exception):
    """Base class: the message alone must tell the user what was wrong and what is valid."""


class PolicyError(HaqError):
    """A quantization policy is malformed or does not fit the model."""


class ModelError(HaqError):
    """A model name, import path, checkpoint or structure cannot be used."""


class DataError(HaqError):
    """A dataset name or local dataset directory cannot be used."""


class TableError(HaqError):
    """A device cost table is malformed or cannot cost a layer."""


class ConfigError(HaqError):
    """A configuration value is out of range or inconsistent."""


def run_command(ns: argparse.Namespace) -> int:
    """Run a parsed sub-command: user errors become one ``haq: error:`` line (exit 2) and
    Ctrl-C exit 130. Torch-free, so the device agent's own entry point can share it."""
    try:
        return int(ns.func(ns) or 0)
    except HaqError as exc:
        print(f"haq: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("haq: interrupted; finished work is saved", file=sys.stderr)
        return 130
