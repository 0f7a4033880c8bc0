"""Configuration of concept encoders: every size and switch of every architecture lives here."""

from transformers import PretrainedConfig

ENCODER_LAYER_TYPES = ("perceiver", "bixt")
DECODER_QUERIES = ("token_and_position", "position")
CLASSIFIER_POOLINGS = ("weighted", "mean")
CONCEPT_LOSSES = (
    "orthogonality",
    "soft_orthogonality",
    "uniformity",
    "variance",
    "covariance",
    "vicreg",
    "combined",
)
CONCEPT_LOSS_WEIGHTINGS = ("none", "fixed", "kendall_gal")


class ConceptEncoderConfig(PretrainedConfig):
    r"""
    Configuration of a concept encoder: `concept_num` learned concept vectors read the `N` input tokens through
    cross-attention, so a layer costs O(C·N + C²) instead of O(N²). Defaults follow the seed's H512 L6 C128 runs.

    Args:
        vocab_size: size of the tokenizer's vocabulary.
        hidden_size: width of tokens, concepts and every attention block.
        num_hidden_layers: number of encoder layers.
        num_attention_heads: heads of every attention block; must divide `hidden_size`.
        intermediate_size: inner width of the gated feed-forward blocks.
        hidden_act: activation of the feed-forward gate (any `transformers.activations.ACT2FN` key).
        concept_num: number of concept vectors `C`.
        max_position_embeddings: longest sequence the learned positions cover.
        hidden_dropout_prob: dropout on every residual branch and embedding.
        attention_probs_dropout_prob: dropout on attention probabilities.
        layer_norm_eps: epsilon of every LayerNorm.
        initializer_range: standard deviation of the normal initialisation (the seed used 0.1).
        pad_token_id / mask_token_id: special token ids of the tokenizer.
        tie_word_embeddings: share the LM head's weight with the token embeddings.
        encoder_layer_type: `"perceiver"` (concepts read static token embeddings) or `"bixt"` (tokens also read the
            concepts in every layer, BiXT-style).
        bixt_token_ffn: give tokens their own feed-forward block in BiXT layers (about 3x the cost of a layer).
        decoder_query: queries of the perceiver MLM decoder: `"token_and_position"` or `"position"` (PosOnly).
        classifier_pooling: how classification heads pool concepts: `"weighted"` (learned softmax over concepts) or
            `"mean"`.
        classifier_dropout: dropout before classifiers; `hidden_dropout_prob` when `None`.
        concept_losses: regularisers on concept states, any of `CONCEPT_LOSSES`.
        concept_loss_weighting: `"none"` (computed and reported, not trained on), `"fixed"` (task + weight·Σ terms)
            or `"kendall_gal"` (learned uncertainty weights over the task loss and every term).
        concept_loss_weight: the weight of `"fixed"` weighting.
        concept_loss_log_var_limit: Kendall-Gal log-variances are clamped to `[-limit, limit]`.
        soft_orthogonality_margin: cosine margin τ below which `soft_orthogonality` does not penalise.
        uniformity_temperature: t in `uniformity = mean exp(-t·‖ĉᵢ − ĉⱼ‖²)`.
    """

    model_type = "concept_encoder"

    def __init__(
        self,
        vocab_size: int = 50368,
        hidden_size: int = 512,
        num_hidden_layers: int = 6,
        num_attention_heads: int = 8,
        intermediate_size: int = 2048,
        hidden_act: str = "gelu",
        concept_num: int = 128,
        max_position_embeddings: int = 512,
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.1,
        pad_token_id: int | None = 0,
        mask_token_id: int | None = None,
        tie_word_embeddings: bool = True,
        encoder_layer_type: str = "perceiver",
        bixt_token_ffn: bool = False,
        decoder_query: str = "token_and_position",
        classifier_pooling: str = "weighted",
        classifier_dropout: float | None = None,
        concept_losses: list[str] | tuple[str, ...] = (),
        concept_loss_weighting: str = "none",
        concept_loss_weight: float = 0.1,
        concept_loss_log_var_limit: float = 5.0,
        soft_orthogonality_margin: float = 0.1,
        uniformity_temperature: float = 2.0,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.concept_num = concept_num
        self.max_position_embeddings = max_position_embeddings
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.mask_token_id = mask_token_id
        self.encoder_layer_type = encoder_layer_type
        self.bixt_token_ffn = bixt_token_ffn
        self.decoder_query = decoder_query
        self.classifier_pooling = classifier_pooling
        self.classifier_dropout = classifier_dropout
        self.concept_losses = list(concept_losses)
        self.concept_loss_weighting = concept_loss_weighting
        self.concept_loss_weight = concept_loss_weight
        self.concept_loss_log_var_limit = concept_loss_log_var_limit
        self.soft_orthogonality_margin = soft_orthogonality_margin
        self.uniformity_temperature = uniformity_temperature
        super().__init__(pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings, **kwargs)
        self.validate_concept_encoder()

    def validate_concept_encoder(self):
        """Raise `ValueError` naming the field, its value and what is allowed, for any inconsistent setting."""
        for field in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "concept_num",
            "max_position_embeddings",
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ConceptEncoderConfig.{field}={value!r}: must be a positive integer.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"ConceptEncoderConfig.hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}: choose sizes where hidden_size % heads == 0."
            )
        for field in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, field)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"ConceptEncoderConfig.{field}={value!r}: must be in [0, 1).")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(
                f"ConceptEncoderConfig.classifier_dropout={self.classifier_dropout!r}: must be in [0, 1) or None."
            )
        for field, allowed in (
            ("encoder_layer_type", ENCODER_LAYER_TYPES),
            ("decoder_query", DECODER_QUERIES),
            ("classifier_pooling", CLASSIFIER_POOLINGS),
            ("concept_loss_weighting", CONCEPT_LOSS_WEIGHTINGS),
        ):
            value = getattr(self, field)
            if value not in allowed:
                raise ValueError(f"ConceptEncoderConfig.{field}={value!r}: must be one of {list(allowed)}.")
        unknown = [name for name in self.concept_losses if name not in CONCEPT_LOSSES]
        if unknown:
            raise ValueError(
                f"ConceptEncoderConfig.concept_losses has unknown names {unknown}: allowed are {list(CONCEPT_LOSSES)}."
            )
        if len(set(self.concept_losses)) != len(self.concept_losses):
            raise ValueError(f"ConceptEncoderConfig.concept_losses={self.concept_losses}: names must not repeat.")
        if self.concept_loss_weighting != "none" and not self.concept_losses:
            raise ValueError(
                f"ConceptEncoderConfig.concept_loss_weighting={self.concept_loss_weighting!r} needs at least one "
                f"name in concept_losses (allowed: {list(CONCEPT_LOSSES)})."
            )
        for field in ("concept_loss_weight", "concept_loss_log_var_limit", "uniformity_temperature"):
            value = getattr(self, field)
            if value <= 0 and not (field == "concept_loss_weight" and value == 0):
                raise ValueError(f"ConceptEncoderConfig.{field}={value!r}: must be positive.")
        if not 0.0 <= self.soft_orthogonality_margin < 1.0:
            raise ValueError(
                f"ConceptEncoderConfig.soft_orthogonality_margin={self.soft_orthogonality_margin!r}: must be in [0, 1)."
            )
        for field in ("pad_token_id", "mask_token_id"):
            value = getattr(self, field)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"ConceptEncoderConfig.{field}={value!r} is outside the vocabulary [0, {self.vocab_size}): "
                    "set vocab_size from the tokenizer (len(tokenizer))."
                )
