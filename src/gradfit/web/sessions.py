"""The playground's state: one Session per browser tab, each stepping gradfit's own fitting loop.

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
from dataclasses import asdict, replace
from types import SimpleNamespace

import numpy as np
import torch

from ..data import seed_data, seed_generator
from ..engine import fit_steps
from ..errors import FitError, GradfitError
from ..history import History, StepRecord
from ..library import get_model
from .setup import METHODS, Limits, PlaygroundError, Setup, make_data
from ..solvers import least_squares, mse_curvatures
from ..solvers.gradient import Frame

CURVE_POINTS = 200  # points of the drawn fit curve
GRID = 48  # the landscape's grid is GRID x GRID
LANDSCAPE_REACH = 1e3  # the landscape frames path points whose loss is at most this times the start's


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

    def curve_x(self) -> np.ndarray:
        """Where the fit curve is drawn: across the data's x range."""
        return np.linspace(self.x.min(), self.x.max(), CURVE_POINTS)

    def curve(self) -> list:
        """The fit curve's y at ``curve_x``, at the current parameters (None where it overflowed)."""
        grid = self.curve_x()
        with torch.no_grad():
            y = self.model(torch.as_tensor(grid), torch.tensor(self.params, dtype=torch.float64)).numpy()
        return _floats(np.broadcast_to(y, grid.shape))

    def landscape(self, pair=None) -> dict | None:
        """log10 of the loss over two parameters (the others where the run is now), or None for one parameter.

        The grid frames the start, the optimum and every point of the path whose loss stayed
        within LANDSCAPE_REACH of the start's, so a run that blows up does not shrink the picture.
        """
        names = list(self.model.param_names)
        if len(names) < 2:
            return None
        pair = self.check_pair(pair) or names[:2]
        from ..plots import landscape_grid  # matplotlib's import is not needed before the first landscape

        # the loss at each point of the path: a record holds it at the parameters its step started from
        with torch.no_grad():
            now = float(self.problem.user_loss(torch.tensor(self.params, dtype=torch.float64)))
        losses = np.array([r.loss for r in self.history] + [now])
        cover = np.isfinite(losses) & (losses <= LANDSCAPE_REACH * max(self.start_loss, 1e-300))
        cover[0] = True
        view = SimpleNamespace(history=self.history, model=self.model, x=self.x, y=self.y, sigma=None, fixed={})
        include = None if self.optimum is None else [self.optimum["params"]]
        # the other parameters where the path last was inside that frame: a diverged run's last values are absurd
        held = ([self.history.init_params] + [r.params for r in self.history])[int(np.flatnonzero(cover)[-1])]
        aa, bb, loss, _, _ = landscape_grid(view, tuple(pair), GRID, include=include, cover=cover, held=held)
        with np.errstate(divide="ignore", invalid="ignore"):
            shown = np.where(np.isfinite(loss) & (loss > 0), np.log10(loss), np.nan)
        return {"pair": pair, "a": _floats(aa[0]), "b": _floats(bb[:, 0]), "log10_loss": [_floats(r) for r in shown]}

    def check_pair(self, pair):
        """``pair`` if it names two different parameters of the model (None stays None)."""
        names = list(self.model.param_names)
        if pair is not None and (len(pair) != 2 or pair[0] == pair[1] or any(p not in names for p in pair)):
            raise PlaygroundError(400, f"`pair` must name two different parameters of: {', '.join(names)}.")
        return pair

    def stability(self) -> str:
        """What the learning rate must stay below for plain gradient descent here, when one number says it."""
        if self.setup.method != "gd" or not self.model.is_linear:
            return ""
        if self.setup.scale:
            return (
                "Standardized, the loss curves alike in every direction: rate 1 lands on the best fit in one "
                "step, and gd diverges above 2."
            )
        curvatures = mse_curvatures(self.model, self.x)
        largest, smallest = float(curvatures[-1]), float(curvatures[0])
        if largest <= 0:
            return ""
        text = (
            f"Plain gd on these raw parameters is stable only below {2 / largest:.3g} (2 / the loss's "
            "largest curvature); above it every step overshoots more."
        )
        if smallest > 0 and largest / smallest > 100:
            text += (
                f" The valley is {largest / smallest:,.0f} times steeper across than along, so even a stable "
                "rate crawls along it: try standardizing, or momentum."
            )
        return text

    def state(self, pair=None, max_records: int = 2000) -> dict:
        """Everything the page draws: data, curve, history (thinned to ``max_records``), status."""
        records = list(self.history)
        if len(records) > max_records:  # spread over the run, always with the last step
            keep = np.unique(np.linspace(0, len(records) - 1, max_records).round().astype(int))
            records = [records[i] for i in keep]
        return {
            "id": self.id,
            "setup": asdict(self.setup),
            "param_names": list(self.model.param_names),
            "model": self.model.name,
            "data": {"x": _floats(self.x), "y": _floats(self.y)},
            "curve_x": _floats(self.curve_x()),
            "start": list(self.history.init_params),
            "start_rmse": _float(math.sqrt(self.start_loss)) if self.start_loss >= 0 else None,
            "optimum": self.optimum,
            "records": [record_json(r) for r in records],
            "stability": self.stability(),
            "landscape": self.landscape(pair),
            **self.progress(),
        }

    def gradient(self) -> tuple[float, list, list | None]:
        """(loss, its gradient, plain gd's step per unit rate) at the current parameters.

        The step is what ``gd`` moves each parameter by, divided by the learning rate and negated: the gradient
        itself on raw parameters, the gradient seen through the standardized frame otherwise; None for the
        other methods, whose step depends on what came before (momentum, Adam's averages, L-BFGS's memory).
        """
        params = torch.tensor(self.params, dtype=torch.float64, requires_grad=True)
        loss = self.problem.user_loss(params)
        try:
            (grad,) = torch.autograd.grad(loss, params)
        except RuntimeError:  # a loss that no longer depends on the parameters (overflowed to a constant)
            grad = torch.full_like(params, math.nan)
        grad = grad.detach()
        direction = None
        if self.setup.method == "gd":
            direction = grad if self.descent is None else self.descent @ grad
        return float(loss.detach()), _floats(grad), None if direction is None else _floats(direction)

    def progress(self) -> dict:
        """What changes with every step: where the run is, the curve now, the gradient there and gd's next step."""
        loss, gradient, direction = self.gradient()
        return {
            "status": self.status,
            "message": self.message,
            "step": self.history.last_step,
            "params": list(self.params),
            "rmse": _float(math.sqrt(loss)) if loss >= 0 else None,
            "curve_y": self.curve(),
            "learning_rate": None if self.setup.method == "lm" else self.setup.learning_rate,
            "gradient": gradient,  # d loss / d parameter at "params" (the loss: the mean squared error)
            "gd_direction": direction,  # gd's next step is -learning_rate * this (null for other methods)
        }


HISTORY_CAP = 4000  # records a session keeps: the last HISTORY_RECENT all, the older ones ever more sparsely
HISTORY_RECENT = 1000


def _thin(history: History) -> None:
    """Bound a long run's memory (a 50,000-step session held 8-16 MB): past HISTORY_CAP records, every other
    one of the older ones goes (the first step kept). The page draws at most 2,000 points of a run anyway."""
    while len(history.records) > HISTORY_CAP:
        older, recent = history.records[:-HISTORY_RECENT], history.records[-HISTORY_RECENT:]
        history.records = older[::2] + recent


def record_json(r: StepRecord) -> dict:
    return {
        "step": r.step,
        "loss": _float(r.loss),
        "rmse": _float(r.rmse),
        "grad_norm": _float(r.grad_norm),
        "learning_rate": _float(r.learning_rate),
        "params": [_float(v) for v in r.params],
    }


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


def _float(v: float):
    return float(v) if math.isfinite(v) else None  # JSON has no inf or NaN


def _floats(values) -> list:
    return [_float(v) for v in np.asarray(values, dtype=np.float64).tolist()]


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


__all__ = ["GRID", "Limits", "METHODS", "PlaygroundError", "Session", "SessionStore", "Setup", "make_data"]
