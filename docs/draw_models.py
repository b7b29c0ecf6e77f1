"""Draws every built-in model for docs/models.md: a small figure each (docs/models/<name>.png) and the table of
models between the markers in docs/models.md. Run it after adding a model: ``python docs/draw_models.py``
(tests/test_library.py checks that the table and the figures cover every built-in)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from gradfit.library import LIBRARY

HERE = Path(__file__).parent
START, END = "<!-- models: made by docs/draw_models.py -->", "<!-- end of models -->"

# name -> (x range, parameters drawn, lmfit's model, how gradfit guesses)
PEAK = "the largest peak (or dip) above a line through the edges: its height, position and half width"
EXAMPLES = {
    "constant": ((0, 1), [1.0], "`ConstantModel`", "the mean"),
    "linear": ((0, 1), [1.5, 0.5], "`LinearModel`", "(linear: solved exactly)"),
    "quadratic": ((-2, 2), [0.5, -0.4, 1.0], "`QuadraticModel`", "(linear: solved exactly)"),
    "polyN": ((-2, 2), [0.3, -0.2, -1.0, 1.0], "`PolynomialModel(degree=N)`", "(linear: solved exactly)"),
    "exponential": (
        (0, 2),
        [1.0, 1.2],
        "`ExponentialModel` (`amplitude*exp(-x/decay)`: rate = −1/decay)",
        "a straight line through log|y|",
    ),
    "exp_decay": (
        (0, 5),
        [2.0, 1.2, 0.5],
        "`ExponentialModel() + ConstantModel()`",
        "offset from the tail, rate from log(y − offset)",
    ),
    "power_law": ((0.1, 3), [1.0, 1.5], "`PowerLawModel`", "a straight line through log-log"),
    "logistic": (
        (-5, 5),
        [0.2, 1.0, 1.5, 0.0],
        "`StepModel(form='logistic') + ConstantModel()`",
        "levels at both ends, the half-way crossing",
    ),
    "gaussian": ((-4, 4), [1.0, 0.0, 1.0], "`GaussianModel` (its amplitude is the area; gradfit's the height)", PEAK),
    "lorentzian": ((-5, 5), [1.0, 0.0, 1.0], "`LorentzianModel` (amplitude the area, sigma the half width)", PEAK),
    "voigt": ((-5, 5), [1.0, 0.0, 0.7, 0.5], "`VoigtModel`", PEAK + "; sigma = gamma"),
    "moffat": ((-5, 5), [1.0, 0.0, 1.0, 1.5], "`MoffatModel`", PEAK + "; beta 1"),
    "skewed_gaussian": (
        (-4, 4),
        [1.0, -0.5, 1.2, 3.0],
        "`SkewedGaussianModel`",
        "a skew normal's area, mean, variance and skewness under the curve, inverted",
    ),
    "lognormal": ((0.01, 4), [1.0, 0.0, 0.5], "`LognormalModel`", "the mean and spread of log x under the curve"),
    "split_lorentzian": ((-5, 5), [1.0, 0.0, 0.5, 1.5], "`SplitLorentzianModel`", PEAK + "; both sides alike"),
    "pearson7": ((-5, 5), [1.0, 0.0, 1.0, 2.0], "`Pearson7Model`", PEAK + "; expon 1 (a Lorentzian)"),
    "pearson4": ((-6, 6), [1.0, 0.0, 1.0, 1.5, 2.0], "`Pearson4Model`", PEAK + "; expon 1, skew 0 (a Lorentzian)"),
    "student_t": ((-6, 6), [1.0, 0.0, 3.0], "`StudentsTModel`", PEAK + "; 5 degrees of freedom"),
    "breit_wigner": (
        (-10, 10),
        [1.0, 0.0, 2.0, 3.0],
        "`BreitWignerModel`",
        "the level of the edges, the peak's height over it (q²), the side of the dip (q's sign)",
    ),
    "damped_oscillator": (
        (0, 6),
        [1.0, 3.0, 0.15],
        "`DampedOscillatorModel`",
        PEAK + ": the resonance's height is amplitude/(2 sigma)",
    ),
    "dho": ((0.05, 10), [2.0, 4.0, 0.5, 1.5], "`DampedHarmonicOscillatorModel`", PEAK + "; gamma = center/2"),
    "expgaussian": (
        (-3, 8),
        [1.0, 0.0, 0.6, 0.8],
        "`ExponentialGaussianModel`",
        "the mean, variance and skewness under the curve, inverted",
    ),
    "doniach": ((-5, 5), [1.0, 0.0, 0.7, 0.3], "`DoniachModel`", PEAK + "; gamma 0 (a Lorentzian)"),
    "skewed_voigt": ((-5, 5), [1.0, 0.0, 0.7, 0.4, 2.0], "`SkewedVoigtModel`", PEAK + "; skew 0"),
    "step": (
        (-4, 4),
        [1.0, 0.0, 2.0],
        "`StepModel(form='linear')`",
        "the change from the left edge to the right, the half-way, quarter and three-quarter points",
    ),
    "step_erf": ((-4, 4), [1.0, 0.0, 1.0], "`StepModel(form='erf')`", "the same"),
    "step_atan": ((-4, 4), [1.0, 0.0, 0.5], "`StepModel(form='atan')`", "the same"),
    "step_logistic": ((-4, 4), [1.0, 0.0, 0.6], "`StepModel(form='logistic')`", "the same"),
    "rectangle": (
        (-3, 8),
        [1.0, 0.0, 1.0, 5.0, 1.0],
        "`RectangleModel(form='linear')`",
        "the mean height above half way, where it is first and last half reached, the quarter points",
    ),
    "rectangle_erf": ((-3, 8), [1.0, 0.0, 0.7, 5.0, 0.7], "`RectangleModel(form='erf')`", "the same"),
    "rectangle_atan": ((-3, 8), [1.0, 0.0, 0.3, 5.0, 0.3], "`RectangleModel(form='atan')`", "the same"),
    "rectangle_logistic": ((-3, 8), [1.0, 0.0, 0.4, 5.0, 0.4], "`RectangleModel(form='logistic')`", "the same"),
    "thermal_bose": (
        (0.2, 4),
        [1.0, 0.0, 1.0],
        "`ThermalDistributionModel(form='bose')`",
        "amplitude 1; a straight line through log(1/y + 1)",
    ),
    "thermal_maxwell": (
        (0, 4),
        [1.0, 0.0, 1.0],
        "`ThermalDistributionModel(form='maxwell')`",
        "amplitude 1; a straight line through log(1/y)",
    ),
    "thermal_fermi": (
        (-4, 4),
        [1.0, 0.0, 0.5],
        "`ThermalDistributionModel(form='fermi')`",
        "amplitude 1; a straight line through log(1/y − 1)",
    ),
    "pseudo_voigt": (
        (-5, 5),
        [1.0, 0.0, 1.0, 0.5],
        "`PseudoVoigtModel` (amplitude the area, sigma the half width: gradfit's height and width)",
        PEAK + "; fraction 0.5",
    ),
    "sine": (
        (0, 3),
        [1.0, 1.0, 0.0],
        "`SineModel` (`amplitude*sin(frequency*x + shift)`: angular frequency)",
        "the strongest frequency of an FFT, then amplitude and phase by linear least squares",
    ),
    "damped_sine": (
        (0, 6),
        [1.0, 0.4, 1.0, 0.0],
        "lmfit's `expsine` line shape (angular frequency)",
        "the same, with the decay from the envelope",
    ),
    "gaussian2d": (
        (-3, 3),
        [1.0, 0.0, 0.0, 1.0, 0.6, 0.0],
        "`Gaussian2dModel` (amplitude the volume; no offset)",
        "moments of the spot above the 10th percentile",
    ),
}


def table() -> str:
    rows = ["| model | shape | formula | lmfit | how it guesses |", "|---|---|---|---|---|"]
    for name, entry in LIBRARY.items():
        model = entry.make()
        formula = model.formula.replace("|", "\\|")
        lmfit_name, how = EXAMPLES[name][2], EXAMPLES[name][3].replace("|", "\\|")
        rows.append(
            f"| `{name}` — {entry.description} | ![{name}](models/{name}.png) | `{formula}` | {lmfit_name} | {how} |"
        )
    return "\n".join(rows)


def draw(name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    (lo, hi), values = EXAMPLES[name][:2]
    model = LIBRARY[name].make()
    fig, ax = plt.subplots(figsize=(1.8, 1.0), dpi=80)
    if name == "gaussian2d":
        g = np.linspace(lo, hi, 60)
        xx, yy = np.meshgrid(g, g)
        z = model(torch.tensor(np.stack([xx.ravel(), yy.ravel()], 1)), torch.tensor(values, dtype=torch.float64))
        ax.imshow(z.numpy().reshape(60, 60), extent=(lo, hi, lo, hi), cmap="Blues", origin="lower")
    else:
        x = np.linspace(lo, hi, 400)
        ax.plot(x, model(torch.tensor(x), torch.tensor(values, dtype=torch.float64)).numpy(), color="C0", lw=1.5)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout(pad=0.2)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    missing = sorted(set(LIBRARY) - set(EXAMPLES))
    if missing:
        sys.exit(f"draw_models.py: no example for {', '.join(missing)}: add one to EXAMPLES")
    (HERE / "models").mkdir(exist_ok=True)
    for name in LIBRARY:
        draw(name, HERE / "models" / f"{name}.png")
    page = (HERE / "models.md").read_text()
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    (HERE / "models.md").write_text(f"{head}{START}\n{table()}\n{END}{tail}")
    print(f"drew {len(LIBRARY)} models into {HERE / 'models'} and the table of docs/models.md", file=sys.stderr)


if __name__ == "__main__":
    main()
