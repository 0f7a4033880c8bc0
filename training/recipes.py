"""Named training recipes: every recipe this package runs by name, defined once.

A `Recipe` is typed: `config` holds `ConceptEncoderConfig` fields (sizes and switches), `arguments` the fields of
`run_pretraining.py`'s argument dataclasses (objective, collator and loss settings, teacher, training schedule).
`run_pretraining.py --recipe NAME` (or `"recipe": NAME` in a `.json` arguments file) takes a recipe's arguments as
defaults, so any flag given explicitly wins, and its `config` under `--config_overrides` (whose own keys win). The
study, the demo, the benchmarks and the tests import recipes from here, and the study its sizes (`BUDGETS`) and the
distillation study its rows (`DISTILL_STUDY_ROWS`); `RESEARCH.md` holds the measurements behind each.
"""

from dataclasses import dataclass, field

from concept_encoder.configuration_concept_encoder import ConceptEncoderConfig


@dataclass(frozen=True)
class Recipe:
    """One named recipe: what it is for, the config fields it sets and the `run_pretraining.py` arguments it sets."""

    name: str
    description: str
    config: dict = field(default_factory=dict)
    arguments: dict = field(default_factory=dict)

    def __post_init__(self):
        unknown = sorted(set(self.config) - set(ConceptEncoderConfig().to_dict()))
        if unknown:
            raise ValueError(f"Recipe {self.name!r}: {unknown} are not ConceptEncoderConfig fields.")

    def config_overrides(self, overrides: str | None = None) -> str:
        """The recipe's config as a `--config_overrides` string, with `overrides` (`key=value,...`) merged over it."""
        values = {
            key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in self.config.items()
        }
        for item in filter(None, (part.strip() for part in (overrides or "").split(","))):
            key, _, value = item.partition("=")
            values[key.strip()] = value.strip()
        return ",".join(f"{key}={value}" for key, value in values.items())


# The distilled student: all-MiniLM-L6-v2's width, tokenizer and frozen word-piece embeddings under a 2-layer,
# 16-concept encoder, trained on cosine + relational distillation (RESEARCH.md, "Distillation"). Its classifiers pool
# by the mean, the sentence vector distillation trained, rather than by a new, untrained pooler.
DISTILL_STUDENT = {
    "classifier_pooling": "mean",
    "hidden_size": 384,
    "num_hidden_layers": 2,
    "num_attention_heads": 6,
    "intermediate_size": 1024,
    "concept_num": 16,
    "max_position_embeddings": 512,
}

DISTILL_ARGUMENTS = {
    "objective": "distill",
    "init_embeddings_from": "teacher",
    "freeze_token_embeddings": True,
    "distill_cosine_weight": 1.0,
    "distill_relational_weight": 1.0,
    "max_seq_length": 128,
    "per_device_train_batch_size": 64,
    "learning_rate": 2e-3,
    "warmup_steps": 0.05,  # a ratio of the steps (transformers 5)
    "weight_decay": 0.01,
    "max_steps": 3000,
    "logging_steps": 100,
    "save_steps": 1000,
}
# T-REGS (nearest-neighbour spread of the concepts) at fixed weight 1, warmed up over 100 steps
T_REGS = {
    "concept_losses": ["t_regs"],
    "concept_loss_weighting": "fixed",
    "concept_loss_weight": 1.0,
    "concept_loss_warmup_steps": 100,
}

# the research log's MLM rows: each `--model_type` and the decoder it trains through
MRCOGITO_MLM_ROWS = {
    "perceiver_mlm": "MrCogito's perceiver decoder",
    "weighted_mlm": "MrCogito's weighted decoder",
    "perceiver_posonly_mlm": "the position-only perceiver decoder",
}
# the research log's concept-loss rows: MrCogito's `combined` (VICReg variance + uniformity) on the perceiver MLM
COMBINED = {"model_type": "perceiver_mlm", "concept_losses": ["combined"]}

RECIPES = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "bert_mlm",
            "The baseline: a transformers BERT MLM of the concept encoder's width, depth, heads and FFN parameter count, "
            "through the same data, tokenizer, collator and schedule.",
            arguments={"model_type": "bert_mlm"},
        ),
        *(
            Recipe(model_type, f"MLM through {decoder} (the research log's row).", arguments={"model_type": model_type})
            for model_type, decoder in MRCOGITO_MLM_ROWS.items()
        ),
        Recipe(
            "perceiver_mlm_kendall_gal",
            "Perceiver MLM + the `combined` concept loss under Kendall-Gal weighting (the research log's row: it muted the "
            "MLM loss and GLUE crashed).",
            arguments={**COMBINED, "concept_loss_weighting": "kendall_gal"},
        ),
        Recipe(
            "perceiver_mlm_fixed_0.1",
            "Perceiver MLM + the `combined` concept loss at fixed weight 0.1 (the research log's row: it did not stop "
            "the collapse).",
            arguments={**COMBINED, "concept_loss_weighting": "fixed", "concept_loss_weight": 0.1},
        ),
        Recipe(
            "tsdae_posonly",
            "TSDAE denoising through the position-only perceiver decoder (the research log's TSDAE rows).",
            arguments={"model_type": "perceiver_posonly_mlm", "objective": "tsdae", "line_by_line": True},
        ),
        Recipe(
            "tsdae_posonly_tregs",
            "TSDAE PosOnly + T-REGS at fixed weight 1 warmed up over 100 steps: the only self-supervised recipe that "
            "keeps the concepts un-collapsed (rank 28.5 / 32 vs 3.0); not better than random init after fine-tuning.",
            arguments={"model_type": "perceiver_posonly_mlm", "objective": "tsdae", "line_by_line": True, **T_REGS},
        ),
        Recipe(
            "tsdae_posonly_bixt",
            "TSDAE PosOnly on BiXT layers (tokens also read the concepts; the research log's TSDAE row).",
            arguments={
                "model_type": "perceiver_posonly_mlm",
                "objective": "tsdae",
                "line_by_line": True,
                "encoder_layer_type": "bixt",
            },
        ),
        Recipe(
            "distill_minilm",
            "Distil all-MiniLM-L6-v2 into an H384 L2 C16 concept encoder that starts from the teacher's tokenizer and "
            "frozen word-piece embeddings (cosine + relational loss, WikiText sentences): the package's sentence "
            "encoder that carries meaning. Its meaning comes from the teacher.",
            config=DISTILL_STUDENT,
            arguments=DISTILL_ARGUMENTS,
        ),
        Recipe(
            "distill_minilm_tregs",
            "distill_minilm + T-REGS: the same zero-shot STS at un-collapsed concepts (effective rank 14.7 / 16 vs 3.5, "
            "one seed; RESEARCH.md). Its meaning comes from the teacher.",
            config=DISTILL_STUDENT,
            arguments={**DISTILL_ARGUMENTS, **T_REGS},
        ),
    )
}


@dataclass
class Budget:
    """Sizes and steps of one size of `scripts/study.py`; every row (recipe) of the study gets the same."""

    sizes: dict
    vocab_size: int
    steps: int
    batch_size: int
    max_seq_length: int
    learning_rate: float
    warmup_steps: int
    eval_steps: int
    logging_steps: int
    pretrain_lines: int | None  # first N lines of the training text (None: all)
    max_eval_samples: int  # pretraining validation documents
    glue_train_samples: int | None  # per task (None: all)
    glue_eval_samples: int | None
    glue_epochs: float
    glue_batch_size: int
    glue_learning_rate: float  # rows trained at this size (pretrained and random init)
    reference_learning_rate: float  # the pretrained reference: below its own pretraining lr, or fine-tuning wrecks it
    seeds: str
    zero_shot_pairs: int | None  # per benchmark (None: all)
    dataset: str = "wikitext-2"  # or a Hub dataset name (mrcogito budget)
    tokenizer: str | None = None  # a Hub tokenizer instead of one trained on the text

    @property
    def sizes_flag(self) -> str:
        """`sizes` as a `--config_overrides` string."""
        return ",".join(f"{key}={value}" for key, value in self.sizes.items())


# fmt: off
BUDGETS = {
    "smoke": Budget(
        sizes=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, concept_num=8,
                   max_position_embeddings=64),
        vocab_size=400, steps=4, batch_size=8, max_seq_length=32, learning_rate=1e-3, warmup_steps=0, eval_steps=2,
        logging_steps=1, pretrain_lines=1000, max_eval_samples=16, glue_train_samples=24, glue_eval_samples=24,
        glue_epochs=1, glue_batch_size=16, glue_learning_rate=5e-4, reference_learning_rate=5e-5, seeds="1,2",
        zero_shot_pairs=48,
    ),
    "small": Budget(
        sizes=dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, concept_num=32,
                   max_position_embeddings=128),
        vocab_size=8000, steps=800, batch_size=32, max_seq_length=64, learning_rate=1e-3, warmup_steps=50,
        eval_steps=200, logging_steps=50, pretrain_lines=None, max_eval_samples=256, glue_train_samples=None,
        glue_eval_samples=1500, glue_epochs=1, glue_batch_size=32, glue_learning_rate=5e-4,
        reference_learning_rate=5e-5, seeds="1,2,3", zero_shot_pairs=None,
    ),
    "mrcogito": Budget(  # the research log's size and data
        sizes=dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048,
                   concept_num=128, max_position_embeddings=512),
        vocab_size=0, steps=50000, batch_size=64, max_seq_length=512, learning_rate=5e-4, warmup_steps=2000,
        eval_steps=5000, logging_steps=500, pretrain_lines=None, max_eval_samples=2000, glue_train_samples=None,
        glue_eval_samples=None, glue_epochs=10, glue_batch_size=32, glue_learning_rate=2e-5,
        reference_learning_rate=2e-5, seeds="1,2,3", zero_shot_pairs=None, dataset="JeanKaddour/minipile",
        tokenizer="answerdotai/ModernBERT-base",
    ),
}
# fmt: on


@dataclass(frozen=True)
class StudyRow:
    """A row of `scripts/distill_study.py`: the question it answers and its `run_pretraining.py` stages (flags over
    the study's data, seed and budget; several stages share the budget's steps, each continuing the previous one).
    `{teacher}` stands for the study's teacher."""

    question: str
    stages: tuple[tuple[str, ...], ...]


DISTILL = ("--recipe", "distill_minilm", "--teacher", "{teacher}")
TSDAE_STAGE = (
    *("--recipe", "distill_minilm", "--objective", "tsdae", "--model_type", "perceiver_posonly_mlm", "--line_by_line"),
)
DISTILL_STUDY_ROWS = {
    "distill": StudyRow("the recipe: cosine + relational, frozen teacher word pieces, C = 16", (DISTILL,)),
    "distill_cosine": StudyRow("cosine loss only", ((*DISTILL, "--distill_relational_weight", "0"),)),
    "distill_relational": StudyRow("relational loss only", ((*DISTILL, "--distill_cosine_weight", "0"),)),
    "distill_trainable_emb": StudyRow(
        "teacher word pieces, trainable", ((*DISTILL, "--freeze_token_embeddings", "false"),)
    ),
    "distill_random_emb": StudyRow(
        "teacher's tokenizer, random trainable embeddings",
        (
            (
                *DISTILL,
                "--init_embeddings_from",
                "none",
                "--freeze_token_embeddings",
                "false",
                "--tokenizer_name",
                "{teacher}",
            ),
        ),
    ),
    "distill_tregs": StudyRow(
        "+ T-REGS (fixed weight 1, warm-up 100 steps): the distill_minilm_tregs recipe",
        (("--recipe", "distill_minilm_tregs", "--teacher", "{teacher}"),),
    ),
    "tsdae_then_distill": StudyRow(
        "TSDAE for half the steps, then distillation", (TSDAE_STAGE, (*DISTILL, "--freeze_token_embeddings", "true"))
    ),
    "tsdae_joint": StudyRow("TSDAE and distillation trained jointly", ((*TSDAE_STAGE, "--teacher", "{teacher}"),)),
    "distill_c32": StudyRow("C = 32 (same steps)", ((*DISTILL, "--config_overrides", "concept_num=32"),)),
    "distill_c64": StudyRow("C = 64 (same steps)", ((*DISTILL, "--config_overrides", "concept_num=64"),)),
}


def recipe(name: str) -> Recipe:
    """The recipe called `name`, or a `ValueError` listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"--recipe {name!r} is unknown: choose one of {list(RECIPES)}.")
    return RECIPES[name]
