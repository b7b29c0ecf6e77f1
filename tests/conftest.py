"""Shared fixtures: the seed article's golden values and seeded data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # tests never open windows

# The numbers the seed article's own code printed, copied into the project (its "source" says from where):
# a user's clone has nothing beside it.
GOLDEN_PATH = Path(__file__).resolve().parent / "data" / "seed_golden.json"

# Tolerances, named once. Float32 runs must match the article to this relative difference.
GOLDEN_RTOL = 1e-9


@pytest.fixture(scope="session")
def golden() -> dict:
    """The values the article's own code printed (tests/data/seed_golden.json)."""
    return json.loads(GOLDEN_PATH.read_text())


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def run_cli(capsys, *argv):
    """`gradfit ARGV...` in-process: (exit status, stdout, stderr)."""
    from gradfit.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def seed_csv(tmp_path):
    """The seed article's 15 points as a CSV file with a header x,y."""
    import gradfit

    x, y = gradfit.seed_data()
    path = tmp_path / "seed.csv"
    path.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), y.tolist())))
    return path


def make_file(folder, name: str, data):
    """Write ``data`` (text or bytes) to folder/name and return the path."""
    path = folder / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by `make test` (Playwright's own download needs the network)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Playwright."""
    if not os.path.exists(CHROMIUM):
        # In CI the browser must be there (make test installs it): a missing one is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; `make test` installs Debian's chromium.")
        pytest.skip(f"{CHROMIUM} is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()
