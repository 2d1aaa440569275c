"""Command-line option helpers shared by every `deer-ros` sub-command (a bottom-layer module: any layer may use it)."""
from __future__ import annotations

import argparse
import sys
from typing import Any


class _DeprecatedAlias(argparse.Action):
    """An old spelling of an option: sets the same value, hidden from --help, says what to use instead."""

    def __init__(self, option_strings: list[str], dest: str, replacement: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.replacement = replacement

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated, use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: Any, old: str, new: str, dest: str, type: Any = str) -> None:
    """Accept `old` for the option `new` (stored in `dest`) of `parser` (a parser or an argument group)."""
    parser.add_argument(old, dest=dest, action=_DeprecatedAlias, replacement=new, type=type,
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS)
