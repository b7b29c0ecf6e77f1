import numpy as np
import torch

import gradfit


def test_mse_and_rmse_match_numpy():
    rng = np.random.default_rng(0)
    preds, actual = rng.normal(size=50), rng.normal(size=50)
    expected = np.mean((preds - actual) ** 2)
    got = gradfit.mse(torch.tensor(preds), torch.tensor(actual)).item()
    assert abs(got - expected) <= 1e-14 * expected
    got_rmse = gradfit.rmse(torch.tensor(preds), torch.tensor(actual)).item()
    assert abs(got_rmse - np.sqrt(expected)) <= 1e-14 * np.sqrt(expected)


def test_mse_is_zero_for_a_perfect_fit():
    y = torch.arange(5.0)
    assert gradfit.mse(y, y).item() == 0.0
