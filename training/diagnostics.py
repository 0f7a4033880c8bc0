"""Concept diagnostics: what the training scripts log, the model cards and the registry show, and the concept losses
measure with (`off_diagonal_cosines`). The model itself never calls them, so they do not ship to the Hub."""

import torch
import torch.nn.functional as F


def off_diagonal_cosines(concepts: torch.Tensor) -> torch.Tensor:
    """Cosines ĉᵢ·ĉⱼ of the C(C−1) ordered pairs i ≠ j of every example `[batch, C, hidden]`: `[batch, C*(C-1)]`."""
    unit = F.normalize(concepts, dim=-1)
    gram = unit @ unit.transpose(-1, -2)  # [batch, C, C]
    off_diagonal = ~torch.eye(gram.shape[-1], dtype=torch.bool, device=gram.device)
    return gram[:, off_diagonal]


@torch.no_grad()
def effective_rank(concepts: torch.Tensor) -> float:
    """The research log's "Eff. Rank": mean the concept states over the batch to one `[C, H]` matrix, then
    (sum of singular values) / (largest singular value). Identical concepts give 1, C orthonormal ones give C."""
    matrix = concepts.float().reshape(-1, *concepts.shape[-2:]).mean(dim=0)
    singular_values = torch.linalg.svdvals(matrix)
    return (singular_values.sum() / singular_values.max()).item()


@torch.no_grad()
def entropy_effective_rank(concepts: torch.Tensor) -> float:
    """Roy & Vetterli effective rank: exp of the entropy of the normalised singular values of each example's
    `[C, H]` concept matrix, averaged over the batch."""
    singular_values = torch.linalg.svdvals(concepts.float().reshape(-1, *concepts.shape[-2:]))  # [batch, min(C, H)]
    p = singular_values / singular_values.sum(dim=-1, keepdim=True)
    entropy = -(p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))).sum(dim=-1)
    return torch.exp(entropy).mean().item()


@torch.no_grad()
def mean_concept_cosine(concepts: torch.Tensor) -> float:
    """Mean absolute cosine between distinct concepts of the same example (0 = orthogonal, 1 = collapsed)."""
    return off_diagonal_cosines(concepts.float().reshape(-1, *concepts.shape[-2:])).abs().mean().item()


def format_effective_rank(rank: float, concept_num: int) -> str:
    """The research log's text form, e.g. `5.1 / 128 (4%)`, as the model card and the registry's "Eff. Rank" show it."""
    return f"{rank:.1f} / {concept_num} ({100 * rank / concept_num:.0f}%)"


class ConceptStatistics:
    """The three diagnostics above over any number of batches, as if the batches were one: the research log's
    effective rank of the mean `[C, H]` concept matrix of every example seen, and the per-example means of the
    entropy effective rank and the mean concept cosine."""

    def __init__(self):
        self.total, self.count, self.entropy_sum, self.cosine_sum = None, 0, 0.0, 0.0

    @torch.no_grad()
    def add(self, concepts: torch.Tensor) -> None:
        """Add one batch of concept states `[batch, C, H]`."""
        concepts = concepts.float()
        size = concepts.shape[0]
        self.total = concepts.sum(dim=0) if self.total is None else self.total + concepts.sum(dim=0)  # [C, H]
        self.count += size
        self.entropy_sum += entropy_effective_rank(concepts) * size
        self.cosine_sum += mean_concept_cosine(concepts) * size

    def metrics(self, prefix: str) -> dict[str, float]:
        """`{prefix}_concept_effective_rank`, `{prefix}_concept_entropy_effective_rank`, `{prefix}_concept_mean_cosine`."""
        if not self.count:
            raise ValueError("ConceptStatistics: no concepts were added (the evaluation data is empty).")
        return {
            f"{prefix}_concept_effective_rank": effective_rank(self.total / self.count),
            f"{prefix}_concept_entropy_effective_rank": self.entropy_sum / self.count,
            f"{prefix}_concept_mean_cosine": self.cosine_sum / self.count,
        }
