"""A FitResult as text: lmfit's report, a JSON-ready summary, the notebook's HTML view (FitResult's methods call
these)."""

from __future__ import annotations

import math

STRONG_CORRELATION = 0.9  # a notebook's view lists pairs of parameters correlated at least this much


def finite_or_none(v):
    return None if v is None or not math.isfinite(v) else float(v)


def summary(self) -> dict:
    """``FitResult.to_dict``: a JSON-ready summary (infinite or undefined numbers become None)."""
    return {
        "model": self.model.name,
        "formula": self.model.formula,
        "params": {k: finite_or_none(v) for k, v in self.params.items()},
        "stderr": {k: finite_or_none(v) for k, v in self.stderr.items()},
        "covariance": [[finite_or_none(v) for v in row] for row in self.covariance.tolist()],
        "rmse": finite_or_none(self.rmse),
        "r2": finite_or_none(self.r2),
        "chi2": finite_or_none(self.chi2),
        "reduced_chi2": finite_or_none(self.reduced_chi2),
        "aic": finite_or_none(self.aic),
        "bic": finite_or_none(self.bic),
        "n_points": self.n_points,
        "n_dropped": self.n_dropped,
        "n_steps": self.n_steps,
        "converged": self.converged,
        "message": self.message,
        "method": self.method,
        "gap_to_optimum": finite_or_none(self.gap_to_optimum),
        "fixed": dict(self.fixed),
        "tied": dict(self.tied),
        "loss": self.loss,
        "f_scale": self.f_scale,
        "at_bound": dict(self.at_bound),
        **({"starts": dict(self.starts)} if self.starts else {}),
        **(
            {"intervals": {k: [[p, finite_or_none(v)] for p, v in pairs] for k, pairs in self.intervals.items()}}
            if self.intervals
            else {}
        ),
        **(
            {
                "derived": {
                    k: {**d, "value": finite_or_none(d["value"]), "stderr": finite_or_none(d["stderr"])}
                    for k, d in self.derived.items()
                }
            }
            if self.derived
            else {}
        ),  # fmt: skip
    }


def report_text(self, min_correlation: float = 0.1) -> str:
    """``FitResult.report``: statistics, parameters with standard errors, correlations (lmfit's layout)."""
    width = max(len(n) for n in self.params) if self.params else 1
    lines = [
        "[[Model]]",
        f"    {self.model.name}: y = {self.model.formula}",
        "[[Fit Statistics]]",
        f"    # fitting method   = {self.method}",
        f"    # steps            = {self.n_steps}",
        f"    # data points      = {self.n_points}"
        + (f" ({self.n_dropped} dropped: NaN or inf)" if self.n_dropped else ""),
        f"    # variables        = {self.n_params - len(self.fixed) - len(self.tied)}",  # those fitted, as lmfit
        *([f"    loss               = {self.loss} (f_scale {self.f_scale:g})"] if self.loss != "linear" else []),
        *(
            [f"    # starts           = {self.starts['n']} ({self.starts['reached']} reached this minimum)"]
            if self.starts
            else []
        ),
        f"    converged          = {'yes' if self.converged else 'NO'}",
        f"    RMSE               = {self.rmse:.10g}",
        f"    R-squared          = {self.r2:.10g}",
        f"    chi-square         = {self.chi2:.10g}",
        f"    reduced chi-square = {self.reduced_chi2:.10g}",
        f"    Akaike info crit   = {self.aic:.10g}",
        f"    Bayesian info crit = {self.bic:.10g}",
    ]
    if self.gap_to_optimum is not None:
        lines.append(
            f"    gap to optimum     = {self.gap_to_optimum:.3g} (relative RMSE above the exact "
            f"least-squares fit, RMSE {self.optimum_rmse:.10g})"
        )
    lines.append("[[Variables]]")
    for name, value in self.params.items():
        err = self.stderr[name]
        if name in self.fixed:
            lines.append(f"    {name:<{width}}: {value: .10g} (fixed)")
            continue
        rel = f" ({abs(err / value):.2%})" if value != 0 and math.isfinite(err) else ""
        bound = self.bounds.get(name)
        where = (
            f" == '{self.tied[name]}'"  # as lmfit writes a constrained parameter
            if name in self.tied
            else f" (at {self.at_bound[name]} bound)"
            if name in self.at_bound
            else f" (bounds {bound[0]:g}, {bound[1]:g})"
            if bound
            else ""
        )
        lines.append(f"    {name:<{width}}: {value: .10g} +/- {err:.4g}{rel}{where}")
    if self.derived:
        lines.append("[[Derived]]")
        wide = max(len(n) for n in self.derived)
        for name, d in self.derived.items():
            err = d["stderr"]
            rel = f" ({abs(err / d['value']):.2%})" if d["value"] != 0 and math.isfinite(err) else ""
            lines.append(f"    {name:<{wide}}: {d['value']: .10g} +/- {err:.4g}{rel} == '{d['expression']}'")
    if self.intervals:
        lines.extend(intervals_report(self.intervals, self.params))
    pairs = []
    corr = self.correlation
    names = self.param_names
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if names[i] in self.tied or names[j] in self.tied:  # (a tie's correlations are its expression's)
                continue
            if math.isfinite(corr[i, j]) and abs(corr[i, j]) >= min_correlation:
                pairs.append((abs(corr[i, j]), f"C({names[i]}, {names[j]})", corr[i, j]))
    if pairs:
        label_width = max(len(label) for _, label, _ in pairs)
        lines.append(f"[[Correlations]] (unreported correlations are < {min_correlation:.3f})")
        lines.extend(f"    {label:<{label_width}} = {value:+.4f}" for _, label, value in sorted(pairs, reverse=True))
    lines.append("[[Message]]")
    lines.append(f"    {self.message}")
    return "\n".join(lines)


def html_view(self) -> str:
    """``FitResult._repr_html_``: a small figure of the fit, the parameters, χ², and what to look at (strong
    correlations, parameters on their bounds)."""
    import html

    from .plots import inline_image, thumbnail

    rows = []
    for name, value in self.params.items():
        err = "fixed" if name in self.fixed else f"± {self.stderr[name]:.4g}"
        note = (
            f"= {self.tied[name]}"
            if name in self.tied
            else f"at its {self.at_bound[name]} bound"
            if name in self.at_bound
            else ""
        )
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{value:.8g}</td><td>{err}</td><td>{html.escape(note)}</td></tr>"
        )
    stats = (
        f"RMSE {self.rmse:.6g} · R² {self.r2:.6f} · χ² {self.chi2:.6g} (reduced {self.reduced_chi2:.4g}) · "
        f"{self.n_points} points · {self.n_steps} steps of {html.escape(self.method)}"
    )
    look = []
    corr, names = self.correlation, self.param_names
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if math.isfinite(corr[i, j]) and abs(corr[i, j]) >= STRONG_CORRELATION:
                look.append(f"C({names[i]}, {names[j]}) = {corr[i, j]:+.3f}")
    look += [f"{n} ended on its {side} bound" for n, side in self.at_bound.items()]
    figure = None
    try:
        figure = thumbnail(self)
    except Exception:  # (a view must never fail: the table is the result)
        figure = None
    picture = "" if figure is None else f"<div style='float:right;margin-left:1em'>{inline_image(figure, 'fit')}</div>"
    notes = "".join(f"<li>{html.escape(t)}</li>" for t in look)
    return (
        f"<div>{picture}<b>{html.escape(self.model.name)}</b>: y = <code>{html.escape(self.model.formula)}</code>"
        f"<table><tr><th>parameter</th><th>value</th><th>standard error</th><th></th></tr>{''.join(rows)}</table>"
        f"<p>{stats}</p><p>{'✔' if self.converged else '⚠'} {html.escape(self.message)}</p>"
        f"{f'<p>Worth a look:</p><ul>{notes}</ul>' if notes else ''}<div style='clear:both'></div></div>"
    )


def intervals_report(intervals: dict, params: dict) -> list[str]:
    """lmfit's ``ci_report`` layout: a column per probability, each limit as its offset from the best value."""
    probs = [p for p, _ in next(iter(intervals.values()))]
    head = "".join(f"{'_BEST_' if p == 0 else f'{p:.2%}':>12}" for p in probs)
    wide = max(len(n) for n in intervals)
    lines = ["[[Confidence intervals]] (profile likelihood, F-test: gradfit.profile)", f"    {'':<{wide}} {head}"]
    for name, pairs in intervals.items():
        best = params.get(name, 0.0)
        cells = "".join(f"{v: 12.5g}" if p == 0 else f"{v - best:+12.5g}" for p, v in pairs)
        lines.append(f"    {name:<{wide}}: {cells}")
    return lines
