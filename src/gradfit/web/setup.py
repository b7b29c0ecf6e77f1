"""What a playground run is: its settings (``Setup``, checked field by field), the server's limits, its data
(generated as the article's, or an uploaded CSV), and the one-line refusal a request gets (``PlaygroundError``).

Nothing here knows about HTTP or fitting; ``sessions`` runs what a Setup describes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from ..data import NOISE, SEED, seed_data
from ..io import read_csv_bytes, select_columns


METHODS = ("gd", "momentum", "nesterov", "adam", "lbfgs", "lm")  # the methods that take steps one at a time


@dataclass(frozen=True)
class Limits:
    """What one server allows: every request and every session stays inside these."""

    max_sessions: int = 100
    session_ttl_s: float = 30 * 60  # a session untouched this long is forgotten
    max_steps_per_request: int = 500
    max_steps_per_session: int = 50_000
    max_upload_bytes: int = 5 * 1024 * 1024
    max_points: int = 100_000
    max_expression: int = 200  # characters of a typed model
    min_learning_rate: float = 1e-6
    max_learning_rate: float = 1.0
    max_sessions_per_client: int = 20  # by address: one client cannot take every slot
    evict_idle_s: float = 60.0  # when full, the least recently used session idle this long makes room
    optimum_budget_s: float = 3.0  # the most CPU time one create spends looking for the best possible fit

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes + 64 * 1024  # an upload travels inside a small JSON document


class PlaygroundError(Exception):
    """A request the playground refuses: ``status`` is its HTTP status, the message says what to change."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Setup:
    """Everything that defines a run; the page keeps it in its URL, so a link reproduces it.

    The default is the seed article: its 15 points (seed 1989, noise 3), a quadratic,
    plain gradient descent on the raw parameters at learning rate 1e-4, from the
    article's random start.
    """

    data: str = "generated"  # "generated" (seed and noise) or "upload" (a CSV sent with the setup)
    seed: int = SEED  # draws the data (when generated) and then the random start, as the article does
    noise: float = NOISE
    model: str = "quadratic"  # a built-in name (quadratic, line, poly3, gaussian, ...) or an expression in x
    method: str = "gd"
    learning_rate: float = 1e-4
    scale: bool = False  # walk standardized coordinates (gradfit fit's default) instead of the raw parameters

    @classmethod
    def parse(cls, given, limits: Limits) -> "Setup":
        """A Setup from a JSON object, every field checked; missing fields take the article's values."""
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise PlaygroundError(400, "`setup` must be a JSON object of settings.")
        names = [f.name for f in fields(cls)]
        unknown = [k for k in given if k not in names]
        if unknown:
            raise PlaygroundError(400, f"Unknown setting {unknown[0]!r}. Settings are: {', '.join(names)}.")
        setup = replace(cls(), **given)
        if setup.data not in ("generated", "upload"):
            raise PlaygroundError(400, f"`data` must be 'generated' or 'upload', got {setup.data!r}.")
        _whole(setup.seed, "seed", 0, 2**31 - 1)
        _number(setup.noise, "noise", 0.0, 1000.0)
        if not isinstance(setup.model, str) or not setup.model.strip():
            raise PlaygroundError(400, "`model` must be a model name or an expression, such as a*x**2 + b*x + c.")
        if len(setup.model) > limits.max_expression:
            raise PlaygroundError(
                400,
                f"`model` is {len(setup.model)} characters long; the playground takes at most {limits.max_expression}.",
            )
        if setup.method not in METHODS:
            raise PlaygroundError(400, f"Unknown method {setup.method!r}. Choose one of: {', '.join(METHODS)}.")
        _number(setup.learning_rate, "learning_rate", limits.min_learning_rate, limits.max_learning_rate)
        if not isinstance(setup.scale, bool):
            raise PlaygroundError(400, f"`scale` must be true or false, got {setup.scale!r}.")
        return replace(setup, noise=float(setup.noise), learning_rate=float(setup.learning_rate))


def _whole(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise PlaygroundError(400, f"`{name}` must be a whole number from {low} to {high}, got {shown}.")
    return value


def _number(value, name: str, low: float, high: float) -> float:
    try:  # (an integer of 400 digits is a JSON number too: too large for a float)
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:
        number = math.nan
    if not math.isfinite(number) or not low <= number <= high:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise PlaygroundError(400, f"`{name}` must be a number from {low:g} to {high:g}, got {shown}.")
    return number


def uploaded_data(text, filename, limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    """x and y (the first two columns) of an uploaded CSV, checked as ``gradfit fit`` checks a file."""
    if not isinstance(text, str) or not text.strip():
        raise PlaygroundError(400, "`csv` must hold the uploaded file's text (a column of x, a column of y).")
    try:
        raw = text.encode()
    except UnicodeEncodeError:  # a lone surrogate (\ud800) is a JSON string, but no text a file can hold
        raise PlaygroundError(
            400, "`csv` holds characters that are not text (a lone UTF-16 surrogate). Upload the file as UTF-8."
        ) from None
    if len(raw) > limits.max_upload_bytes:
        raise PlaygroundError(
            413,
            f"The uploaded CSV is {len(raw) / 2**20:.1f} MB; the playground takes at "
            f"most {limits.max_upload_bytes / 2**20:g} MB.",
        )
    label = filename if isinstance(filename, str) and 0 < len(filename) <= 100 else "the upload"
    table, first_row = read_csv_bytes(raw, label)  # only ever read from memory: no path comes from a request
    if table.num_rows > limits.max_points:
        raise PlaygroundError(
            413, f"The uploaded CSV has {table.num_rows:,} rows; the playground takes at most {limits.max_points:,}."
        )
    columns = select_columns(table, first_row, label)
    return columns["x"], columns["y"]


def make_data(setup: Setup, csv_text=None, filename=None, limits: Limits | None = None):
    """The setup's data: the article's generator (seed, noise) or the uploaded CSV."""
    limits = limits or Limits()
    if setup.data == "upload":
        return uploaded_data(csv_text, filename, limits)
    if csv_text is not None:
        raise PlaygroundError(400, "`csv` was sent but `data` is 'generated'; set data to 'upload' to use it.")
    x, y = seed_data(setup.seed, noise=setup.noise)
    return x.double().numpy(), y.double().numpy()


def checked_pair(pair):
    if pair is None:
        return None
    if not isinstance(pair, (list, tuple)) or not all(isinstance(p, str) for p in pair):
        raise PlaygroundError(400, '`pair` must be a list of two parameter names, such as ["a", "b"].')
    return list(pair)
