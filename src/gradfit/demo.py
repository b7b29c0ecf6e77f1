"""The seed article, reproduced: gradient descent on a quadratic, watched step by step."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .options import positive_finite, positive_int
from ._files import check_out_dir, staged
from .data import SEED, seed_data, seed_generator
from .errors import FitError
from .history import History, StepRecord

if TYPE_CHECKING:
    import torch

# torch, the model and the solvers are imported when the demo runs: ``import gradfit`` binds
# ``gradfit.demo`` to this module's ``demo`` at once, and must not wait for torch to do so.

LEARNING_RATE = 1e-4  # the article's lr
ROUNDS = 2  # the article runs its 10-step loop twice
STEPS_PER_ROUND = 10
YLIM = (-75, 120)  # the article's show_plot y-limits
OUT_DIR = "gradfit-demo"


def demo(
    out_dir: str | os.PathLike | None = OUT_DIR,
    *,
    rounds: int = ROUNDS,
    steps_per_round: int = STEPS_PER_ROUND,
    learning_rate: float = LEARNING_RATE,
    seed: int = SEED,
    on_start: Callable[[torch.Tensor], None] | None = None,
    callback: Callable[[StepRecord], None] | None = None,
) -> History:
    """Run the seed article's gradient descent and draw it: what ``gradfit demo`` does.

    Float32, as in the article, so the printed values match it exactly. Writes ``data.png``, ``run1.png`` ...
    ``run<rounds>.png`` and ``history.csv`` to ``out_dir``, all or nothing: the files are drawn in a scratch folder and
    moved into place only when every one is done.

    Args:
        out_dir: the folder for the figures and the history (None writes nothing).
        rounds: rounds of steps, a row of panels each (the article's 2).
        steps_per_round: steps per round (the article's 10).
        learning_rate: the article's 1e-4.
        seed: draws the data and then the start (the article's 1989).
        on_start: called with the initial parameters.
        callback: called with each step's ``StepRecord``.

    Returns:
        History: every step's loss, RMSE, gradient norm and parameters.
    """
    import torch

    from .models import quadratic
    from .solvers import gradient_descent

    rounds = positive_int(rounds, "rounds")
    steps_per_round = positive_int(steps_per_round, "steps_per_round")
    learning_rate = positive_finite(learning_rate, "learning_rate")
    generator = seed_generator(seed)
    out = None if out_dir is None else check_out_dir(out_dir, "out_dir")

    model = quadratic()
    with staged(out) as scratch:  # claim the output place before any work
        x, y = seed_data(generator=generator)
        params = torch.randn(3, generator=generator).requires_grad_()  # the article's random start
        if on_start is not None:
            on_start(params)
        history, diverged = None, None
        for _ in range(rounds):
            try:
                params, history = gradient_descent(
                    model,
                    x,
                    y,
                    params,
                    learning_rate=learning_rate,
                    steps=steps_per_round,
                    history=history,
                    callback=callback,
                )
            except FitError as e:  # the most instructive picture of all: drawn up to its last finite step
                diverged, history = e, e.history
                break
        if scratch is not None:
            _draw(scratch, model, x, y, history, rounds, steps_per_round, diverged=diverged is not None)
    if diverged is not None:
        drawn = "" if out is None else f" The steps before it are drawn in {out}/."
        raise FitError(f"{diverged}{drawn}", history=history)
    return history


@dataclass(frozen=True)
class Summary:
    """Where the demo ended, next to the best quadratic for the same data, and why."""

    param_names: tuple[str, ...]
    steps: int
    learning_rate: float
    first_rmse: float
    final_params: tuple[float, ...]
    final_rmse: float
    optimum_params: tuple[float, ...]
    optimum_rmse: float
    max_stable_learning_rate: float  # 2 / the largest curvature of the loss
    curvature_ratio: float  # largest / smallest curvature
    smallest_curvature: float

    @property
    def diverging(self) -> bool:
        return self.final_rmse > self.first_rmse

    def lines(self) -> list[str]:
        def fmt(values):
            return "  ".join(f"{n}={v:.6g}" for n, v in zip(self.param_names, values))

        lines = [
            f"After {self.steps} steps:       {fmt(self.final_params)}  RMSE {self.final_rmse:.4f}",
            f"Least-squares optimum: {fmt(self.optimum_params)}  RMSE {self.optimum_rmse:.4f}",
        ]
        if self.diverging:
            return lines + [
                f"The RMSE grew from {self.first_rmse:.4g}: learning rate {self.learning_rate:g} is above "
                f"{self.max_stable_learning_rate:.3g},",
                "the largest at which gradient descent is stable on this data (2 / the loss's largest "
                "curvature). Try a smaller one.",
            ]
        ratio = self.final_rmse / self.optimum_rmse
        return lines + [
            f"The fit's RMSE is still {ratio:.1f}x the optimum's. Gradient descent is stable here for learning "
            f"rates below {self.max_stable_learning_rate:.3g},",
            f"but the loss is {self.curvature_ratio:,.0f}x flatter in one direction than in another "
            "(x**2 and x live on very different scales),",
            "so along the flattest direction each step shrinks the remaining error by only "
            f"{100 * self.learning_rate * self.smallest_curvature:.4f}%.",
        ]


def summarize(history: History, seed: int = SEED) -> Summary:
    """Compare the run's final parameters with the exact least-squares optimum."""
    import torch

    from .models import quadratic
    from .solvers import least_squares, mse_curvatures

    model = quadratic()
    x, y = seed_data(seed)
    final = torch.tensor(history.final_params, dtype=torch.float64)
    final_rmse = float(((model(x.double(), final) - y.double()) ** 2).mean().sqrt())
    optimum, optimum_rmse = least_squares(model, x, y)
    curvatures = mse_curvatures(model, x)
    return Summary(
        param_names=model.param_names,
        steps=history.last_step,
        learning_rate=history[-1].learning_rate,
        first_rmse=history[0].rmse,
        final_params=history.final_params,
        final_rmse=final_rmse,
        optimum_params=tuple(optimum.tolist()),
        optimum_rmse=optimum_rmse,
        max_stable_learning_rate=float(2 / curvatures[-1]),
        curvature_ratio=float(curvatures[-1] / curvatures[0]),
        smallest_curvature=float(curvatures[0]),
    )


def compare_learning_rates(rates, *, steps: int = ROUNDS * STEPS_PER_ROUND, seed: int = SEED):
    """The article's descent at each learning rate, from the same start: [(rate, Trace, diverged_at)].

    A rate that makes the loss overflow is kept, up to its last finite step, with the step where
    it blew up; it is never an error here.
    """
    import torch

    from .errors import FitError
    from .models import quadratic
    from .plots import Trace
    from .solvers import gradient_descent

    steps = positive_int(steps, "steps")
    model = quadratic()
    runs = []
    for rate in rates:
        rate = positive_finite(rate, "learning rate")
        generator = seed_generator(seed)
        x, y = seed_data(generator=generator)
        start = torch.randn(3, generator=generator)
        try:
            _, history = gradient_descent(model, x, y, start, learning_rate=rate, steps=steps)
            diverged_at = None
        except FitError as e:
            history, diverged_at = e.history, e.history.last_step + 1
        runs.append((rate, Trace(model, x, y, history), diverged_at))
    return runs


def output_files(rounds: int = ROUNDS) -> list[str]:
    """The names the demo writes, in order."""
    return ["data.png", *(f"run{r}.png" for r in range(1, rounds + 1)), "history.csv"]


def _draw(
    folder: Path, model, x, y, history: History | None, rounds: int, steps_per_round: int, diverged: bool = False
) -> None:
    """data.png, a row of panels per round and history.csv; a run that diverged is drawn up to its last finite
    step (its last round's figure says so)."""
    from .plots import Trace, plot_data, plot_steps, spread  # matplotlib only when drawing

    plot_data(x, y, title="The seed article's data").savefig(folder / "data.png")
    if history is None or not len(history):
        return
    run = Trace(model, x, y, history)
    first_fig = None
    for r in range(rounds):
        first = r * steps_per_round + 1
        if first > history.last_step:
            break
        last = min(first + steps_per_round - 1, history.last_step)
        steps = spread(first, last)
        fig = plot_steps(run, steps, ylim=YLIM, like=first_fig if last == first + steps_per_round - 1 else None)
        if diverged and last == history.last_step:
            fig.suptitle(f"Diverged at step {last + 1}: drawn up to step {last}, its last finite one", color="0.2")
            fig.tight_layout()
        fig.savefig(folder / f"run{r + 1}.png")
        first_fig = first_fig or fig  # every round's figure has the same shape: one layout serves all
    with open(folder / "history.csv", "w", newline="") as f:
        history.to_csv(f)
