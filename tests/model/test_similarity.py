import pytest
import torch

from twotower.model.similarity import Similarity


@pytest.mark.parametrize("kind", Similarity.KINDS)
def test_all_pairs_matches_pairs_and_the_definition(kind):
    torch.manual_seed(1)
    sim = Similarity(kind, 4, temperature=0.5)
    if kind == "hadamard":
        sim.weight.data = torch.tensor([1.0, 2.0, 0.5, 0.0])
    q, e = torch.randn(3, 4), torch.randn(5, 4)
    ap = sim.all_pairs(q, e)
    pw = sim.pairs(q.unsqueeze(1).expand(3, 5, 4), e.unsqueeze(0).expand(3, 5, 4))
    torch.testing.assert_close(ap, pw, rtol=1e-4, atol=1e-4)
    i, j = 1, 2
    want = {
        "dot": lambda: q[i] @ e[j],
        "cosine": lambda: torch.nn.functional.cosine_similarity(q[i], e[j], dim=0),
        "euclidean": lambda: -((q[i] - e[j]) ** 2).sum(),
        "hadamard": lambda: (q[i] * sim.weight * e[j]).sum(),
    }[kind]() / 0.5
    assert ap[i, j].item() == pytest.approx(want.item(), rel=1e-4)


def test_unknown_kind_and_learned_temperature():
    with pytest.raises(ValueError, match="similarity must be one of"):
        Similarity("manhattan", 4)
    assert Similarity("cosine", 4, 0.05, learn_temperature=True).log_temperature.requires_grad
    assert not Similarity("cosine", 4, 0.05).log_temperature.requires_grad
