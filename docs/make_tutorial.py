"""Writes docs/tutorial.ipynb: the cells below, run once in a fresh kernel so that the stored notebook shows its
outputs (``python docs/make_tutorial.py``; tests/test_notebook.py runs it again from a clean slate in CI)."""

import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell as code
from nbformat.v4 import new_markdown_cell as md
from nbformat.v4 import new_notebook

cells = [
    md("""# Gradient descent, by hand and with gradfit

This notebook retells the seed article: PyTorch fits a quadratic, a·x² + b·x + c, to 15 noisy points by gradient
descent, printing the error after each step. The article names seven steps — **initialize** the parameters,
**predict**, compute the **loss**, its **gradient**, **step** the parameters against it, **repeat**, **stop** — and
this notebook takes them one at a time: first by hand, as the article does, then with gradfit, then on to what
a fitting tool adds (learning rates and their limit, standardized parameters, momentum, Levenberg–Marquardt with
standard errors, a real-looking peak, thousands of curves at once, confidence intervals)."""),
    md("""## 1. The article's loop, by hand

The article's data and its random start come from one generator seeded with 1989 (`gradfit.seed_data` makes
the same 15 points). Each pass of the loop is the seven steps."""),
    code("""%matplotlib inline
import torch

import gradfit
from gradfit.data import seed_generator

generator = seed_generator(1989)
x, y = gradfit.seed_data(generator=generator)  # the article's 15 points, float32 as in the article
params = torch.randn(3, generator=generator).requires_grad_()  # 1. initialize
lr = 1e-4


def f(x, params):
    a, b, c = params
    return a * x**2 + b * x + c


def mse(preds, targets):
    return ((preds - targets) ** 2).mean()


for step in range(10):
    preds = f(x, params)  # 2. predict
    loss = mse(preds, y)  # 3. loss
    loss.backward()  # 4. gradient
    params.data = params.data - lr * params.grad.data  # 5. step
    params.grad = None
    print("RMSE:", loss.item() ** 0.5)  # 6. repeat ... 7. stop after ten (the article prints this)"""),
    md("""## 2. The same loop in gradfit

`gradfit.gradient_descent` is that loop, keeping a history of every step (the RMSE where it started, the
gradient's size, the parameters after it). `gradfit demo --explain` prints each step's gradient and update in
numbers."""),
    code("""from gradfit import gradient_descent, quadratic

generator = seed_generator(1989)
x, y = gradfit.seed_data(generator=generator)
start = torch.randn(3, generator=generator)
params, history = gradient_descent(quadratic(), x, y, start, learning_rate=1e-4, steps=10)
history.rmse[:3], history.final_params"""),
    md("""## 3. The learning rate and its limit

For a model linear in its parameters the loss is a bowl: plain gradient descent is stable exactly for learning
rates below 2 / the largest curvature of the loss. The article's 1e-4 sits just under that limit; a little
more and the error grows, a little less and it crawls."""),
    code("""from gradfit import plots
from gradfit.demo import compare_learning_rates, summarize

rates = [5e-5, 1e-4, 1.2e-4]
runs = compare_learning_rates(rates)
summary = summarize(runs[1][1].history)
limit, best = summary.max_stable_learning_rate, summary.optimum_rmse
print(f"stable below {limit:.3g}; the best RMSE a quadratic can reach: {best:.4g}")
plots.plot_learning_rates(
    [(f"lr {r:g}", run, d) for r, run, d in runs],
    rates=rates,
    limit=limit,
    optimum=best,
    ylim=(-75, 120),
)"""),
    md("""## 4. Standardized parameters and momentum

The bowl is tens of thousands of times steeper across than along (x² and x live on very different scales), so
even a stable rate crawls along its floor. Two cures: walk in standardized coordinates (what `gradfit.fit` does
for gradient methods), or keep some of the last step (momentum)."""),
    code("""import warnings

x64, y64 = x.double(), y.double()
warnings.simplefilter("ignore", gradfit.ConvergenceWarning)  # (the result says whether it converged)
for label, options in [
    ("plain gd, raw parameters", {"method": "gd", "scale": False, "learning_rate": 1e-4}),
    ("plain gd, standardized", {"method": "gd"}),
    ("momentum, standardized", {"method": "momentum"}),
]:
    r = gradfit.fit("quadratic", x64, y64, max_steps=2000, p0=list(start.tolist()), **options)
    done = "converged" if r.converged else "not converged"
    print(f"{label:<26} {r.n_steps:>4} steps  RMSE {r.rmse:.6g}  {done}  (best {summary.optimum_rmse:.6g})")"""),
    md("""## 5. Levenberg–Marquardt, with standard errors

Real fitting uses second-order information: Levenberg–Marquardt reaches the least-squares answer in a few steps,
and the covariance gives each parameter a standard error."""),
    code("""result = gradfit.fit("quadratic", x64, y64, method="lm")
print(result.report())"""),
    md("""## 6. A peak over a sloping background

A made-up X-ray scan: two Gaussian peaks and a straight background. A sum of built-in models guesses its own
start; the figure draws each part dashed, and the axes carry the data's column names."""),
    code("""import numpy as np
import pandas as pd

rng = np.random.default_rng(0)
two_theta = np.linspace(10, 60, 300)
counts = 3 * np.exp(-((two_theta - 30) ** 2) / 8) + 2 * np.exp(-((two_theta - 38) ** 2) / 18) + 0.02 * two_theta
scan = pd.DataFrame({"two_theta": two_theta, "counts": counts + rng.normal(0, 0.05, 300)})
peaks = gradfit.fit("gaussian + gaussian + linear", scan["two_theta"], scan["counts"], p0=[3, 30, 2, 2, 38, 3, 0.02, 0])
print({k: round(v, 4) for k, v in peaks.params.items()})
plots.plot_fit(peaks, level=0.95)"""),
    md("""## 7. Thousands of curves at once

`fit_many` fits every row of an array as one batch, each curve with its own guess, steps and stopping."""),
    code("""centers = rng.uniform(-1, 1, 2000)
x_many = np.linspace(-5, 5, 60)
Y = 2 * np.exp(-((x_many - centers[:, None]) ** 2) / 2) + rng.normal(0, 0.05, (2000, 60))
many = gradfit.fit_many("gaussian", x_many, Y)
print(many.counts(), "largest error in the centers:", float(np.abs(many.params[:, 1] - centers).max()))
plots.plot_histogram(many, "center")"""),
    md("""## 8. How sure: profile-likelihood intervals

Standard errors describe the loss as a parabola. Profile intervals re-fit the others with one parameter held at
each trial value (all at once, as a batch), as lmfit's `conf_interval` does; they are asymmetric where the
likelihood is."""),
    code("""intervals = peaks.conf_interval(sigmas=(1, 2), names=["g1_center", "g1_sigma"])
for name, pairs in intervals.items():
    print(name, [round(v, 4) for _, v in pairs])"""),
    md("""## What the seven steps became

*Initialize*: a guess from the data (every built-in has one). *Predict*, *loss*: any model, weighted or robust.
*Gradient*: exact, by autograd or on the expression's tree. *Step*: gradient methods for learning, LM for
answers. *Repeat*, *stop*: tolerances, and an honest message when a fit did not converge."""),
]


def main() -> None:
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = new_notebook(cells=cells, metadata={"kernelspec": kernel, "language_info": {"name": "python"}})
    with tempfile.TemporaryDirectory() as scratch:  # (whatever a cell writes stays out of docs/)
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": scratch}}).execute()
    nbformat.write(nb, Path(__file__).parent / "tutorial.ipynb")
    print("wrote docs/tutorial.ipynb")


if __name__ == "__main__":
    main()
