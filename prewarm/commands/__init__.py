"""The CLI's commands that read or write the database: one module per command family.

``cli.py`` parses arguments and dispatches here lazily (``_lazy("prewarm.commands.sql", "run_sql")``),
so ``prewarm --help`` imports none of them. ``sql`` (sql, status), ``train`` (train, forecast),
``replay`` (replay).
"""
