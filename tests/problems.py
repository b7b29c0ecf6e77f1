"""Test problems with known true parameters, seeded noise and a reasonable start."""

import numpy as np
import torch


def _noisy(f, x, true, noise, seed):
    rng = np.random.default_rng(seed)
    clean = f(torch.tensor(x), *torch.tensor(true)).numpy()
    return clean + noise * rng.normal(size=len(x))


def exp_decay(x, a, b, c):
    return a * torch.exp(-b * x) + c


def gaussian(x, amplitude, center, width):
    return amplitude * torch.exp(-((x - center) ** 2) / (2 * width**2))


def sine(x, amplitude, omega, phase):
    return amplitude * torch.sin(omega * x + phase)


def _problem(name, f, x, true, p0, noise, seed):
    return {"name": name, "f": f, "x": x, "y": _noisy(f, x, true, noise, seed), "true": true, "p0": p0}


def seed_problem():
    import gradfit

    x, y = gradfit.seed_data()
    return {
        "name": "seed quadratic",
        "f": "quadratic",
        "x": x.double().numpy(),
        "y": y.double().numpy(),
        "true": None,
        "p0": None,
    }


PROBLEMS = [
    seed_problem(),
    _problem("exponential decay", exp_decay, np.linspace(0, 5, 40), [5.0, 1.3, 0.5], [4.0, 1.0, 0.0], 0.05, 1),
    _problem("gaussian peak", gaussian, np.linspace(-5, 5, 60), [3.0, 0.5, 1.2], [2.5, 0.3, 1.0], 0.05, 2),
    _problem("sine", sine, np.linspace(0, 10, 80), [2.0, 1.5, 0.3], [1.8, 1.45, 0.2], 0.1, 3),
]
