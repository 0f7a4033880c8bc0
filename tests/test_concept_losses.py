"""Concept losses, loss weighting and concept diagnostics on tensors whose answers are known by hand."""

import math

import pytest
import torch
from conftest import tiny_config

from concept_encoder.modeling_concept_encoder import ConceptEncoderForMaskedLM
from concept_encoder.training.diagnostics import (
    effective_rank,
    entropy_effective_rank,
    format_effective_rank,
    mean_concept_cosine,
)
from concept_encoder.training.losses import (
    ConceptLoss,
    ConceptLossArguments,
    concept_loss_terms,
    covariance_loss,
    orthogonality_loss,
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


def test_composite_terms_are_sums_of_their_parts():
    concepts = torch.randn(3, C, H, generator=torch.Generator().manual_seed(2))
    arguments = ConceptLossArguments(concept_losses=["vicreg", "combined", "soft_orthogonality", "t_regs"])
    terms = concept_loss_terms(concepts, arguments)
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


def mlm_model() -> ConceptEncoderForMaskedLM:
    torch.manual_seed(0)
    return ConceptEncoderForMaskedLM(tiny_config())


def mlm_batch(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 200, (4, 12), generator=generator)
    labels = torch.full_like(input_ids, -100)
    labels[:, 2:6] = input_ids[:, 2:6]
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def concept_loss(**arguments) -> ConceptLoss:
    return ConceptLoss(ConceptLossArguments(concept_losses=["orthogonality", "vicreg"], **arguments))


def test_the_model_returns_its_task_loss_and_the_concept_states_it_read_in_training_only():
    model = mlm_model().train()
    output = model(**mlm_batch())
    assert output.concept_states.shape == (4, model.config.concept_num, model.config.hidden_size)
    assert output.concept_states.requires_grad  # a regulariser on them trains the encoder
    model.eval()
    assert model(**mlm_batch()).concept_states is None
    assert not hasattr(model, "concept_loss_log_vars")  # training state is not a model weight


def test_fixed_weighting_adds_weighted_terms():
    output = mlm_model().train()(**mlm_batch())
    loss, parts = concept_loss(concept_loss_weighting="fixed", concept_loss_weight=0.25)(
        output.loss, output.concept_states
    )
    terms = concept_loss_terms(output.concept_states, ConceptLossArguments(concept_losses=["orthogonality", "vicreg"]))
    torch.testing.assert_close(
        loss, output.loss + 0.25 * (terms["orthogonality"] + terms["vicreg"]), atol=1e-5, rtol=1e-4
    )
    assert {name: float(value) for name, value in parts.items() if name.startswith("loss_weight/")} == {
        "loss_weight/task": 1.0,
        "loss_weight/orthogonality": 0.25,
        "loss_weight/vicreg": 0.25,
    }
    assert terms["orthogonality"].requires_grad and not parts["concept_loss/orthogonality"].requires_grad


def test_the_fixed_weight_warms_up_linearly_then_stays():
    warmed = concept_loss(concept_loss_weighting="fixed", concept_loss_weight=1.0, concept_loss_warmup_steps=4)
    assert [warmed.weight_at(step) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert concept_loss(concept_loss_weighting="fixed", concept_loss_weight=0.5).weight_at(0) == 0.5


def test_none_weighting_reports_terms_but_trains_the_task_only():
    output = mlm_model().train()(**mlm_batch())
    loss, parts = concept_loss(concept_loss_weighting="none")(output.loss, output.concept_states)
    assert loss is output.loss
    assert set(parts) == {"concept_loss/orthogonality", "concept_loss/vicreg"}
    assert not any(term.requires_grad for term in parts.values())


def test_kendall_gal_log_variances_stay_clamped():
    model = mlm_model().train()
    weighting = concept_loss(concept_loss_weighting="kendall_gal", concept_loss_log_var_limit=2.0)
    optimizer = torch.optim.SGD([weighting.log_vars], lr=50.0)
    for step in range(20):
        optimizer.zero_grad()
        output = model(**mlm_batch(step))
        loss, parts = weighting(output.loss, output.concept_states)
        loss.backward()
        if step == 0:  # every log-variance (task and both terms) learns
            assert weighting.log_vars.grad.abs().min() > 0
        optimizer.step()
        weights = torch.stack([value for name, value in parts.items() if name.startswith("loss_weight/")])
        assert ((weights >= 0.5 * math.exp(-2.0) - 1e-6) & (weights <= 0.5 * math.exp(2.0) + 1e-6)).all()
        assert torch.isfinite(loss)
    assert weighting.log_vars.detach().abs().max() > 2.0  # pushed past the limit; only the clamp is used


def test_kendall_gal_is_the_uncertainty_weighting_formula():
    output = mlm_model().train()(**mlm_batch())
    weighting = concept_loss(concept_loss_weighting="kendall_gal")
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([0.3, -0.2, 7.0]))
    loss, parts = weighting(output.loss, output.concept_states)
    terms = torch.stack([output.loss, parts["concept_loss/orthogonality"], parts["concept_loss/vicreg"]])
    limit = weighting.arguments.concept_loss_log_var_limit
    s = limit * torch.tanh(weighting.log_vars / limit)  # the soft clamp
    torch.testing.assert_close(loss, (0.5 * torch.exp(-s) * terms + 0.5 * s).sum(), atol=1e-5, rtol=1e-4)
    loss.backward()
    assert weighting.log_vars.grad.abs().min() > 0


@pytest.mark.parametrize("weighting", ["none", "fixed", "kendall_gal"])
def test_a_batch_without_labelled_positions_gives_zero_task_loss_and_zero_task_gradient(weighting):
    """0.1.0: cross-entropy over no masked token is NaN, which Kendall-Gal weighting spread into every weight."""
    model = mlm_model().train()
    combine = ConceptLoss(ConceptLossArguments(concept_losses=["variance"], concept_loss_weighting=weighting))
    input_ids = torch.randint(5, 200, (1, 6))
    output = model(input_ids, labels=torch.full_like(input_ids, -100))
    loss, _ = combine(output.loss, output.concept_states, task_present=False)
    assert output.loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    gradients = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in gradients.values())
    head = [model.lm_head.dense.weight.grad, model.lm_head.decoder.bias.grad]  # used by the task loss alone
    assert all(grad is None or not grad.any() for grad in head)
    if weighting == "kendall_gal":
        assert combine.log_vars.grad[0] == 0  # the task's log-variance: no loss measured, no update


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(concept_losses=["orthogonal"]), "soft_orthogonality"),
        (dict(concept_losses=["variance", "variance"]), "repeat"),
        (dict(concept_losses=["variance"], concept_loss_weighting="learned"), "kendall_gal"),
        (dict(concept_loss_weighting="fixed"), "needs at least one name in --concept_losses"),
        (dict(concept_losses=["variance"], concept_loss_weight=-0.1), "--concept_loss_weight -0.1: must be >= 0"),
        (dict(concept_loss_log_var_limit=0.0), "--concept_loss_log_var_limit 0.0: must be positive"),
        (dict(uniformity_temperature=0.0), "--uniformity_temperature 0.0: must be positive"),
        (dict(soft_orthogonality_margin=1.0), "in \\[0, 1\\)"),
        (dict(concept_losses=["t_regs"], concept_loss_warmup_steps=10), "warms up the fixed weight"),
    ],
)
def test_bad_concept_loss_arguments_name_the_flag(arguments, message):
    with pytest.raises(ValueError, match=message):
        ConceptLossArguments(**arguments)
