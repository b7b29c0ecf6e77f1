"""``gradfit demo``: the seed article, its figures, --explain and --compare-lr."""

from __future__ import annotations

from ..errors import ExitStatus


def run_demo(args) -> int:
    from .._files import check_out_dir, check_animation
    from ..demo import compare_learning_rates, demo, output_files, summarize

    out = check_out_dir(args.out, "--out")  # refuse a bad --out before any work
    animation = check_animation(args.animate, "--animate")
    on_start, callback = print, lambda record: print("RMSE:", record.rmse)  # what the article prints
    if args.explain:
        on_start, callback = _explaining(args)
    history = demo(
        args.out,
        rounds=args.rounds,
        steps_per_round=args.steps_per_round,
        learning_rate=args.learning_rate,
        seed=args.seed,
        on_start=on_start,  # the article prints its initial parameter tensor
        callback=callback,
    )
    summary = summarize(history, args.seed)
    for line in summary.lines():
        print(line)
    written = output_files(args.rounds)
    if args.compare_lr:
        from ..plots import plot_learning_rates

        runs = compare_learning_rates(args.compare_lr, steps=args.rounds * args.steps_per_round, seed=args.seed)
        for rate, run, diverged_at in runs:
            end = (
                f"diverged at step {diverged_at}"
                if diverged_at
                else f"RMSE {run.history.rmse[-1]:.6g} before its last step"
            )
            print(f"learning rate {rate:g}: {end}")
        figure = plot_learning_rates(
            [(f"lr {rate:g}", run, d) for rate, run, d in runs],
            ylim=(-75, 120),
            rates=[rate for rate, _, _ in runs],
            limit=summary.max_stable_learning_rate,
            optimum=summary.optimum_rmse,
        )
        _save_figure(figure, out / "compare-lr.png")
        written.append("compare-lr.png")
    print(f"Wrote {', '.join(written)} to {args.out}/")
    if animation is not None:
        from ..data import seed_data
        from ..models import quadratic
        from ..plots import Trace

        x, y = seed_data(args.seed)
        save_animation(Trace(quadratic(), x, y, history, optimum_rmse=summary.optimum_rmse), animation)
        print(f"Wrote {animation}")
    return ExitStatus.OK


def _explaining(args):
    """The demo's on_start and callback with --explain: the article's lines, each RMSE line followed by its
    step in numbers (gradfit.explain)."""
    from ..data import seed_data
    from ..explain import Explainer
    from ..models import quadratic

    x, y = seed_data(args.seed)
    explainer = Explainer(quadratic(), x, y, args.learning_rate)
    before: list = []

    def on_start(params) -> None:
        print(params)
        before[:] = [float(v) for v in params.detach()]

    def callback(record) -> None:
        print("RMSE:", record.rmse)
        for line in explainer.block(record.step, before):
            print(line)
        before[:] = record.params

    return on_start, callback


def explain_fit(result) -> None:
    """Every step of a plain gradient descent fit in numbers (gradfit.explain), from its history."""
    from ..explain import Explainer

    explainer = Explainer(result.model, result.x, result.y, result.learning_rate)
    before = result.history.init_params
    for record in result.history:
        for line in explainer.block(record.step, before):
            print(line)
        before = record.params


def _save_figure(figure, path) -> None:
    from .._files import save_atomic

    save_atomic(path, figure.savefig)


def save_animation(run, path) -> None:
    from .._files import save_atomic
    from ..plots import animate

    save_atomic(path, lambda tmp: animate(run, tmp))
