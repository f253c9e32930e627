"""Every exception prewarm raises for an expected failure, in one hierarchy, and the one way an exception
becomes a line for a person.

One base, `PrewarmError`, so the CLI catches one thing and prints it as one
line (exit status 1), and a script embedding prewarm can tell prewarm's
refusals from its own bugs. Each class keeps the builtin it always was
(ValueError for bad input, RuntimeError for a failed operation) so code that
caught those before still does. The admin API and the logs use `one_line` so
that a multi-line library error (DuckDB, aiohttp) never spreads over a log or a
JSON body.
"""

from __future__ import annotations


class PrewarmError(Exception):
    """Base of every expected failure; its message is meant for a person."""


class CommandError(PrewarmError):
    """A command cannot do what it was asked (no forecasts yet, a service holds the database)."""


class ConfigError(PrewarmError, ValueError):
    """A setting is missing or malformed; the message names it."""


class CatalogError(PrewarmError, ValueError):
    """The catalog file is missing or malformed; the message names the line."""


class TraceError(PrewarmError, ValueError):
    """A trace file is missing, unreadable or lacks a required column; the message says which."""


class BackendError(PrewarmError, RuntimeError):
    """The upstream refused or failed an operation; the message says which and why."""


class Unsupported(BackendError):
    """The upstream has no API for this operation (e.g. unloading on an OpenAI-compatible server)."""


class StoreUnavailable(PrewarmError, RuntimeError):
    """The database file cannot be opened now (locked by another process, unreadable)."""


class ReadError(PrewarmError, RuntimeError):
    """A query could not be answered; the message is one line for the user."""


class ReadOnlyError(PrewarmError, ValueError):
    """The SQL is not a single read-only statement; the message says why."""


class QueryTimeout(PrewarmError, RuntimeError):
    """A user's query ran past its time limit and was interrupted."""


class ActionRefused(PrewarmError, RuntimeError):
    """The prewarmer will not carry out an admin action (no room, the model busy); the message says why."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
