"""DuckDB store: schema, buffered writer and read helpers (DESIGN.md, Store)."""
