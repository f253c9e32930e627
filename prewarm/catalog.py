"""Model catalog: size in VRAM and load time per model, from a CSV ``model,size_bytes,load_seconds``.

Models missing from the catalog get a size from :func:`default_entry`, a documented
rule so that replays of traces with unknown model names still mean something:

* a name carrying a parameter count (``llama3.1:8b``, ``qwen2.5-0.5b``, ``70B``) is
  sized as a 4-bit quantised model: 0.6 GB per billion parameters plus 0.5 GB for
  the KV cache and runtime;
* any other name is sized as a 7-8B model at 4-bit: 5 GB;
* load time is size / 0.4 GB/s, which gives the ~12 s a 7B model takes to load
  from local disk on a laptop (DESIGN.md, "The problem in numbers").
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from prewarm.errors import CatalogError as CatalogError
from prewarm.records import CatalogEntry
from prewarm.units import parse_size

GB = 10**9
BYTES_PER_BILLION_PARAMS = 0.6 * GB
RUNTIME_OVERHEAD_BYTES = int(0.5 * GB)
UNKNOWN_MODEL_BYTES = 5 * GB
LOAD_BYTES_PER_SECOND = 0.4 * GB
DEFAULT_RULE = (
    "models not in the catalog: 0.6 GB per billion parameters named in the model name "
    "(e.g. ':8b') + 0.5 GB, else 5 GB; load time = size / 0.4 GB/s"
)

_PARAMS_RE = re.compile(r"(?<![0-9a-z.])(\d+(?:\.\d+)?)\s*b(?![a-z])", re.IGNORECASE)



def default_entry(model: str) -> CatalogEntry:
    m = _PARAMS_RE.search(model.replace("_", "-"))
    if m:
        size = int(float(m.group(1)) * BYTES_PER_BILLION_PARAMS) + RUNTIME_OVERHEAD_BYTES
    else:
        size = UNKNOWN_MODEL_BYTES
    return CatalogEntry(model=model, size_bytes=size, load_seconds=round(size / LOAD_BYTES_PER_SECOND, 3))


@dataclass
class Catalog:
    entries: dict[str, CatalogEntry]
    source: str = "built-in rule"

    def get(self, model: str) -> CatalogEntry:
        """The catalog's entry, or the default rule's for an unknown model."""
        entry = self.entries.get(model)
        return entry if entry is not None else default_entry(model)

    def __contains__(self, model: object) -> bool:
        return model in self.entries

    def __iter__(self):
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)


def load_catalog(path: str | Path | None) -> Catalog:
    """Read a catalog CSV; ``None`` gives an empty catalog (every model from the default rule)."""
    if path is None:
        return Catalog({}, source="built-in rule")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"catalog not found: {p}") from None
    reader = csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    need = {"model", "size_bytes", "load_seconds"}
    if reader.fieldnames is None or not need <= {f.strip() for f in reader.fieldnames}:
        raise CatalogError(f"{p}: header must have columns model,size_bytes,load_seconds; got {reader.fieldnames}")
    entries: dict[str, CatalogEntry] = {}
    for lineno, row in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        try:
            model = row["model"]
            if not model:
                raise ValueError("empty model name")
            size = parse_size(row["size_bytes"])
            load = float(row["load_seconds"])
            if load < 0 or not math.isfinite(load):
                raise ValueError(f"load_seconds must be >= 0, got {load}")
        except (KeyError, ValueError) as exc:
            raise CatalogError(f"{p}: line {lineno}: {exc}") from None
        entries[model] = CatalogEntry(model=model, size_bytes=size, load_seconds=load)
    return Catalog(entries, source=str(p))


def sample_catalog_path() -> Path:
    """The sample catalog shipped with the package (data/catalog.csv in a checkout links to it)."""
    return Path(str(resources.files("prewarm") / "data" / "catalog.csv"))
