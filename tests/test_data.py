import pytest
import torch

import gradfit
from gradfit.errors import OptionError


def test_seed_data_is_bit_identical_to_the_article(golden):
    x, y = gradfit.seed_data()
    assert x.dtype == y.dtype == torch.float32
    assert x.tolist() == golden["X"]
    assert y.tolist() == golden["Y"]  # float32 -> Python float is exact, so == is bit-identity


def test_seed_data_follows_the_articles_recipe_for_any_seed():
    torch.manual_seed(7)  # the article's own recipe, on the global generator
    x_ref = torch.arange(0, 15).float()
    y_ref = torch.rand(15) * 3 + 0.9 * (x_ref - 3) ** 2 + 1
    x, y = gradfit.seed_data(7)
    assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_seed_data_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    gradfit.seed_data()
    assert torch.equal(torch.rand(3), expected)


def test_other_seeds_give_other_noise():
    _, y1 = gradfit.seed_data(1)
    _, y2 = gradfit.seed_data(2)
    assert not torch.equal(y1, y2)


@pytest.mark.parametrize("seed", [-1, 1.5, "1989", True, 2**63])
def test_bad_seed_is_refused(seed):
    with pytest.raises(OptionError, match="`?seed`? must be a whole number"):
        gradfit.seed_data(seed)
