"""Judging scores: agreement with MOS (correlation), the paper's figures (draw), a run's
report, and the labels-free self-check (check)."""
