"""Load test of the playground: 50 browser-like sessions, each stepping 200 times, against 127.0.0.1.

Starts `gradfit serve` in its own process on a free loopback port, then 50 concurrent
clients (one asyncio task each, httpx2) each create a session of the seed article and
send 200 step requests of one step, as the page's Step button does. Records every
request's latency, counts errors (any non-2xx, any transport failure, a response
without its one new step), and writes p50/p95/max to docs/BENCHMARKS.md.

Side by side in the same run: the same server's latency for a request that does no
fitting (GET /api/options, the HTTP floor), and one step of the same session taken
in-process without HTTP (the fitting floor), so the table says where the time goes.

    .venv/bin/python bench/bench_playground.py            # 50 sessions x 200 steps
    .venv/bin/python bench/bench_playground.py --quick    # 10 sessions x 50 steps
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import date

import httpx2 as httpx
import numpy as np

from _report import machine, write_section


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradfit", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/options", timeout=1).read()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"gradfit serve did not start: {proc.communicate()[1][-2000:]}")
            time.sleep(0.2)


async def one_session(client: httpx.AsyncClient, steps: int, latencies: list, errors: list) -> None:
    try:
        r = await client.post("/api/sessions", json={})
        if r.status_code != 201:
            errors.append(f"create: {r.status_code} {r.text[:200]}")
            return
        sid = r.json()["id"]
        for k in range(1, steps + 1):
            t0 = time.perf_counter()
            r = await client.post(f"/api/sessions/{sid}/step", json={"steps": 1})
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors.append(f"step: {r.status_code} {r.text[:200]}")
                continue
            body = r.json()
            if len(body["records"]) != 1 or body["step"] != k or body["status"] != "running":
                errors.append(f"step {k}: unexpected {body['status']} at {body['step']}")
        await client.delete(f"/api/sessions/{sid}")
    except httpx.HTTPError as e:
        errors.append(f"transport: {type(e).__name__}: {e}")


async def load(port: int, sessions: int, steps: int):
    latencies, errors = [], []
    limits = httpx.Limits(max_connections=sessions, max_keepalive_connections=sessions)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(one_session(client, steps, latencies, errors) for _ in range(sessions)))
        wall = time.perf_counter() - t0
        floor, alone = [], []
        for _ in range(200):  # the same server, one connection, no fitting: HTTP + JSON + the framework
            t = time.perf_counter()
            await client.get("/api/options")
            floor.append(time.perf_counter() - t)
        sid = (await client.post("/api/sessions", json={})).json()["id"]
        for _ in range(200):  # one user alone: what a click costs
            t = time.perf_counter()
            await client.post(f"/api/sessions/{sid}/step", json={"steps": 1})
            alone.append(time.perf_counter() - t)
    return latencies, errors, wall, floor, alone


def in_process_step(samples: int = 2000) -> list[float]:
    """One step of the article's session with no HTTP: the fitting loop's own cost per step."""
    import torch

    from gradfit.web.sessions import Limits, Session, Setup, make_data
    from gradfit.web.views import progress

    torch.set_num_threads(1)  # as the server runs
    setup = Setup()
    session = Session(setup, *make_data(setup), Limits(max_steps_per_session=10**6))
    out = []
    for _ in range(samples):
        t = time.perf_counter()
        session.step(1)
        progress(session)  # what a step response also computes: the curve and the RMSE now
        out.append(time.perf_counter() - t)
    return out


def ms(values, q) -> float:
    return float(np.percentile(values, q)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="10 sessions x 50 steps")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.steps = 10, 50

    port = free_port()
    server = start_server(port)
    try:
        latencies, errors, wall, floor, alone = asyncio.run(load(port, args.sessions, args.steps))
    finally:
        server.terminate()
        server.wait(timeout=10)
    direct = in_process_step()

    total = args.sessions * args.steps
    print(f"{total} step requests, {len(errors)} errors, {wall:.1f} s, {total / wall:.0f} steps/s")
    for e in errors[:5]:
        print("  ", e)
    p50, p95 = ms(latencies, 50), ms(latencies, 95)
    lines = [
        "## The playground under load (issue 7)",
        "",
        f"Measured {date.today()}. Command: `.venv/bin/python bench/bench_playground.py"
        f"{' --quick' if args.quick else ''}`. Machine: {machine()}; the server (`gradfit serve`, uvicorn, one "
        "process, torch threads 1) and the load generator (httpx2, asyncio) share its cores, on 127.0.0.1.",
        "",
        f"{args.sessions} concurrent sessions of the seed article, each sending {args.steps} step requests of one "
        "step (the page's Step button), all at once.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| step requests | {total:,} |",
        f"| errors (non-2xx, transport, wrong step) | **{len(errors)}** |",
        f"| latency per step request, p50 | {p50:.1f} ms |",
        f"| latency per step request, p95 | {p95:.1f} ms |",
        f"| latency per step request, max | {max(latencies) * 1e3:.1f} ms |",
        f"| throughput | {total / wall:,.0f} steps/s over {wall:.1f} s |",
        "",
        "Where the time goes, same run:",
        "",
        "| one request, alone | median | vs. a step request's p50 under load |",
        "|---|---|---|",
        f"| a step request from one user alone, over HTTP | {ms(alone, 50):.2f} ms | {ms(alone, 50) / p50:.3f}x |",
        f"| GET /api/options on the same server (HTTP floor, no fitting) | {ms(floor, 50):.2f} ms | "
        f"{ms(floor, 50) / p50:.3f}x |",
        f"| one step + curve in-process, no HTTP (the fitting loop) | {ms(direct, 50):.2f} ms | "
        f"{ms(direct, 50) / p50:.3f}x |",
        "",
        f"Under load a step request waits behind the other {args.sessions - 1} sessions' requests (the server "
        "does one at a time per core, and the load generator takes its share of the same cores), so p50 is "
        "about that many requests' worth of work. One user alone waits the first row.",
    ]
    write_section("bench_playground", lines)
    if errors:
        raise SystemExit(f"{len(errors)} errors under load")


if __name__ == "__main__":
    main()
