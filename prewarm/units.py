"""Parsing of the sizes and durations users type on the command line and in configs.

Sizes follow DESIGN.md: ``16GB`` is 16·10⁹ bytes, ``16GiB`` is 16·2³⁰ bytes and a
plain number is bytes. Durations follow Ollama's ``keep_alive``: a Go duration
string (``5m``, ``1h30m``, ``250ms``) or a number of seconds.
"""

from __future__ import annotations

import math
import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h|d)")


def parse_size(text: str | int | float) -> int:
    """Return a byte count; raise ValueError with the offending text otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, (int, float)):
        if text < 0 or not math.isfinite(text):
            raise ValueError(f"size must be a non-negative number of bytes: {text!r}")
        return int(text)
    m = _SIZE_RE.match(text)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(
            f"not a size: {text!r} (use e.g. 16GB = 16e9 bytes, 16GiB = 16*2^30 bytes, or plain bytes)"
        )
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def format_size(n: float) -> str:
    """Human-readable decimal size, the unit Ollama and nvidia-smi users read."""
    for unit, factor in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{int(n)} B"


def parse_duration(value: str | int | float) -> float:
    """Seconds from a Go-style duration string or a number of seconds.

    Negative values are allowed: Ollama reads a negative keep_alive as "forever".
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"not a duration: {value!r}")
        return float(value)
    text = value.strip()
    if not text:
        raise ValueError("empty duration")
    sign = 1.0
    if text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    try:
        return sign * float(text)
    except ValueError:
        pass
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"not a duration: {value!r} (use e.g. 5m, 1h30m, 30s or a number of seconds)")
    return sign * total
