"""The playground under a heavy client: does a healthy client still get answers, and does memory come back?

Starts `gradfit serve` on a free loopback port (from this checkout, or with --src from another one, to compare
a version before a change in the same run), then for --seconds:

- a heavy client creates sessions of "gaussian + linear + sine + damped_sine + lorentzian" (whose best fit took
  30-90 s of CPU per create before the optimum got a time budget), steps each 50 steps and deletes it, in four
  threads at once;
- a healthy client creates the seed article's session and steps it one step per request, as the page's Step
  button does, timing every request.

Reports the requests and errors of both, the healthy client's p50/p95 latency, and the server's RSS at start,
after the load and after every session was deleted. Every request has a timeout, so a frozen or crashed server
shows as errors, never as a hung benchmark. Only 127.0.0.1 is ever contacted.

    .venv/bin/python bench/bench_playground_attack.py [--seconds 60] [--src OTHER/src] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path

import numpy as np

from _report import machine, write_section

HEAVY = "gaussian + linear + sine + damped_sine + lorentzian"
TIMEOUT_S = 30.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, body: dict | None = None, method: str | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url,
        data=data,
        method=method or ("POST" if data is not None else "GET"),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as e:
        return e.code, {}
    except (OSError, ValueError):  # refused, reset, timed out: the server is frozen or gone
        return 0, {}


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def run(seconds: float, src: str | None) -> dict:
    port = free_port()
    env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
    server = subprocess.Popen(
        [sys.executable, "-m", "gradfit", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while request(base + "/api/options")[0] != 200:
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("gradfit serve did not start")
        time.sleep(0.2)
    out = {"rss_start": rss_mb(server.pid), "heavy": [0, 0], "healthy": [0, 0], "latency": []}
    sessions: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def heavy() -> None:
        seed = 0
        while time.monotonic() < stop:
            seed += 1
            status, body = request(base + "/api/sessions", {"setup": {"model": HEAVY, "method": "lm", "seed": seed}})
            with lock:
                out["heavy"][0] += 1
                out["heavy"][1] += status == 0 or status >= 500
            if status == 201:
                status, _ = request(f"{base}/api/sessions/{body['id']}/step", {"steps": 50})
                with lock:
                    out["heavy"][0] += 1
                    out["heavy"][1] += status == 0 or status >= 500
                request(f"{base}/api/sessions/{body['id']}", method="DELETE")  # and again, as fast as it can

    def healthy() -> None:
        status, body = request(base + "/api/sessions", {})
        with lock:
            out["healthy"][0] += 1
            out["healthy"][1] += status != 201
        if status != 201:
            return
        sessions.append(body["id"])
        while time.monotonic() < stop:
            t0 = time.monotonic()
            status, _ = request(f"{base}/api/sessions/{body['id']}/step", {"steps": 1})
            with lock:
                out["latency"].append(time.monotonic() - t0)
                out["healthy"][0] += 1
                out["healthy"][1] += status != 200
            time.sleep(0.05)

    threads = [threading.Thread(target=heavy) for _ in range(4)] + [threading.Thread(target=healthy)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 4 * TIMEOUT_S)
    out["rss_loaded"] = rss_mb(server.pid)
    for sid in sessions:
        request(f"{base}/api/sessions/{sid}", method="DELETE")
    time.sleep(1)
    out["rss_after"] = rss_mb(server.pid)
    out["alive"] = server.poll() is None
    server.kill()
    server.wait()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--src", help="another checkout's src/ folder to serve from (a version before a change)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    runs = {"this checkout": run(args.seconds, None)}
    if args.src:
        runs[f"--src {args.src}"] = run(args.seconds, str(Path(args.src).resolve()))
    lines = [
        f"### The playground under a heavy client ({date.today()})",
        "",
        f"Command: `.venv/bin/python bench/bench_playground_attack.py --seconds {args.seconds:g}"
        f"{' --src ' + args.src if args.src else ''}`. Machine: {machine()}. Four threads create sessions of "
        f"`{HEAVY}`, step each 50 steps and delete it, while one healthy client steps the seed article's session one "
        f"step per request; every request times out after {TIMEOUT_S:g} s (a frozen server shows as errors).",
        "",
        "| server | heavy requests (not answered or 5xx) | healthy requests (errors) | healthy p50 / p95 (s) | RSS start / "
        "loaded / sessions deleted (MB) | alive at the end |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, r in runs.items():
        lat = np.array(r["latency"]) if r["latency"] else np.array([np.nan])
        lines.append(
            f"| {name} | {r['heavy'][0]} ({r['heavy'][1]}) | {r['healthy'][0]} ({r['healthy'][1]}) | "
            f"{np.percentile(lat, 50):.3f} / {np.percentile(lat, 95):.3f} | {r['rss_start']:.0f} / "
            f"{r['rss_loaded']:.0f} / {r['rss_after']:.0f} | {'yes' if r['alive'] else 'no'} |"
        )
    print("\n".join(lines))
    if not args.no_write:
        write_section("bench_playground_attack", lines)


if __name__ == "__main__":
    main()
