"""Concept encoders: C learned concept vectors read N tokens through cross-attention, so a layer costs O(C·N + C²).

Self-contained for Hub `trust_remote_code` loading: imports only torch, transformers and the configuration file.
"""

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.loss.loss_utils import ForSequenceClassificationLoss
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

try:  # inside a Hub checkpoint folder (trust_remote_code)
    from .configuration_concept_encoder import ConceptEncoderConfig
except ImportError:  # installed package: top-level modules
    from configuration_concept_encoder import ConceptEncoderConfig

IGNORE_INDEX = -100  # label of positions that carry no loss, as in every transformers MLM head
VICREG_EPS = 1e-4  # the epsilon inside VICReg's sqrt(Var + eps)


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class ConceptEncoderModelOutput(ModelOutput):
    """
    Args:
        last_hidden_state: final concept states `[batch, concepts, hidden]` (per concept, not per token).
        token_hidden_state: final token states `[batch, seq, hidden]`; BiXT layers only (perceiver tokens are static).
        hidden_states: concept states after the initial concepts and after every layer.
        attentions: concept self-attention weights `[batch, heads, concepts, concepts]` per layer.
        cross_attentions: concept-to-token attention weights `[batch, heads, concepts, seq]` per layer.
    """

    last_hidden_state: torch.FloatTensor | None = None
    token_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class ConceptEncoderHeadOutput(ModelOutput):
    """
    Output of every task head (MLM and classification).

    Args:
        loss: the optimised loss: task loss combined with the concept losses (training mode only).
        logits: `[batch, seq, vocab]` for MLM heads without labels; `[labelled positions, vocab]` with labels (only
            those positions reach the LM head); `[batch, num_labels]` for classifiers.
        task_loss: the task loss alone (training mode).
        concept_loss_terms: each configured concept loss by name (training mode).
        loss_weights: the current weight of the task loss and of each concept term (training mode).
        concept_states: final concept states `[batch, concepts, hidden]`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    task_loss: torch.FloatTensor | None = None
    concept_loss_terms: dict[str, torch.Tensor] | None = None
    loss_weights: dict[str, torch.Tensor] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Concept losses and diagnostics
# ----------------------------------------------------------------------------------------------------------------------


def _off_diagonal_cosines(concepts: torch.Tensor) -> torch.Tensor:
    """Cosines ĉᵢ·ĉⱼ of the C(C−1) ordered pairs i ≠ j of every example: `[batch, C*(C-1)]`."""
    unit = F.normalize(concepts, dim=-1)
    gram = unit @ unit.transpose(-1, -2)  # [batch, C, C]
    off_diagonal = ~torch.eye(gram.shape[-1], dtype=torch.bool, device=gram.device)
    return gram[:, off_diagonal]


def orthogonality_loss(concepts: torch.Tensor) -> torch.Tensor:
    """`mean (ĉᵢ·ĉⱼ)²` over the batch and the C(C−1) pairs i ≠ j: 0 for orthonormal concepts, 1 for identical ones."""
    return _off_diagonal_cosines(concepts).pow(2).mean()


def soft_orthogonality_loss(concepts: torch.Tensor, margin: float) -> torch.Tensor:
    """`mean relu(|ĉᵢ·ĉⱼ| − τ)²` over the batch and pairs i ≠ j: cosines within the margin τ cost nothing."""
    return F.relu(_off_diagonal_cosines(concepts).abs() - margin).pow(2).mean()


def uniformity_loss(concepts: torch.Tensor, temperature: float) -> torch.Tensor:
    """`mean exp(−t·‖ĉᵢ − ĉⱼ‖²)` over the batch and pairs i ≠ j (Wang & Isola), using ‖ĉᵢ − ĉⱼ‖² = 2 − 2ĉᵢ·ĉⱼ."""
    return torch.exp(-temperature * (2 - 2 * _off_diagonal_cosines(concepts))).mean()


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


def concept_loss_terms(concepts: torch.Tensor, config: ConceptEncoderConfig) -> dict[str, torch.Tensor]:
    """Every loss named in `config.concept_losses` on concept states `[batch, C, hidden]`.

    `vicreg` = variance + covariance; `combined` (the seed's) = variance + uniformity.
    """
    terms = {
        "orthogonality": lambda: orthogonality_loss(concepts),
        "soft_orthogonality": lambda: soft_orthogonality_loss(concepts, config.soft_orthogonality_margin),
        "uniformity": lambda: uniformity_loss(concepts, config.uniformity_temperature),
        "variance": lambda: variance_loss(concepts),
        "covariance": lambda: covariance_loss(concepts),
        "vicreg": lambda: variance_loss(concepts) + covariance_loss(concepts),
        "combined": lambda: variance_loss(concepts) + uniformity_loss(concepts, config.uniformity_temperature),
    }
    return {name: terms[name]() for name in config.concept_losses}


@torch.no_grad()
def effective_rank(concepts: torch.Tensor) -> float:
    """The seed log's "Eff. Rank": mean the concept states over the batch to one `[C, H]` matrix, then
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
    return _off_diagonal_cosines(concepts.float().reshape(-1, *concepts.shape[-2:])).abs().mean().item()


def format_effective_rank(rank: float, concept_num: int) -> str:
    """The seed log's text form, e.g. `5.1 / 128 (4%)`."""
    return f"{rank:.1f} / {concept_num} ({100 * rank / concept_num:.0f}%)"


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------------


def additive_key_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """`[batch, seq]` 1/0 mask → additive `[batch, 1, 1, seq]` mask for SDPA, or None when nothing is masked.

    Masked keys get the dtype's minimum rather than −inf, so a query whose keys are all masked still gets a finite
    (uniform) softmax instead of NaN.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    blocked = attention_mask[:, None, None, :] == 0
    return torch.zeros(blocked.shape, dtype=dtype, device=blocked.device).masked_fill(blocked, torch.finfo(dtype).min)


class ConceptEncoderAttention(nn.Module):
    """Multi-head attention of queries over a context (self-attention when the context is the queries).

    The q, k and v projections are the three row blocks of one `[3H, H]` parameter `qkv_proj`, applied as three
    matmuls: queries and context differ in cross-attention, and separate outputs keep the backward pass free of the
    stack-and-copy that splitting one fused output would cost on the N-token side. Heads are views
    (`[batch, heads, len, head_dim]`), never copies, before `F.scaled_dot_product_attention`.
    """

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_probs_dropout_prob
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def _project_heads(self, states: torch.Tensor, part: int) -> torch.Tensor:
        """Projection `part` (0 = q, 1 = k, 2 = v) of `[batch, len, hidden]` → `[batch, heads, len, head_dim]`."""
        hidden = states.shape[-1]
        rows = slice(part * hidden, (part + 1) * hidden)
        projected = F.linear(states, self.qkv_proj.weight[rows], self.qkv_proj.bias[rows])
        return projected.view(*states.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        context = hidden_states if context is None else context
        query = self._project_heads(hidden_states, 0)
        key, value = self._project_heads(context, 1), self._project_heads(context, 2)
        dropout = self.dropout if self.training else 0.0
        if output_attentions:  # eager path: only here are the weights materialised
            scores = query @ key.transpose(-1, -2) / math.sqrt(self.head_dim)
            if key_mask is not None:
                scores = scores + key_mask
            weights = scores.softmax(dim=-1)
            attended = F.dropout(weights, dropout, self.training) @ value
        else:
            weights = None
            attended = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, dropout_p=dropout)
        batch, _, length, _ = attended.shape
        attended = attended.transpose(1, 2).reshape(batch, length, -1)  # [batch, len, hidden]
        return self.out_proj(attended), weights


class ConceptEncoderFeedForward(nn.Module):
    """Gated feed-forward block (GEGLU with the default `hidden_act="gelu"`): `wo(act(gate) * up)`."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        self.wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate, up = self.wi(hidden_states).chunk(2, dim=-1)
        return self.wo(self.dropout(self.act(gate) * up))


class ConceptEncoderEmbeddings(nn.Module):
    """Token + learned absolute position embeddings. In perceiver layers these stay static: never normalised."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        self.token_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def positions(self, length: int) -> torch.Tensor:
        """Position embeddings `[length, hidden]`, with a clear error past the position limit."""
        limit = self.position_embeddings.num_embeddings
        if length > limit:
            raise ValueError(
                f"Sequence length {length} exceeds max_position_embeddings={limit}: truncate the input "
                f"(tokenizer(..., truncation=True, max_length={limit})) or build a config with more positions."
            )
        return self.position_embeddings.weight[:length]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        vocab_size = self.token_embeddings.num_embeddings
        if input_ids.numel() and (int(input_ids.max()) >= vocab_size or int(input_ids.min()) < 0):
            raise ValueError(
                f"input_ids hold ids outside the vocabulary [0, {vocab_size}): the tokenizer does not match the "
                "model; use the checkpoint's own tokenizer or set config.vocab_size = len(tokenizer)."
            )
        embeddings = self.token_embeddings(input_ids) + self.positions(input_ids.shape[1])
        return self.dropout(embeddings)  # [batch, seq, hidden]


class ConceptEncoderLayer(GradientCheckpointingLayer):
    """Perceiver layer: concepts ← cross-attention over tokens, concept self-attention, concept FFN (pre-LN).

    Tokens pass through unchanged, so the layer costs O(C·N + C²).
    """

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        self.cross_attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.cross_attention = ConceptEncoderAttention(config)
        self.self_attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attention = ConceptEncoderAttention(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = ConceptEncoderFeedForward(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def update_tokens(self, tokens: torch.Tensor, concepts: torch.Tensor, output_attentions: bool) -> torch.Tensor:
        """Perceiver tokens are static."""
        return tokens

    def forward(
        self,
        concepts: torch.Tensor,  # [batch, concepts, hidden]
        tokens: torch.Tensor,  # [batch, seq, hidden]
        key_mask: torch.Tensor | None = None,  # additive [batch, 1, 1, seq]
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        attended, cross_weights = self.cross_attention(
            self.cross_attention_norm(concepts), tokens, key_mask, output_attentions
        )
        concepts = concepts + self.dropout(attended)
        tokens = self.update_tokens(tokens, concepts, output_attentions)
        attended, self_weights = self.self_attention(self.self_attention_norm(concepts), None, None, output_attentions)
        concepts = concepts + self.dropout(attended)
        concepts = concepts + self.dropout(self.ffn(self.ffn_norm(concepts)))
        return concepts, tokens, cross_weights, self_weights


class BiConceptEncoderLayer(ConceptEncoderLayer):
    """BiXT layer: as the perceiver layer, but after concepts read the tokens, tokens read the updated concepts
    (residual, pre-LN), so tokens become contextual without O(N²). A token FFN is optional (`bixt_token_ffn`)."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__(config)
        self.token_attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.token_attention = ConceptEncoderAttention(config)
        if config.bixt_token_ffn:
            self.token_ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.token_ffn = ConceptEncoderFeedForward(config)
        else:
            self.token_ffn = None

    def update_tokens(self, tokens: torch.Tensor, concepts: torch.Tensor, output_attentions: bool) -> torch.Tensor:
        attended, _ = self.token_attention(self.token_attention_norm(tokens), concepts, None, False)
        tokens = tokens + self.dropout(attended)
        if self.token_ffn is not None:
            tokens = tokens + self.dropout(self.token_ffn(self.token_ffn_norm(tokens)))
        return tokens


class ConceptPooler(nn.Module):
    """Pools concept states `[batch, C, hidden]` to one vector `[batch, hidden]`: a learned softmax over concepts
    (`classifier_pooling="weighted"`) or their mean, then LayerNorm."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        self.scorer = nn.Linear(config.hidden_size, 1) if config.classifier_pooling == "weighted" else None
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, concepts: torch.Tensor) -> torch.Tensor:
        if self.scorer is None:
            pooled = concepts.mean(dim=1)
        else:
            weights = self.scorer(concepts).squeeze(-1).softmax(dim=-1)  # [batch, concepts]
            pooled = torch.einsum("bc,bch->bh", weights, concepts)
        return self.norm(pooled)


class ConceptEncoderLMHead(nn.Module):
    """Dense → activation → LayerNorm → vocabulary projection (tied to the token embeddings when configured)."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden_states))))


class PerceiverDecoder(nn.Module):
    """One cross-attention from per-position queries to the concepts, then an FFN: the perceiver MLM decoder."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = ConceptEncoderAttention(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = ConceptEncoderFeedForward(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, queries: torch.Tensor, concepts: torch.Tensor, selected: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`queries [batch, L, hidden]` → decoded states `[batch, L, hidden]`, or `[selected positions, hidden]`
        when `selected` (bool `[batch, L]`) is given: the position-wise FFN then runs on those positions only."""
        attended, _ = self.attention(self.attention_norm(queries), concepts)
        states = queries + self.dropout(attended)
        if selected is not None:
            states = states[selected]
        return states + self.dropout(self.ffn(self.ffn_norm(states)))


# ----------------------------------------------------------------------------------------------------------------------
# Pretrained models
# ----------------------------------------------------------------------------------------------------------------------


class ConceptEncoderPreTrainedModel(PreTrainedModel):
    """Weight initialisation, checkpoint format and Hub code for every concept encoder model."""

    config_class = ConceptEncoderConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["ConceptEncoderLayer", "BiConceptEncoderLayer"]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        """Auto classes map one config type to one class, so the installed package registers a default per Auto
        class (perceiver MLM, sequence classifier) and transformers prefers it to the checkpoint's `auto_map`. A
        checkpoint of a sibling under the same Auto class (weighted or PosOnly MLM, sentence pair) goes to the
        class named in its `config.architectures`."""
        for name in getattr(config, "architectures", None) or []:
            sibling = globals().get(name)
            auto_class = getattr(sibling, "_auto_class", None)
            if sibling is not cls and auto_class is not None and auto_class == cls._auto_class:
                return sibling.from_pretrained(pretrained_model_name_or_path, *model_args, config=config, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, config=config, **kwargs)

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)  # Linear/Embedding ~ N(0, initializer_range), zero biases, LayerNorm (1, 0)
        if isinstance(module, ConceptEncoderModel):
            init.normal_(module.concepts, mean=0.0, std=self.config.initializer_range)
        if getattr(module, "concept_loss_log_vars", None) is not None:
            init.zeros_(module.concept_loss_log_vars)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as a complete Hub repo: `auto_map` names every Auto class the checkpoint serves, not only this one."""
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map["AutoConfig"] = "configuration_concept_encoder.ConceptEncoderConfig"
        auto_map["AutoModel"] = "modeling_concept_encoder.ConceptEncoderModel"
        auto_map["AutoModelForSequenceClassification"] = (
            "modeling_concept_encoder.ConceptEncoderForSequenceClassificationPerceiver"
        )
        auto_map.setdefault(
            "AutoModelForMaskedLM",
            "modeling_concept_encoder."
            + (
                "ConceptEncoderForMaskedLMPerceiverPosOnly"
                if self.config.decoder_query == "position"
                else "ConceptEncoderForMaskedLMPerceiver"
            ),
        )
        if self._auto_class is not None:
            auto_map[self._auto_class] = f"modeling_concept_encoder.{type(self).__name__}"
        self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)


class ConceptEncoderModel(ConceptEncoderPreTrainedModel):
    """The concept encoder (AutoModel): `last_hidden_state` holds concept states `[batch, concept_num, hidden]`.

    Sentence embeddings need a pooling over concepts (see `ConceptPooler`); the sentence-transformers `Pooling`
    module assumes per-token states and does not apply.
    """

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__(config)
        self.embeddings = ConceptEncoderEmbeddings(config)
        self.concepts = nn.Parameter(torch.empty(config.concept_num, config.hidden_size))
        layer_class = BiConceptEncoderLayer if config.encoder_layer_type == "bixt" else ConceptEncoderLayer
        self.layers = nn.ModuleList(layer_class(config) for _ in range(config.num_hidden_layers))
        self.concept_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.token_embeddings

    def set_input_embeddings(self, embeddings: nn.Embedding):
        self.embeddings.token_embeddings = embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> ConceptEncoderModelOutput:
        output_attentions = bool(output_attentions)
        tokens = self.embeddings(input_ids)  # [batch, seq, hidden]
        key_mask = additive_key_mask(attention_mask, tokens.dtype)
        concepts = self.concepts.expand(input_ids.shape[0], -1, -1)  # [batch, concepts, hidden]
        hidden_states = [concepts] if output_hidden_states else None
        attentions, cross_attentions = ([], []) if output_attentions else (None, None)
        for layer in self.layers:
            concepts, tokens, cross_weights, self_weights = layer(concepts, tokens, key_mask, output_attentions)
            if output_hidden_states:
                hidden_states.append(concepts)
            if output_attentions:
                cross_attentions.append(cross_weights)
                attentions.append(self_weights)
        return ConceptEncoderModelOutput(
            last_hidden_state=self.concept_norm(concepts),
            token_hidden_state=tokens if self.config.encoder_layer_type == "bixt" else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            cross_attentions=tuple(cross_attentions) if output_attentions else None,
        )


class ConceptEncoderHeadModel(ConceptEncoderPreTrainedModel):
    """A shared encoder under a task head; combines the task loss with the configured concept losses.

    Kendall-Gal weighting learns one log-variance per term (task first, then `config.concept_losses`) in the
    parameter `concept_loss_log_vars`; it is soft-clamped to ±`concept_loss_log_var_limit` (limit·tanh(s/limit): the
    same values near 0, and unlike a hard clamp the gradient never vanishes, so a weight at the edge can come back)
    and must stay out of weight decay (the training scripts leave it out, like biases and norms).
    """

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__(config)
        self.encoder = ConceptEncoderModel(config)
        if config.concept_loss_weighting == "kendall_gal":
            self.concept_loss_log_vars = nn.Parameter(torch.zeros(1 + len(config.concept_losses)))
        else:
            self.concept_loss_log_vars = None

    def combine_losses(self, task_loss: torch.Tensor, concepts: torch.Tensor) -> dict:
        """`loss`, `task_loss`, `concept_loss_terms`, `loss_weights` for the head output (training mode only).

        - `none`: concept terms are reported, not trained on: loss = task;
        - `fixed`: loss = task + w·Σ terms;
        - `kendall_gal`: loss = Σᵢ ½·exp(−sᵢ)·Lᵢ + ½·sᵢ over the task loss and each term, sᵢ = log σᵢ².
        """
        if not self.training:
            return {"loss": task_loss}
        config = self.config
        terms = concept_loss_terms(concepts, config)
        if config.concept_loss_weighting == "none":
            terms = {name: term.detach() for name, term in terms.items()}
            return {"loss": task_loss, "task_loss": task_loss, "concept_loss_terms": terms or None}
        if config.concept_loss_weighting == "fixed":
            weight = torch.tensor(config.concept_loss_weight, device=task_loss.device)
            weights = {"task": torch.ones_like(weight), **{name: weight for name in terms}}
            loss = task_loss + weight * sum(terms.values())
        else:
            limit = config.concept_loss_log_var_limit
            log_vars = limit * torch.tanh(self.concept_loss_log_vars / limit)
            precisions = 0.5 * torch.exp(-log_vars)
            losses = torch.stack([task_loss, *terms.values()])
            loss = (precisions * losses + 0.5 * log_vars).sum()
            weights = dict(zip(["task", *terms], precisions.detach().unbind()))
        return {"loss": loss, "task_loss": task_loss, "concept_loss_terms": terms, "loss_weights": weights}


class ConceptEncoderForMaskedLM(ConceptEncoderHeadModel):
    """Shared MLM logic: decode per-position states from the concepts, LM head, cross-entropy.

    With labels only positions whose label is not -100 reach the LM head (sparse decoding); without labels the
    logits are dense `[batch, seq, vocab]` (so `pipeline("fill-mask")` works). The decoded length is
    `labels.shape[1]` when labels are given, which may exceed the encoder input (TSDAE deletion).
    """

    _tied_weights_keys = {"lm_head.decoder.weight": "encoder.embeddings.token_embeddings.weight"}

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__(config)
        self.lm_head = ConceptEncoderLMHead(config)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, embeddings: nn.Linear):
        self.lm_head.decoder = embeddings

    def decode(
        self, concepts: torch.Tensor, input_ids: torch.Tensor, length: int, selected: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-position states for `length` positions: `[batch, length, hidden]`, or `[selected, hidden]`."""
        raise NotImplementedError

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> ConceptEncoderHeadOutput:
        encoded = self.encoder(input_ids, attention_mask, output_attentions, output_hidden_states)
        concepts = encoded.last_hidden_state
        selected = labels != IGNORE_INDEX if labels is not None else None
        length = labels.shape[1] if labels is not None else input_ids.shape[1]
        logits = self.lm_head(self.decode(concepts, input_ids, length, selected))
        losses = {}
        if labels is not None:
            losses = self.combine_losses(F.cross_entropy(logits.float(), labels[selected]), concepts)
        return ConceptEncoderHeadOutput(
            logits=logits,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            cross_attentions=encoded.cross_attentions,
            **losses,
        )


class ConceptEncoderForMaskedLMWeighted(ConceptEncoderForMaskedLM):
    """`weighted_mlm`: each position n owns learned logits over the concepts; its state is Σ_c softmax(w[n])_c·c."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__(config)
        self.position_concept_logits = nn.Embedding(config.max_position_embeddings, config.concept_num)
        self.post_init()

    def decode(self, concepts, input_ids, length, selected):
        limit = self.position_concept_logits.num_embeddings
        if length > limit:
            raise ValueError(f"Cannot decode {length} positions: max_position_embeddings={limit}.")
        weights = self.position_concept_logits.weight[:length].softmax(dim=-1)  # [length, concepts]
        states = torch.einsum("lc,bch->blh", weights, concepts)  # [batch, length, hidden]
        return states[selected] if selected is not None else states


class ConceptEncoderForMaskedLMPerceiver(ConceptEncoderForMaskedLM):
    """`perceiver_mlm`: decoder queries = token embedding + position embedding (`decoder_query`), one
    cross-attention to the concepts + FFN, then the LM head; sparse decoding of the labelled positions."""

    def __init__(self, config: ConceptEncoderConfig):
        if "ConceptEncoderForMaskedLMWeighted" in (config.architectures or []):
            raise ValueError(
                "This checkpoint is a ConceptEncoderForMaskedLMWeighted: load it with that class or with "
                "AutoModelForMaskedLM.from_pretrained(path, trust_remote_code=True)."
            )
        super().__init__(config)
        self.decoder = PerceiverDecoder(config)
        self.post_init()

    def decode(self, concepts, input_ids, length, selected):
        embeddings = self.encoder.embeddings
        queries = embeddings.positions(length).expand(concepts.shape[0], -1, -1)  # [batch, length, hidden]
        if self.config.decoder_query == "token_and_position":
            if length != input_ids.shape[1]:
                raise ValueError(
                    f"decoder_query='token_and_position' decodes the input's own positions, but labels have "
                    f"{length} positions and input_ids {input_ids.shape[1]}: token-deleting objectives (TSDAE "
                    "delete mode) need ConceptEncoderForMaskedLMPerceiverPosOnly."
                )
            queries = queries + embeddings.token_embeddings(input_ids)
        return self.decoder(queries, concepts, selected)


class ConceptEncoderForMaskedLMPerceiverPosOnly(ConceptEncoderForMaskedLMPerceiver):
    """`perceiver_posonly_mlm` (and TSDAE): decoder queries are position embeddings only, with no input-token
    shortcut, so every prediction must come through the concepts; the loss covers every labelled position (TSDAE
    labels every non-pad position)."""

    def __init__(self, config: ConceptEncoderConfig):
        config = copy.deepcopy(config)  # the caller's config keeps its own decoder_query
        config.decoder_query = "position"
        super().__init__(config)


class ConceptEncoderForSequenceClassificationPerceiver(ConceptEncoderHeadModel):
    """Concept pooling (`classifier_pooling`) → dropout → linear classifier. Regression when `num_labels == 1`,
    single- or multi-label classification by `problem_type`, as in BERT heads."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__(config)
        self.pooler = ConceptPooler(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> ConceptEncoderHeadOutput:
        encoded = self.encoder(input_ids, attention_mask, output_attentions, output_hidden_states)
        concepts = encoded.last_hidden_state
        logits = self.classifier(self.dropout(self.pooler(concepts)))  # [batch, num_labels]
        losses = {}
        if labels is not None:
            losses = self.combine_losses(ForSequenceClassificationLoss(labels, logits, self.config), concepts)
        return ConceptEncoderHeadOutput(
            logits=logits,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            cross_attentions=encoded.cross_attentions,
            **losses,
        )


class ConceptEncoderForSentencePairClassification(ConceptEncoderHeadModel):
    """Each sentence is encoded separately by the shared encoder and pooled to u and v; a linear classifier reads
    `[u, v, |u−v|, u·v]`. Regression (STS-B) when `num_labels == 1`."""

    def __init__(self, config: ConceptEncoderConfig):
        super().__init__(config)
        self.pooler = ConceptPooler(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(4 * config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        input_ids_b: torch.Tensor | None = None,
        attention_mask_b: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> ConceptEncoderHeadOutput:
        if input_ids_b is None:
            raise ValueError("ConceptEncoderForSentencePairClassification needs input_ids_b (the second sentence).")
        concepts_a = self.encoder(input_ids, attention_mask).last_hidden_state
        concepts_b = self.encoder(input_ids_b, attention_mask_b).last_hidden_state
        u, v = self.pooler(concepts_a), self.pooler(concepts_b)  # [batch, hidden] each
        features = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)  # [batch, 4 * hidden]
        logits = self.classifier(self.dropout(features))
        losses = {}
        if labels is not None:
            task_loss = ForSequenceClassificationLoss(labels, logits, self.config)
            losses = self.combine_losses(task_loss, torch.cat([concepts_a, concepts_b]))
        return ConceptEncoderHeadOutput(logits=logits, **losses)


# ----------------------------------------------------------------------------------------------------------------------
# Registration: Hub `auto_map` (trust_remote_code) and local Auto classes (installed package)
# ----------------------------------------------------------------------------------------------------------------------

ConceptEncoderConfig.register_for_auto_class()
ConceptEncoderModel.register_for_auto_class("AutoModel")
for _mlm_class in (
    ConceptEncoderForMaskedLMWeighted,
    ConceptEncoderForMaskedLMPerceiver,
    ConceptEncoderForMaskedLMPerceiverPosOnly,
):
    _mlm_class.register_for_auto_class("AutoModelForMaskedLM")
for _classifier_class in (ConceptEncoderForSequenceClassificationPerceiver, ConceptEncoderForSentencePairClassification):
    _classifier_class.register_for_auto_class("AutoModelForSequenceClassification")

# Only the installed top-level module registers: a copy loaded as remote code (package `transformers_modules.<repo>`)
# would otherwise take over the Auto classes, and every later checkpoint in the process would load with its classes.
if not __package__:
    try:
        AutoConfig.register(ConceptEncoderConfig.model_type, ConceptEncoderConfig)
        AutoModel.register(ConceptEncoderConfig, ConceptEncoderModel)
        AutoModelForMaskedLM.register(ConceptEncoderConfig, ConceptEncoderForMaskedLMPerceiver)
        AutoModelForSequenceClassification.register(
            ConceptEncoderConfig, ConceptEncoderForSequenceClassificationPerceiver
        )
    except ValueError:  # already registered (module imported twice)
        pass
