"""What every part raises for an expected failure, and the one way an exception becomes a line for a person.

The CLI prints a CommandError as one line and exits 1; the admin API and the
logs use `one_line` so that a multi-line library error (DuckDB, aiohttp) never
spreads over a log or a JSON body.
"""

from __future__ import annotations


class CommandError(Exception):
    """An expected failure: printed as one line on stderr, exit status 1."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
