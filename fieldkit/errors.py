"""User-facing errors and warnings.

Every problem a user can cause (a bad path, a corrupt file, an unsupported camera) raises a
``FieldkitError`` whose message is ONE line that names the file and says what to do. The CLI
prints that line and exits non-zero; it never shows a traceback for these.
"""
from __future__ import annotations

import warnings


class FieldkitError(Exception):
    """A problem with the user's input or environment; ``str(err)`` is one actionable line."""

    exit_code: int = 1


class SceneError(FieldkitError):
    """A scene folder that cannot be loaded as asked."""


class FieldkitWarning(UserWarning):
    """Something the user should know about that does not stop the work."""


def warn(message: str) -> None:
    """Emit one ``FieldkitWarning``; the CLI prints it as ``warning: message``."""
    warnings.warn(message, FieldkitWarning, stacklevel=2)
