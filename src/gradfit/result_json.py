"""A FitResult's saved file: strict JSON with non-finite numbers as strings, arrays as nested lists, the history as
rows (``FitResult.save`` writes it, ``gradfit.load_result`` reads it)."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np

from .history import History, StepRecord

SAVE_FORMAT = 1  # the layout ``FitResult.save`` writes; a newer one is refused by name


def to_json(value):
    """JSON-ready: arrays and tuples as lists, inf and NaN as the strings 'inf', '-inf', 'nan' (strict JSON)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return to_json(value.item())
    return value


def number_from_json(value):
    """A number read back: 'inf', '-inf', 'nan' as floats."""
    return float(value) if isinstance(value, str) else value


def numbers_from_json(value):
    return [numbers_from_json(v) for v in value] if isinstance(value, list) else number_from_json(value)


def history_to_json(history: History) -> dict:
    return {
        "param_names": list(history.param_names),
        "init_params": to_json(history.init_params),
        "columns": ["epoch", "step", "loss", "rmse", "grad_norm", "learning_rate", "params"],
        "rows": [
            to_json([r.epoch, r.step, r.loss, r.rmse, r.grad_norm, r.learning_rate, list(r.params)]) for r in history
        ],
    }


def history_from_json(saved: dict) -> History:
    history = History(saved["param_names"], numbers_from_json(saved["init_params"]))
    for epoch, step, loss, rmse, grad_norm, rate, params in saved["rows"]:
        history.append(
            StepRecord(
                step, *map(number_from_json, (loss, rmse, grad_norm, rate)), tuple(numbers_from_json(params)), epoch
            )
        )
    return history


def save(result, path, data: bool = True) -> None:
    """FitResult.save: the result as a JSON file, written whole or not at all."""
    import json

    from ._files import write_atomic
    from .library import model_spec

    out = {
        "gradfit_result": SAVE_FORMAT,
        "model": model_spec(result.model),
        "param_names": list(result.params),
        "history": history_to_json(result.history),
    }
    for f in fields(result):
        if f.name in ("model", "history", "x", "y", "sigma"):
            continue
        out[f.name] = to_json(getattr(result, f.name))
    out["dtype"] = str(result.dtype).removeprefix("torch.")
    if data:
        out["data"] = {k: to_json(getattr(result, k)) for k in ("x", "y", "sigma")}
    write_atomic(path, json.dumps(out, allow_nan=False))
