"""bench/bench_gpu.py is the prepared device call for issue 6's GPU runs: a dry run on the CPU keeps it working."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_runs_dry_on_the_cpu(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_gpu.py"),
            "--device",
            "cpu",
            "--sizes",
            "800",
            "--check",
            "100",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert [r["dtype"] for r in report["runs"]] == ["float64", "float32"]
    assert all(r["fits"] == 800 and r["fits_per_second"] > 0 for r in report["runs"])
    # one program on any device: the check compares the device with the CPU (here both are the CPU)
    assert report["check"]["same_status"] and report["check"]["largest_relative_difference"] == 0.0
    assert "| 800 | float64 |" in (tmp_path / "bench_gpu.md").read_text()
