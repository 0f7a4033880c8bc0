"""Training losses of concept encoders that are not the task's own: regularisers on the concept states, their weighting
(fixed, warmed up, or Kendall-Gal's learned uncertainty weights) and what they are applied with.

They belong to a training run, not to a checkpoint: `ConceptTrainer.compute_loss` applies a `ConceptLoss` built from
`ConceptLossArguments` (`run_pretraining.py`'s concept-loss flags) to the concept states a head returns in training mode
(`concept_states`), and logs each part. The Hub model computes its task loss only, and its config holds no loss setting.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from concept_encoder.training.diagnostics import off_diagonal_cosines

VICREG_EPS = 1e-4  # the epsilon inside VICReg's sqrt(Var + eps)
T_REGS_EPS = 1e-8  # inside T-REGS' sqrt(‖ĉᵢ − ĉⱼ‖² + eps): a finite gradient when two concepts coincide
CONCEPT_LOSS_WEIGHTINGS = ("none", "fixed", "kendall_gal")
CONCEPT_LOSSES = (
    "orthogonality",
    "soft_orthogonality",
    "uniformity",
    "variance",
    "covariance",
    "vicreg",
    "combined",
    "t_regs",
)


def orthogonality_loss(concepts: torch.Tensor) -> torch.Tensor:
    """`mean (ĉᵢ·ĉⱼ)²` over the batch and the C(C−1) pairs i ≠ j: 0 for orthonormal concepts, 1 for identical ones."""
    return off_diagonal_cosines(concepts).pow(2).mean()


def soft_orthogonality_loss(concepts: torch.Tensor, margin: float) -> torch.Tensor:
    """`mean relu(|ĉᵢ·ĉⱼ| − τ)²` over the batch and pairs i ≠ j: cosines within the margin τ cost nothing."""
    return F.relu(off_diagonal_cosines(concepts).abs() - margin).pow(2).mean()


def uniformity_loss(concepts: torch.Tensor, temperature: float) -> torch.Tensor:
    """`mean exp(−t·‖ĉᵢ − ĉⱼ‖²)` over the batch and pairs i ≠ j (Wang & Isola), using ‖ĉᵢ − ĉⱼ‖² = 2 − 2ĉᵢ·ĉⱼ."""
    return torch.exp(-temperature * (2 - 2 * off_diagonal_cosines(concepts))).mean()


def variance_loss(concepts: torch.Tensor) -> torch.Tensor:
    """VICReg variance: `mean_h relu(1 − √(Var_h + 1e-4))`, Var over all batch·C concept rows; 0 when every std ≥ 1."""
    rows = concepts.reshape(-1, concepts.shape[-1])  # [batch * C, hidden]
    return F.relu(1 - torch.sqrt(rows.var(dim=0) + VICREG_EPS)).mean()


def covariance_loss(concepts: torch.Tensor) -> torch.Tensor:
    """VICReg covariance: Σ of squared off-diagonal entries of the H×H covariance of the batch·C rows, divided by H."""
    rows = concepts.reshape(-1, concepts.shape[-1])
    rows = rows - rows.mean(dim=0)
    covariance = rows.T @ rows / (rows.shape[0] - 1)  # [hidden, hidden]
    return (covariance.pow(2).sum() - covariance.diagonal().pow(2).sum()) / rows.shape[-1]


def t_regs_loss(concepts: torch.Tensor) -> torch.Tensor:
    """T-REGS spread (Mordacq et al. 2025), nearest-neighbour form: `−mean_i min_{j≠i} ‖ĉᵢ − ĉⱼ‖` over the batch and
    the C unit-normalised concepts of each example (distances from ‖ĉᵢ − ĉⱼ‖² = 2 − 2ĉᵢ·ĉⱼ).

    T-REGS maximises the length of the minimum spanning tree of the embeddings; every MST edge of a point is at least
    its nearest-neighbour distance, so the mean nearest-neighbour distance is MrCogito's cheap O(C²) stand-in.
    −√2 for orthonormal concepts, 0 for identical ones; unlike `uniformity` it costs a concept only its closest
    rival, so concepts spread until each has room, not until all pairs are far apart.
    """
    unit = F.normalize(concepts, dim=-1)
    squared = (2 - 2 * unit @ unit.transpose(-1, -2)).clamp_min(0)  # [batch, C, C]
    self_pairs = torch.eye(squared.shape[-1], dtype=torch.bool, device=squared.device)
    distances = (squared + T_REGS_EPS).sqrt().masked_fill(self_pairs, math.inf)
    return -distances.min(dim=-1).values.mean()


def concept_loss_terms(concepts: torch.Tensor, arguments: "ConceptLossArguments") -> dict[str, torch.Tensor]:
    """Every loss named in `arguments.concept_losses` on concept states `[batch, C, hidden]`.

    `vicreg` = variance + covariance; `combined` (MrCogito's) = variance + uniformity.
    """
    temperature = arguments.uniformity_temperature
    terms = {
        "orthogonality": lambda: orthogonality_loss(concepts),
        "soft_orthogonality": lambda: soft_orthogonality_loss(concepts, arguments.soft_orthogonality_margin),
        "uniformity": lambda: uniformity_loss(concepts, temperature),
        "variance": lambda: variance_loss(concepts),
        "covariance": lambda: covariance_loss(concepts),
        "vicreg": lambda: variance_loss(concepts) + covariance_loss(concepts),
        "combined": lambda: variance_loss(concepts) + uniformity_loss(concepts, temperature),
        "t_regs": lambda: t_regs_loss(concepts),
    }
    return {name: terms[name]() for name in arguments.concept_losses}


@dataclass
class ConceptLossArguments:
    """The concept regularisers of a training run and how they join the task loss (`run_pretraining.py` flags)."""

    concept_losses: list[str] = field(
        default_factory=list,
        metadata={"help": f"Regularisers on the concept states, any of {list(CONCEPT_LOSSES)} (e.g. 'combined')."},
    )
    concept_loss_weighting: str = field(
        default="none",
        metadata={
            "help": "'none' (the terms are logged, not trained on), 'fixed' (task + weight·Σ terms) or 'kendall_gal' "
            "(learned uncertainty weights over the task and every term)."
        },
    )
    concept_loss_weight: float = field(default=0.1, metadata={"help": "The weight of 'fixed' weighting."})
    concept_loss_warmup_steps: int = field(
        default=0,
        metadata={"help": "'fixed' weighting: the weight rises linearly from w/N to w over the first N steps."},
    )
    concept_loss_log_var_limit: float = field(
        default=5.0,
        metadata={"help": "'kendall_gal': log-variances are soft-clamped to (-limit, limit), limit·tanh(s/limit)."},
    )
    soft_orthogonality_margin: float = field(
        default=0.1, metadata={"help": "The cosine margin τ below which 'soft_orthogonality' does not penalise."}
    )
    uniformity_temperature: float = field(
        default=2.0, metadata={"help": "t in uniformity = mean exp(-t·‖ĉᵢ − ĉⱼ‖²) ('uniformity', 'combined')."}
    )

    def __post_init__(self):
        unknown = [name for name in self.concept_losses if name not in CONCEPT_LOSSES]
        if unknown:
            raise ValueError(f"--concept_losses has unknown names {unknown}: allowed are {list(CONCEPT_LOSSES)}.")
        if len(set(self.concept_losses)) != len(self.concept_losses):
            raise ValueError(f"--concept_losses {' '.join(self.concept_losses)}: names must not repeat.")
        if self.concept_loss_weighting not in CONCEPT_LOSS_WEIGHTINGS:
            raise ValueError(
                f"--concept_loss_weighting {self.concept_loss_weighting!r}: must be one of {list(CONCEPT_LOSS_WEIGHTINGS)}."
            )
        if self.concept_loss_weighting != "none" and not self.concept_losses:
            raise ValueError(
                f"--concept_loss_weighting {self.concept_loss_weighting} needs at least one name in --concept_losses "
                f"(allowed: {list(CONCEPT_LOSSES)})."
            )
        if self.concept_loss_weight < 0:
            raise ValueError(f"--concept_loss_weight {self.concept_loss_weight}: must be >= 0.")
        for name in ("concept_loss_log_var_limit", "uniformity_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} {getattr(self, name)}: must be positive.")
        if not 0.0 <= self.soft_orthogonality_margin < 1.0:
            raise ValueError(f"--soft_orthogonality_margin {self.soft_orthogonality_margin}: must be in [0, 1).")
        if self.concept_loss_warmup_steps < 0:
            raise ValueError(f"--concept_loss_warmup_steps {self.concept_loss_warmup_steps}: must be >= 0.")
        if self.concept_loss_warmup_steps and self.concept_loss_weighting != "fixed":
            raise ValueError(
                f"--concept_loss_warmup_steps {self.concept_loss_warmup_steps} warms up the fixed weight, but "
                f"--concept_loss_weighting is {self.concept_loss_weighting!r}: use 'fixed' or drop the warm-up."
            )

    def describe(self) -> str:
        """The run summary's text, e.g. `combined + fixed=0.1`, `t_regs (logged only)`, `none`."""
        if not self.concept_losses:
            return "none"
        names = " + ".join(self.concept_losses)
        if self.concept_loss_weighting == "none":
            return f"{names} (logged only)"
        if self.concept_loss_weighting == "fixed":
            return f"{names} + fixed={self.concept_loss_weight:g}"
        return f"{names} + {self.concept_loss_weighting}"


class ConceptLoss(nn.Module):
    """The task loss combined with the concept regularisers of `ConceptLossArguments`:

    - `none`: the terms are reported, not trained on: loss = task;
    - `fixed`: loss = task + w·Σ terms, w rising linearly from w/N to w over the first N = `concept_loss_warmup_steps`
      optimizer steps;
    - `kendall_gal`: loss = Σᵢ ½·exp(−sᵢ)·Lᵢ + ½·sᵢ over the task loss and each term, sᵢ = log σᵢ² learned
      (`log_vars`, task first, initialised at 0) and soft-clamped to ±limit (limit·tanh(s/limit): the same values near
      0, and unlike a hard clamp the gradient never vanishes, so a weight at the edge can come back).

    The log-variances are training state, not model weights: the trainer optimises them without weight decay (which
    would pull every weight ½·exp(−sᵢ) back to ½ whatever the data) and keeps them in its checkpoints for resuming.
    """

    def __init__(self, arguments: ConceptLossArguments):
        super().__init__()
        self.arguments = arguments
        kendall_gal = arguments.concept_loss_weighting == "kendall_gal"  # with a term: ConceptLossArguments checks it
        self.log_vars = nn.Parameter(torch.zeros(1 + len(arguments.concept_losses))) if kendall_gal else None

    def weight_at(self, step: int) -> float:
        """The fixed weight for optimizer step `step` (0-based), warmed up as the class docstring says."""
        warmup = self.arguments.concept_loss_warmup_steps
        return self.arguments.concept_loss_weight * (min(1.0, (step + 1) / warmup) if warmup else 1.0)

    def forward(
        self, task_loss: torch.Tensor, concepts: torch.Tensor, step: int = 0, task_present: bool = True
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`(loss, parts)`: the combined loss, and its detached parts for the log (`concept_loss/<name>` for each term,
        `loss_weight/<name>` for each weight, `loss_weight/task` included). `task_present=False` (a batch without a
        labelled position, whose task loss is 0) leaves the task's Kendall-Gal term out, so its log-variance gets no
        gradient from a loss that was not measured."""
        arguments = self.arguments
        terms = concept_loss_terms(concepts, arguments)  # concepts: [batch, C, hidden]
        parts = {f"concept_loss/{name}": term.detach() for name, term in terms.items()}
        if arguments.concept_loss_weighting == "none":
            return task_loss, parts
        if arguments.concept_loss_weighting == "fixed":
            weight = self.weight_at(step)
            weights = {"task": 1.0, **dict.fromkeys(terms, weight)}
            loss = task_loss + weight * sum(terms.values())
        else:
            limit = arguments.concept_loss_log_var_limit
            log_vars = limit * torch.tanh(self.log_vars / limit)
            precisions = 0.5 * torch.exp(-log_vars)
            losses = torch.stack([task_loss, *terms.values()])
            present = torch.ones_like(losses)
            present[0] = float(task_present)
            loss = (present * (precisions * losses + 0.5 * log_vars)).sum()
            weights = dict(zip(["task", *terms], precisions.detach().unbind()))
        parts.update({f"loss_weight/{name}": torch.as_tensor(weight).detach() for name, weight in weights.items()})
        return loss, parts
