"""The ``fieldkit`` command line. Subcommands are thin: they parse, then call the library.

User mistakes raise ``FieldkitError``; ``main`` prints its one line and exits non-zero.
"""
from __future__ import annotations

import sys
import warnings

import tyro

from fieldkit.commands.distill import Distill
from fieldkit.commands.outputs import Eval, Export, Render
from fieldkit.commands.scene import Doctor, SceneGroup
from fieldkit.commands.train import Train
from fieldkit.commands.view import View
from fieldkit.errors import FieldkitError, FieldkitWarning


COMMANDS = {
    "train": Train, "eval": Eval, "render": Render, "export": Export, "distill": Distill,
    "view": View,
    "scene": SceneGroup,
    "doctor": Doctor,
}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, FieldkitWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fieldkit`` console script. Returns the exit code."""
    warnings.showwarning = _show_warning
    command = tyro.extras.subcommand_cli_from_dict(
        COMMANDS, prog="fieldkit", args=argv,
        description="fieldkit: train, view, convert and export neural 3D scenes.")
    try:
        command.run()
    except FieldkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
