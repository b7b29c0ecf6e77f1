"""The playground's state: one Session per browser tab, each stepping gradfit's own fitting loop (what the page
draws of it: views.py).

Nothing here knows about HTTP. ``app.py`` turns requests into calls on a SessionStore
and a PlaygroundError (which carries its HTTP status) into a JSON error. The fit is
``engine.fit_steps``: the same loop, the same records and the same stopping rules as
``gradfit fit``, taken a few steps per request.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from dataclasses import replace

import numpy as np
import torch

from ..data import seed_data, seed_generator
from ..engine import fit_steps
from ..errors import FitError, GradfitError
from ..history import History, StepRecord
from ..library import get_model
from .setup import METHODS, Limits, PlaygroundError, Setup, make_data
from ..solvers import least_squares
from ..solvers.gradient import Frame


class Session:
    """One tab's run: its data, its model, and the fitting loop paused between requests."""

    def __init__(self, setup: Setup, x: np.ndarray, y: np.ndarray, limits: Limits):
        self.id = secrets.token_urlsafe(16)
        self.lock = threading.Lock()  # one request at a time per session
        self.touched = time.monotonic()
        self.limits = limits
        self.x, self.y = np.array(x, dtype=np.float64), np.array(y, dtype=np.float64)  # own, writable copies
        self.model = get_model(setup.model)
        if self.model.variables is not None and len(self.model.variables) != 1:
            raise PlaygroundError(400, "The playground fits curves y = f(x): the model must use the one variable x.")
        self.optimum = _optimum(self.model, self.x, self.y, limits.optimum_budget_s)
        self.start(setup)

    def start(self, setup: Setup) -> None:
        """(Re)start the run from the random start that ``setup.seed`` draws, with ``setup``'s method and rate."""
        generator = seed_generator(setup.seed)
        if setup.data == "generated":
            seed_data(noise=setup.noise, generator=generator)  # the data come first in the stream, as in the article
        p0 = torch.randn(self.model.n_params, generator=generator).double()
        rate = None if setup.method == "lm" else setup.learning_rate
        self.problem, self.steps = fit_steps(
            self.model,
            self.x,
            self.y,
            p0=p0,
            method=setup.method,
            learning_rate=rate,
            scale=setup.scale,
            max_steps=self.limits.max_steps_per_session,
        )
        self.setup = setup
        # plain gd's step is -rate * (T Tᵀ / unit) @ gradient in the frame it walks (T = I on raw parameters)
        frame = Frame.standardized(self.problem, p0) if setup.scale else None
        self.descent = None if frame is None else frame.transform @ frame.transform.T / frame.loss_unit
        self.history = History(self.model.param_names, p0.tolist())
        self.status, self.message = "ready", ""
        self.start_loss = float(self.problem.user_loss(p0))

    def step(self, count: int, learning_rate: float | None = None) -> list[StepRecord]:
        """Take up to ``count`` steps (fewer when the run stops); a new ``learning_rate`` applies from now on."""
        if learning_rate is not None and learning_rate != self.setup.learning_rate and self.setup.method != "lm":
            if self.history.last_step == 0:
                self.start(replace(self.setup, learning_rate=learning_rate))
                learning_rate = None
            else:
                self.setup = replace(self.setup, learning_rate=learning_rate)
        new = []
        while len(new) < count and self.status in ("ready", "running"):
            try:
                if learning_rate is not None and self.history.last_step > 0:
                    record = self.steps.send(learning_rate)
                    learning_rate = None
                else:
                    record = next(self.steps)
            except StopIteration as done:
                outcome = done.value
                self.status = "converged" if outcome.converged else "stopped"
                self.message = (
                    f"{'Converged' if outcome.converged else 'Stopped'} after {self.history.last_step} "
                    f"steps: {outcome.reason}."
                )
                break
            except FitError as e:  # diverged: the page keeps the last finite step
                self.status, self.message = "diverged", str(e)
                break
            except (GradfitError, ArithmeticError, RuntimeError, ValueError) as e:  # a model that fails mid-run
                self.status = "failed"
                self.message = f"The fit stopped at step {self.history.last_step + 1}: {type(e).__name__}: {e}"
                break
            self.status = "running"
            self.history.append(record)
            new.append(record)
        _thin(self.history)
        if self.status == "running" and self.history.last_step >= self.limits.max_steps_per_session:
            self.status = "stopped"
            self.message = (
                f"The playground stops a run at {self.limits.max_steps_per_session:,} steps. Reset to "
                "start again, or try a larger learning rate or another method."
            )
        return new

    @property
    def params(self) -> tuple[float, ...]:
        return self.history.final_params

    def check_pair(self, pair):
        """``pair`` if it names two different parameters of the model (None stays None)."""
        names = list(self.model.param_names)
        if pair is not None and (len(pair) != 2 or pair[0] == pair[1] or any(p not in names for p in pair)):
            raise PlaygroundError(400, f"`pair` must name two different parameters of: {', '.join(names)}.")
        return pair


HISTORY_CAP = 4000  # records a session keeps: the last HISTORY_RECENT all, the older ones ever more sparsely
HISTORY_RECENT = 1000


def _thin(history: History) -> None:
    """Bound a long run's memory (a 50,000-step session held 8-16 MB): past HISTORY_CAP records, every other
    one of the older ones goes (the first step kept). The page draws at most 2,000 points of a run anyway."""
    while len(history.records) > HISTORY_CAP:
        older, recent = history.records[:-HISTORY_RECENT], history.records[-HISTORY_RECENT:]
        history.records = older[::2] + recent


class _OutOfTime(Exception):
    """The optimum's search ran past its budget."""


def _optimum(model, x, y, budget_s: float = math.inf) -> dict | None:
    """The best fit of the model to the data (exact for a linear model, gradfit's auto otherwise), or None:
    none found, or none found within ``budget_s`` seconds (a sum of five peaks took 30-90 s; the request
    answers without it rather than block)."""
    deadline = time.monotonic() + budget_s

    def in_time(record) -> None:
        if time.monotonic() > deadline:
            raise _OutOfTime

    try:
        if model.is_linear:
            params, rmse = least_squares(model, x, y)
            return _finite_optimum(params.tolist(), rmse)
        import warnings

        from ..engine import fit

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fit(model, x, y, method="auto", callback=in_time)
        if not result.converged:
            return None
        return _finite_optimum(list(result.params.values()), result.rmse)
    except (GradfitError, ArithmeticError, RuntimeError, ValueError, _OutOfTime):
        return None  # no optimum to show: the page draws the run alone


def _finite_optimum(params, rmse) -> dict | None:
    values = [*params, rmse]
    return {"params": list(params), "rmse": rmse} if all(math.isfinite(v) for v in values) else None


class SessionStore:
    """The live sessions, at most ``limits.max_sessions``; a session idle past its time is forgotten."""

    def __init__(self, limits: Limits | None = None, clock=time.monotonic):
        self.limits = limits or Limits()
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._owners: dict[str, str] = {}  # session id -> the client (address) that made it
        self._reserved: dict[str, int] = {}  # client -> slots held by creates still running
        self._lock = threading.Lock()

    def create(self, setup: Setup, x, y, client: str = "") -> Session:
        """A new session; its slot is reserved under the lock first, so that creates running at once never pass
        the cap, and given back if the session cannot be made."""
        with self._lock:
            self._expire()
            mine = sum(1 for owner in self._owners.values() if owner == client) + self._reserved.get(client, 0)
            if mine >= self.limits.max_sessions_per_client:
                raise PlaygroundError(
                    429,
                    f"This client already holds {self.limits.max_sessions_per_client} "
                    "sessions. Close a tab, or wait for one to expire.",
                )
            if len(self._sessions) + sum(self._reserved.values()) >= self.limits.max_sessions:
                self._evict_one()
            self._reserved[client] = self._reserved.get(client, 0) + 1
        try:
            session = Session(setup, x, y, self.limits)  # fitting work outside the store's lock
            session.touched = self._clock()
        finally:
            with self._lock:
                self._reserved[client] -= 1
                if not self._reserved[client]:
                    del self._reserved[client]
        with self._lock:
            self._sessions[session.id] = session
            self._owners[session.id] = client
        return session

    def _evict_one(self) -> None:
        """Room for one more: the least recently used session, if it has been idle evict_idle_s; else refuse."""
        idle = [
            s
            for s in self._sessions.values()
            if self._clock() - s.touched >= self.limits.evict_idle_s and not s.lock.locked()
        ]
        if not idle:
            raise PlaygroundError(
                503,
                f"The playground already holds {self.limits.max_sessions} sessions, all in "
                "use. Close a tab or try again in a minute.",
            )
        oldest = min(idle, key=lambda s: s.touched)
        self._forget(oldest.id)

    def _forget(self, session_id: str) -> Session | None:
        self._owners.pop(session_id, None)
        return self._sessions.pop(session_id, None)

    def get(self, session_id: str) -> Session:
        with self._lock:
            self._expire()
            session = self._sessions.get(session_id)
            if session is None:
                raise PlaygroundError(
                    404,
                    "No such session (it may have expired after "
                    f"{self.limits.session_ttl_s / 60:g} idle minutes). Reload the page.",
                )
            session.touched = self._clock()
            return session

    def delete(self, session_id: str) -> None:
        with self._lock:
            if self._forget(session_id) is None:
                raise PlaygroundError(404, "No such session.")

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._sessions)

    def _expire(self) -> None:
        now = self._clock()
        gone = [k for k, s in self._sessions.items() if now - s.touched > self.limits.session_ttl_s]
        for key in gone:
            self._forget(key)


__all__ = ["Limits", "METHODS", "PlaygroundError", "Session", "SessionStore", "Setup", "make_data"]
