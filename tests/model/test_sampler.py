import pytest
import torch

from twotower.model.sampler import FrequencyEstimator, sample_uniform


def test_frequency_estimate_converges_to_appearance_probability():
    est = FrequencyEstimator(n_items=3, alpha=0.05)
    for step in range(1, 2001):
        batch = [1] + ([2] if step % 4 == 0 else []) + ([3] if step % 20 == 0 else [])
        est.update(torch.tensor(batch + [0]))
    p = est.probability(torch.tensor([1, 2, 3]))
    assert p.tolist() == pytest.approx([1.0, 0.25, 0.05], rel=0.05)


def test_never_seen_items_have_zero_probability_and_state_round_trips():
    est = FrequencyEstimator(n_items=4)
    est.update(torch.tensor([1, 1, 2]))
    assert est.probability(torch.tensor([3]))[0].item() == 0.0
    other = FrequencyEstimator(n_items=4)
    other.load_state_dict(est.state_dict())
    assert torch.equal(other.probability(torch.arange(5)), est.probability(torch.arange(5)))


def test_uniform_sampler_covers_catalog_and_never_draws_padding():
    g = torch.Generator().manual_seed(0)
    draws = sample_uniform(10, 5000, g)
    assert draws.min() >= 1 and draws.max() <= 10
    counts = torch.bincount(draws, minlength=11)[1:]
    assert counts.min() > 400
