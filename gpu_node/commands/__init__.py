"""Subcommands of `python -m gpu_node`, one module each, each with `register(subparsers)`.

Registering must stay cheap: no torch import until a command runs, so that `--help`
answers at once. Heavy modules are imported inside each command's `run`.
"""

import argparse


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help once, and only when X says something.

    argparse's ArgumentDefaultsHelpFormatter also writes "(default: None)" for required
    options and repeats the default of a help text that already names it.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "(default" in text
            or default is None
            or default is False
            or default in ("", [])
            or default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return action.help
        return f"{text} (default: %(default)s)".strip()
