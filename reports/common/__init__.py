"""Shared scaffolding of the studies under ``reports/``: data, models, paired training,
statistics and README/HTML rendering. Study code only (not part of the graphnn package)."""
