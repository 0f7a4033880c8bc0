"""Concept losses, loss weighting and concept diagnostics on tensors whose answers are known by hand."""

import math

import pytest
import torch
from conftest import tiny_config

from concept_encoder_training.diagnostics import effective_rank, entropy_effective_rank, mean_concept_cosine
from model_cards import format_effective_rank
from modeling_concept_encoder import (
    ConceptEncoderForMaskedLM,
    concept_loss_terms,
    covariance_loss,
    orthogonality_loss,
    simcse_loss,
    soft_orthogonality_loss,
    t_regs_loss,
    uniformity_loss,
    variance_loss,
)

C, H = 6, 16
ORTHONORMAL = torch.eye(C, H)[None] * 3.0  # [1, C, H]: orthogonal rows (any length: losses use unit vectors)
IDENTICAL = torch.randn(1, 1, H, generator=torch.Generator().manual_seed(0)).expand(2, C, H)


def unit_pair(cosine: float) -> torch.Tensor:
    """Two unit concepts `[1, 2, 2]` at the given cosine."""
    return torch.tensor([[[1.0, 0.0], [cosine, math.sqrt(1 - cosine**2)]]])


def test_orthogonality():
    assert orthogonality_loss(ORTHONORMAL).item() == pytest.approx(0.0, abs=1e-7)
    assert orthogonality_loss(IDENTICAL).item() == pytest.approx(1.0, abs=1e-6)  # the maximum
    assert orthogonality_loss(unit_pair(0.5)).item() == pytest.approx(0.25, abs=1e-6)


def test_soft_orthogonality():
    assert soft_orthogonality_loss(unit_pair(0.09), margin=0.1).item() == 0.0
    assert soft_orthogonality_loss(unit_pair(-0.09), margin=0.1).item() == 0.0
    assert soft_orthogonality_loss(unit_pair(-0.5), margin=0.1).item() == pytest.approx(0.4**2, abs=1e-6)
    assert soft_orthogonality_loss(IDENTICAL, margin=0.1).item() == pytest.approx(0.9**2, abs=1e-6)


def test_uniformity():
    assert uniformity_loss(unit_pair(0.0), temperature=2.0).item() == pytest.approx(math.exp(-4), rel=1e-5)
    # e1, e1, e2: of the 6 ordered pairs, 2 coincide (exp 0 = 1) and 4 are orthogonal (‖ĉᵢ − ĉⱼ‖² = 2).
    concepts = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]])
    assert uniformity_loss(concepts, temperature=2.0).item() == pytest.approx((2 + 4 * math.exp(-4)) / 6, rel=1e-5)


def test_vicreg_variance():
    spread = 3.0 * torch.randn(8, C, H, generator=torch.Generator().manual_seed(1))  # every std well above 1
    assert variance_loss(spread).item() == 0.0
    constant = torch.ones(4, C, H)  # Var = 0 in every dimension
    assert variance_loss(constant).item() == pytest.approx(1 - math.sqrt(1e-4), abs=1e-6)


def test_vicreg_covariance():
    # Rows of a 4x4 Hadamard matrix: centred columns are mutually orthogonal, so the covariance is diagonal.
    hadamard = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
    assert covariance_loss(hadamard.view(2, 2, 4)).item() == pytest.approx(0.0, abs=1e-7)
    # Rows (1, 1) and (-1, -1): covariance [[2, 2], [2, 2]] (n − 1 = 1); off-diagonal 2² + 2² = 8, / H = 4.
    assert covariance_loss(torch.tensor([[[1.0, 1.0], [-1.0, -1.0]]])).item() == pytest.approx(4.0, rel=1e-5)


def test_t_regs_nearest_neighbour_spread():
    assert t_regs_loss(ORTHONORMAL).item() == pytest.approx(-math.sqrt(2), abs=1e-6)
    assert t_regs_loss(IDENTICAL).item() == pytest.approx(0.0, abs=1e-3)  # only sqrt(eps) = 1e-4 away from 0
    # e1, e1, e2: the two copies of e1 are each other's nearest neighbour (0); e2's nearest is at √2.
    concepts = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]])
    assert t_regs_loss(concepts).item() == pytest.approx(-math.sqrt(2) / 3, abs=1e-4)
    # Three unit vectors at 0°, 90°, 100°: nearest-neighbour distances √2, 2·sin(5°), 2·sin(5°).
    angles = torch.tensor([0.0, 90.0, 100.0]).deg2rad()
    fan = torch.stack([angles.cos(), angles.sin()], dim=-1)[None]
    expected = -(math.sqrt(2) + 4 * math.sin(math.radians(5))) / 3
    assert t_regs_loss(fan).item() == pytest.approx(expected, abs=1e-5)
    collapsed = IDENTICAL + 0.01 * torch.randn(2, C, H, generator=torch.Generator().manual_seed(3))
    collapsed.requires_grad_(True)
    t_regs_loss(collapsed).backward()
    assert torch.isfinite(collapsed.grad).all() and collapsed.grad.abs().max() > 0


def test_simcse_contrast_of_two_views():
    views = torch.eye(4, 8) * 2.0  # four orthogonal sentences, the same vector in both views
    # cos(i, i) = 1, cos(i, j) = 0: cross-entropy = −log(e^{1/τ} / (e^{1/τ} + 3))
    expected = -math.log(math.exp(1 / 0.5) / (math.exp(1 / 0.5) + 3))
    assert simcse_loss(views, views, temperature=0.5).item() == pytest.approx(expected, rel=1e-5)
    same = torch.ones(4, 8)  # every sentence the same vector: chance level log(batch)
    assert simcse_loss(same, same, temperature=0.05).item() == pytest.approx(math.log(4), rel=1e-5)
    # swapped positives cost more than matched ones
    assert simcse_loss(views, views.flip(0), 0.5) > simcse_loss(views, views, 0.5)


def test_simcse_term_adds_a_second_encoder_pass_to_pretraining():
    config = tiny_config(simcse_weight=0.5, simcse_temperature=0.1, hidden_dropout_prob=0.0)
    config.attention_probs_dropout_prob = 0.0  # both views identical, so the term can be recomputed exactly
    torch.manual_seed(0)
    model = ConceptEncoderForMaskedLM(config).train()
    batch = mlm_batch()
    output = model(**batch)
    pooled = model.encoder(batch["input_ids"], batch["attention_mask"]).last_hidden_state.mean(dim=1)
    term = simcse_loss(pooled, pooled, 0.1)
    assert output.concept_loss_terms["simcse"].item() == pytest.approx(term.item(), rel=1e-5)
    assert output.loss.item() == pytest.approx((output.task_loss + 0.5 * term).item(), rel=1e-5)
    assert output.loss_weights["simcse"].item() == 0.5
    output.loss.backward()
    assert model.encoder.concepts.grad.abs().max() > 0
    assert model.eval()(**batch).concept_loss_terms is None  # training mode only


def test_composite_terms_are_sums_of_their_parts():
    concepts = torch.randn(3, C, H, generator=torch.Generator().manual_seed(2))
    config = tiny_config(concept_losses=["vicreg", "combined", "soft_orthogonality", "t_regs"])
    terms = concept_loss_terms(concepts, config)
    assert list(terms) == ["vicreg", "combined", "soft_orthogonality", "t_regs"]
    torch.testing.assert_close(terms["t_regs"], t_regs_loss(concepts), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        terms["vicreg"], variance_loss(concepts) + covariance_loss(concepts), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        terms["combined"], variance_loss(concepts) + uniformity_loss(concepts, 2.0), atol=1e-5, rtol=1e-4
    )


def test_effective_rank_known_values():
    assert effective_rank(IDENTICAL) == pytest.approx(1.0, abs=1e-4)
    assert entropy_effective_rank(IDENTICAL) == pytest.approx(1.0, abs=1e-3)
    assert effective_rank(torch.eye(C, H)) == pytest.approx(C, abs=1e-4)
    assert entropy_effective_rank(torch.eye(C, H)) == pytest.approx(C, abs=1e-4)
    gaussian = torch.randn(128, 512, generator=torch.Generator().manual_seed(0))
    assert effective_rank(gaussian) == pytest.approx(83, abs=2.5)  # measured 81.4-83.1 over seeds
    assert entropy_effective_rank(gaussian) == pytest.approx(122, abs=2.5)  # measured 123.6-123.8 over seeds


def test_effective_rank_forms_differ_on_batches():
    """The research log's form ranks the batch-mean matrix; the entropy form averages per example: two rank-1
    examples (the first half of the concepts along e0 in one, the second half along e1 in the other) give a rank-2
    mean."""
    first, second = torch.zeros(C, H), torch.zeros(C, H)
    first[: C // 2, 0], second[C // 2 :, 1] = 1.0, 1.0
    batch = torch.stack([first, second])
    assert effective_rank(batch) == pytest.approx(2.0, abs=1e-4)
    assert entropy_effective_rank(batch) == pytest.approx(1.0, abs=1e-3)


def test_mean_concept_cosine_and_format():
    assert mean_concept_cosine(ORTHONORMAL) == pytest.approx(0.0, abs=1e-7)
    assert mean_concept_cosine(IDENTICAL) == pytest.approx(1.0, abs=1e-6)
    assert mean_concept_cosine(unit_pair(-0.3)) == pytest.approx(0.3, abs=1e-6)
    assert format_effective_rank(5.07, 128) == "5.1 / 128 (4%)"
    assert format_effective_rank(122.2, 128) == "122.2 / 128 (95%)"


def mlm_model(**overrides) -> ConceptEncoderForMaskedLM:
    torch.manual_seed(0)
    return ConceptEncoderForMaskedLM(tiny_config(concept_losses=["orthogonality", "vicreg"], **overrides))


def mlm_batch(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 200, (4, 12), generator=generator)
    labels = torch.full_like(input_ids, -100)
    labels[:, 2:6] = input_ids[:, 2:6]
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def test_fixed_weighting_adds_weighted_terms():
    model = mlm_model(concept_loss_weighting="fixed", concept_loss_weight=0.25).train()
    output = model(**mlm_batch())
    terms = output.concept_loss_terms
    expected = output.task_loss + 0.25 * (terms["orthogonality"] + terms["vicreg"])
    torch.testing.assert_close(output.loss, expected, atol=1e-5, rtol=1e-4)
    assert {name: weight.item() for name, weight in output.loss_weights.items()} == {
        "task": 1.0,
        "orthogonality": 0.25,
        "vicreg": 0.25,
    }
    assert terms["orthogonality"].requires_grad


def test_none_weighting_reports_terms_but_trains_the_task_only():
    model = mlm_model(concept_loss_weighting="none").train()
    output = model(**mlm_batch())
    assert torch.equal(output.loss, output.task_loss)
    assert set(output.concept_loss_terms) == {"orthogonality", "vicreg"}
    assert not any(term.requires_grad for term in output.concept_loss_terms.values())
    model.eval()
    evaluated = model(**mlm_batch())
    assert evaluated.task_loss is None and evaluated.concept_loss_terms is None  # training mode only


def test_kendall_gal_log_variances_stay_clamped_and_round_trip(tmp_path):
    model = mlm_model(concept_loss_weighting="kendall_gal", concept_loss_log_var_limit=2.0).train()
    optimizer = torch.optim.SGD([model.concept_loss_log_vars], lr=50.0)
    for step in range(20):
        optimizer.zero_grad()
        output = model(**mlm_batch(step))
        output.loss.backward()
        if step == 0:  # every log-variance (task and both terms) learns
            assert model.concept_loss_log_vars.grad.abs().min() > 0
        optimizer.step()
        weights = torch.stack(list(output.loss_weights.values()))
        assert ((weights >= 0.5 * math.exp(-2.0) - 1e-6) & (weights <= 0.5 * math.exp(2.0) + 1e-6)).all()
        assert torch.isfinite(output.loss)
    assert model.concept_loss_log_vars.detach().abs().max() > 2.0  # pushed past the limit; only the clamp is used
    model.save_pretrained(tmp_path)
    loaded = ConceptEncoderForMaskedLM.from_pretrained(tmp_path)
    assert torch.equal(loaded.concept_loss_log_vars, model.concept_loss_log_vars)


@pytest.mark.parametrize("weighting", ["none", "fixed", "kendall_gal"])
def test_a_batch_without_labelled_positions_gives_zero_task_loss_and_zero_task_gradient(weighting):
    """0.1.0: cross-entropy over no masked token is NaN, which Kendall-Gal weighting spread into every weight."""
    losses = ["variance"] if weighting != "none" else []
    torch.manual_seed(0)
    model = ConceptEncoderForMaskedLM(tiny_config(concept_losses=losses, concept_loss_weighting=weighting))
    model.train()
    input_ids = torch.randint(5, 200, (1, 6))
    output = model(input_ids, labels=torch.full_like(input_ids, -100))
    assert output.task_loss.item() == 0.0 and torch.isfinite(output.loss)
    output.loss.backward()
    gradients = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in gradients.values())
    head = [model.lm_head.dense.weight.grad, model.lm_head.decoder.bias.grad]  # used by the task loss alone
    assert all(grad is None or not grad.any() for grad in head)
    if weighting == "kendall_gal":
        assert model.concept_loss_log_vars.grad[0] == 0  # the task's log-variance: no loss measured, no update
