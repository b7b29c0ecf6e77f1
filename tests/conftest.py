"""Shared fixtures: the seed article's golden values and seeded data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # tests never open windows

ROOT = Path(__file__).resolve().parents[1]
# shared/ lies beside the repository (../shared), for developers and CI alike.
SHARED = Path(os.environ.get("GRADFIT_SHARED", ROOT.parent / "shared"))
GOLDEN_PATH = SHARED / "reference" / "seed_golden.json"

# Tolerances, named once. Float32 runs must match the article to this relative difference.
GOLDEN_RTOL = 1e-9


@pytest.fixture(scope="session")
def golden() -> dict:
    """The values the article's own code printed (../shared/reference/seed_golden.json)."""
    if not GOLDEN_PATH.is_file():  # a missing oracle is a failure, never a skip
        pytest.fail(f"Golden file not found at {GOLDEN_PATH}; set GRADFIT_SHARED to the shared/ folder.")
    return json.loads(GOLDEN_PATH.read_text())


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def make_file(folder, name: str, data):
    """Write ``data`` (text or bytes) to folder/name and return the path."""
    path = folder / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path
