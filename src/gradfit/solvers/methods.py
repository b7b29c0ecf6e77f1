"""The one registry of methods: it feeds the API, the CLI's choices and help, the errors and the tests.

Plain data, no torch: the command line reads it to build its help in a blink.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import OptionError


@dataclass(frozen=True)
class Tolerances:
    """When a solver may stop (each a relative tolerance; 0 turns a rule off).

    ftol: the loss changed by less than ftol (relative) ...
    xtol: ... or every parameter moved by less than xtol (relative) ...
    gtol: ... or the gradient shrank below gtol times its size at the start
          (for lm: the cosine between the residuals and every Jacobian column).
    """

    ftol: float
    xtol: float
    gtol: float

    def replace(self, tol) -> Tolerances:
        """Apply the user's ``tol``: None keeps these, a number sets all three, a dict sets some."""
        if tol is None:
            return self
        if isinstance(tol, dict):
            return Tolerances(**{**self.__dict__, **tol})
        return Tolerances(tol, tol, tol)


@dataclass(frozen=True)
class Method:
    """One optimisation method: its name, what it is, and its defaults."""

    name: str
    summary: str
    learning_rate: float | None  # default, in standardized coordinates; None: takes no rate
    max_steps: int
    tolerances: Tolerances


_GRADIENT_TOL = Tolerances(ftol=1e-15, xtol=1e-15, gtol=1e-10)

METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            "auto",
            "picks the method: linear for models linear in their parameters, else lm",
            None,
            1000,
            Tolerances(1e-15, 1e-15, 1e-15),
        ),
        Method(
            "gd", "plain gradient descent, the seed article's update (params -= lr * grad)", 0.5, 20000, _GRADIENT_TOL
        ),
        Method(
            "momentum", "gradient descent with heavy-ball momentum 0.9 (torch.optim.SGD)", 0.05, 20000, _GRADIENT_TOL
        ),
        Method(
            "nesterov", "Nesterov's accelerated gradient, momentum 0.9 (torch.optim.SGD)", 0.05, 20000, _GRADIENT_TOL
        ),
        Method("adam", "Adam: per-parameter adaptive steps (torch.optim.Adam)", 0.01, 20000, _GRADIENT_TOL),
        Method(
            "rmsprop",
            "RMSprop: steps scaled by a running gradient size (torch.optim.RMSprop)",
            0.01,
            5000,
            _GRADIENT_TOL,
        ),
        Method(
            "lbfgs",
            "L-BFGS (memory 10) with a backtracking line search, each curve its own",
            1.0,
            2000,
            Tolerances(1e-15, 1e-15, 1e-12),
        ),
        Method("lm", "Levenberg-Marquardt on exact Jacobians, float64", None, 1000, Tolerances(1e-15, 1e-15, 1e-15)),
        Method(
            "linear",
            "one exact least-squares solve (SVD), for models linear in their parameters",
            None,
            1,
            Tolerances(0.0, 0.0, 0.0),
        ),
    ]
}


def get_method(name) -> Method:
    """The registry entry for ``name``, or an error that lists the choices."""
    if isinstance(name, str) and name in METHODS:
        return METHODS[name]
    raise OptionError(f"Unknown optimizer {name!r}. Choose one of: {', '.join(sorted(METHODS))}.")


# what fit_many runs (gradfit.batch), and where its LM runs: "compiled" (machine code, one curve at a time:
# gradfit.solvers.compiled), "torch" (tensor programs over the batch), or "auto" (see gradfit.batch)
BATCH_METHODS = ("auto", "linear", "lm", "gd", "momentum", "nesterov", "adam", "rmsprop", "lbfgs")
BACKENDS = ("auto", "compiled", "torch")
