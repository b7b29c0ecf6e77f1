"""Levenberg–Marquardt's settings that the torch LM (solvers.lm) and its numba twin (solvers.compiled) share,
torch-free so that the twin reads the very same numbers."""

CLOSE = 1e-8  # relative reduction the damped model still promises, below which Gauss–Newton steps take over
NEWTON_STREAK = 5  # Gauss–Newton steps in a row, mid-run, before damping resumes
