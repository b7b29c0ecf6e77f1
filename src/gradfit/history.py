"""The record of a run: one row per optimisation step.

A row describes one step as the seed article prints it: ``loss`` and ``rmse`` are
measured at the parameters the step *started from* (the article prints the RMSE
before updating), ``grad_norm`` is the length of the gradient there, and
``params`` are the parameters the step *ended with*. ``params_before(i)`` gives
the starting parameters of row ``i``, so every step can be redrawn or replayed.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Iterator, Sequence


@dataclass(frozen=True)
class StepRecord:
    """One optimisation step, as the seed article prints it.

    Attributes:
        step: the step's number, from 1.
        loss: the loss at the parameters the step started from (the article prints it before updating).
        rmse: the square root of that mean squared loss.
        grad_norm: the length of the gradient there.
        learning_rate: the rate the step was taken at (Levenberg–Marquardt: its damping λ).
        params: the parameters the step ended with.
        epoch: for mini-batch methods, the pass over the data this step belongs to.
    """

    step: int
    loss: float
    rmse: float
    grad_norm: float
    learning_rate: float
    params: tuple[float, ...]
    epoch: int | None = None  # mini-batch methods: the pass over the data this step belongs to


class History:
    """All the steps of a run, in order, with the parameters it started from. Iterate over it for its StepRecords.

    Args:
        param_names: the parameters' names.
        init_params: the parameters the run started from.
    """

    def __init__(self, param_names: Sequence[str], init_params: Sequence[float]):
        self.param_names = tuple(param_names)
        self.init_params = tuple(float(v) for v in init_params)
        self.records: list[StepRecord] = []

    def append(self, record: StepRecord) -> None:
        """Add the next step.

        Args:
            record: the step.
        """
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[StepRecord]:
        return iter(self.records)

    def __getitem__(self, i: int) -> StepRecord:
        return self.records[i]

    @property
    def last_step(self) -> int:
        return self.records[-1].step if self.records else 0

    @property
    def final_params(self) -> tuple[float, ...]:
        return self.records[-1].params if self.records else self.init_params

    @property
    def rmse(self) -> list[float]:
        return [r.rmse for r in self.records]

    @property
    def loss(self) -> list[float]:
        return [r.loss for r in self.records]

    def params_before(self, i: int) -> tuple[float, ...]:
        """The parameters row ``i`` started from (its loss was measured there).

        Args:
            i: the row, from 0.

        Returns:
            tuple: the parameters.
        """
        return self.records[i - 1].params if i > 0 else self.init_params

    @property
    def has_epochs(self) -> bool:
        return bool(self.records) and self.records[0].epoch is not None

    def columns(self) -> list[str]:
        """The CSV's header: (epoch,) step, loss, rmse, grad_norm, learning_rate and each parameter.

        Returns:
            list: the column names.
        """
        epoch = ["epoch"] if self.has_epochs else []
        return [*epoch, "step", "loss", "rmse", "grad_norm", "learning_rate", *self.param_names]

    def rows(self) -> Iterator[list]:
        """The CSV's rows, one per step, in the order of ``columns()``.

        Returns:
            Iterator: the rows.
        """
        epochs = self.has_epochs
        for r in self.records:
            yield [*([r.epoch] if epochs else []), r.step, r.loss, r.rmse, r.grad_norm, r.learning_rate, *r.params]

    def to_csv(self, file=None) -> str | None:
        """Write the history as CSV (parameters are those after each step).

        Floats are written with ``repr`` so that reading them back gives the same numbers.

        Args:
            file: an open text file to write to (default: return the text).

        Returns:
            str | None: the CSV text when no ``file`` is given.
        """
        out = io.StringIO() if file is None else file
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns())
        writer.writerows(self.rows())
        return out.getvalue() if file is None else None

    def __repr__(self) -> str:
        last = f", rmse {self.records[-1].rmse:.6g} at step {self.last_step}" if self.records else ""
        return f"<History {len(self)} steps of {', '.join(self.param_names)}{last}>"
