"""Scoring images: the options table (knobs) and named presets, the SQLite store of masks
and ratings, the caches that put it in front of every model, and the Scorer (pipeline)."""
