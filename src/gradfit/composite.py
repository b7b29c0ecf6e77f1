"""A sum of models (``gaussian + linear``): parameters prefixed by component, a guess made part by part."""

from __future__ import annotations

import torch

from .errors import ModelError
from .models import Model, lstsq_guess


class Composite(Model):
    """A sum of models, ``gaussian + linear``: parameters prefixed by component (g_center, l_slope).

    Args:
        parts: the models summed.
        own_names: the positions of parts that keep their own parameter names (an expression added to built-ins,
            ``gaussian + m*x + c``); every other part is prefixed.
    """

    def __init__(self, parts: list[Model], own_names: tuple[int, ...] = ()):
        if len(parts) < 2:
            raise ModelError("A composite model needs at least two parts.")
        self.parts = list(parts)
        prefixed = [i for i in range(len(parts)) if i not in own_names]
        firsts = [parts[i].name[0].lower() for i in prefixed]
        prefixes = [""] * len(parts)
        for k, (i, f) in enumerate(zip(prefixed, firsts)):
            same = [j for j, g in enumerate(firsts) if g == f]
            prefixes[i] = f if len(same) == 1 else f"{f}{same.index(k) + 1}"
        self.prefixes = prefixes
        named = [[f"{p}_{n}" if p else n for n in m.param_names] for p, m in zip(prefixes, parts)]
        self.param_names = tuple(n for names in named for n in names)
        twice = sorted({n for n in self.param_names if self.param_names.count(n) > 1})
        if twice:
            raise ModelError(
                f"Parameter {twice[0]!r} belongs to two parts of the model "
                f"{' + '.join(m.name for m in parts)}; rename it in the expression."
            )
        self.name = " + ".join(m.name for m in parts)
        self.formula = " + ".join(
            m.formula if p == "" else f"{m.name}({', '.join(names)})" for p, m, names in zip(prefixes, parts, named)
        )
        self.is_linear = all(m.is_linear for m in parts)
        self.even_params = tuple(f"{p}_{n}" if p else n for p, m in zip(prefixes, parts) for n in m.even_params)
        kinds = {m.variables for m in parts}
        self.variables = kinds.pop() if len(kinds) == 1 else None
        self._slices = []
        start = 0
        for m in parts:
            self._slices.append(slice(start, start + m.n_params))
            start += m.n_params
        if all(m.is_linear or m.guess_many is not None for m in parts):
            self.guess_many = self._guess_many
        if not self.is_linear and all(m.is_linear or hasattr(m, "value_and_jacobian") for m in parts):
            self.value_and_jacobian = self._value_and_jacobian  # (an instance attribute: Problem looks for it)

    def _value_and_jacobian(self, x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The parts' values summed and their Jacobians side by side (a linear part's is its design matrix)."""
        values, jacobians = [], []
        for m, sl in zip(self.parts, self._slices):
            if m.is_linear:
                a = m.design_matrix(x)
                values.append(a @ params[sl])
                jacobians.append(a)
            else:
                value, jac = m.value_and_jacobian(x, params[sl])
                values.append(value)
                jacobians.append(jac)
        return sum(values[1:], values[0]), torch.cat(jacobians, dim=-1)

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        out = None
        for m, sl in zip(self.parts, self._slices):
            term = m(x, params[..., sl])
            out = term if out is None else out + term
        return out

    def design_matrix(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.design_matrix(x) for m in self.parts], dim=-1)

    def program(self):
        """The parts' programs summed, when every part has one and all take the same variables."""
        programs = [m.program() for m in self.parts]
        if self.variables is None or any(p is None for p in programs):
            return None
        from .expr_program import sum_programs

        return sum_programs(programs, [m.n_params for m in self.parts])

    def _guess_many(self, x, Y):
        return _composite_guess_many(self, x, Y)

    def guess(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Each part guesses from what the parts before it leave unexplained."""
        values, rest = [], y
        for m in self.parts:
            # a part linear in its parameters takes its exact least-squares fit to the rest
            g = lstsq_guess(m, x, rest) if m.is_linear else m.guess(x, rest)
            if g is None:
                g = torch.ones(m.n_params, dtype=y.dtype, device=y.device)
            g = torch.as_tensor(g, dtype=y.dtype, device=y.device)
            with torch.no_grad():
                rest = rest - m(x, g)
            values.append(g)
        return torch.cat(values)


def _composite_guess_many(model: "Composite", x, Y):
    """Composite.guess for every row of Y at once (shared x): each part from what the parts before it leave."""
    xt, rest = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(Y, dtype=torch.float64)
    values = []
    for m in model.parts:
        if m.is_linear:  # its exact least-squares fit to every row's rest: one solve with many right-hand sides
            a = m.design_matrix(xt).double()
            if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(rest).all())):
                raise ModelError(f"Model {model.name}'s columns overflow on these data (inf or NaN): rescale x or Y.")
            g = torch.linalg.lstsq(a, rest.T).solution.T
            explained = g @ a.T
        else:
            g = torch.as_tensor(m.guess_many(x, rest.numpy()), dtype=torch.float64)
            with torch.no_grad():
                explained = m(xt, g)
        rest = rest - explained
        values.append(g)
    return torch.cat(values, dim=1).numpy()
