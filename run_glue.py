"""Fine-tune and score a concept encoder on GLUE and PAWS, shaped like transformers' `run_glue.py`.

Same argument names (`--model_name_or_path`, `--task_name`, `--max_seq_length`, `--train_file`,
`--validation_file`, `--max_train_samples`, `--pad_to_max_length`, `--push_to_hub --hub_model_id`, ...; one `.json`
file as the only argument works too) and the same result files (`train_results.json`, `eval_results.json`,
`all_results.json`). Added:
- data from `--data_dir` in the classic GLUE layout (`MRPC/train.tsv`, `MRPC/dev.tsv`, ...; PAWS as `paws/`);
- `--pair_encoding separate` (each sentence encoded on its own: `ConceptEncoderForSequenceClassification` with
  `classifier_head="sentence_pair"`, the default) or `concat` (`[A; SEP; B]` through the `"pooled"` head);
- `--classifier via_decoder`: MrCogito's ViaDecoder head (`classifier_head="via_decoder"`: the checkpoint's
  perceiver MLM decoder decodes the input positions, mean → classifier; pairs concatenated);
- `--from_scratch`: a random-init baseline of the same size and tokenizer (`--config_name`/`--config_overrides`);
- `--task_name all` or a comma list: one subfolder per task and one summary table `glue_summary.md`;
- `--seeds 1,2,3`: each task fine-tuned once per seed (subfolders `seed_1`, ...), mean ± sample std in
  `seeds_results.json`, the task's `run_summary.json`, the registry and the model cards;
- any other `transformers` encoder checkpoint (BERT, MiniLM, ...) through `AutoModelForSequenceClassification` on
  concatenated pairs with its own pooling, the same metrics and result files (no concept diagnostics, no card);
- `--mrcogito_protocol`: the research log's GLUE settings (max length 128, batch 96, lr 1e-5, 20 epochs; 3 for QQP,
  QNLI and MNLI, 5 for SST-2; best epoch on dev, labelled as such); its old name `--seed_protocol` works, with a
  warning, until 0.3;
- the effective rank of the dev-set concepts in the results, `run_summary.json`, a model card and a registry row.

Example (offline, shared data):
    python run_glue.py --model_name_or_path outputs/my_ckpt --task_name mrpc --data_dir ../shared/data/glue \
        --output_dir outputs/glue_mrpc --do_train --do_eval --num_train_epochs 3
"""

import copy
import dataclasses
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    HfArgumentParser,
    PretrainedConfig,
    TrainingArguments,
    default_data_collator,
    set_seed,
)
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from concept_encoder.collators import DataCollatorForSentencePairs
from concept_encoder.configuration_concept_encoder import ConceptEncoderConfig
from concept_encoder.model_cards import glue_eval_result, scored_split, write_model_card
from concept_encoder.modeling_concept_encoder import ConceptEncoderForSequenceClassification
from concept_encoder.pipeline_concept_encoder import PAIR_PIPELINE
from concept_encoder.training.config_flags import apply_config_overrides, override_items
from concept_encoder.training.finish import finish_run
from concept_encoder.training.glue import (
    GlueTask,
    compute_glue_metrics,
    dev_metrics,
    glue_scores,
    load_files,
    load_glue_dir,
    load_glue_hub,
    majority_scores,
    parse_task_names,
    prediction_lines,
    read_test_file,
)
from concept_encoder.training.hub import check_push_to_hub, require_local_or_cached
from concept_encoder.training.run_folder import (
    RunIdentityCallback,
    check_room,
    hold_run_lock,
    prepare_output_dir,
    read_identity,
    releases_run_locks,
)
from concept_encoder.training.run_info import (
    RENAMED_FIELDS,
    SUMMARY_FILE,
    architecture_of,
    run_id,
    run_summary,
    scratch_run_id,
    setup_logging,
    timestamp,
    wandb_location,
)
from concept_encoder.training.tokenizer import (
    check_has_tokenizer,
    check_tokenizer_fits,
    limit_to_positions,
)
from concept_encoder.training.trainer import (
    ConceptDiagnosticsCallback,
    ConceptTrainer,
    add_callback_first,
)

logger = logging.getLogger(__name__)

PAIR_ENCODINGS = ("separate", "concat")
CLASSIFIERS = ("pooled", "via_decoder")
MRCOGITO_PROTOCOL_EPOCHS = {"qqp": 3, "qnli": 3, "mnli": 3, "sst2": 5}
MRCOGITO_PROTOCOL = dict(max_seq_length=128, batch_size=96, learning_rate=1e-5, epochs=20)


@dataclass
class ModelArguments:
    """Which checkpoint (or random-init size) to fine-tune, and how pairs are encoded."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A concept-encoder checkpoint folder or Hub id (from run_pretraining.py), or any other "
            "transformers encoder (fine-tuned through AutoModelForSequenceClassification on concatenated pairs)."
        },
    )
    config_name: str | None = field(
        default=None, metadata={"help": "Config (folder or config.json) to build the model from, with --from_scratch."}
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "Config changes, e.g. 'hidden_dropout_prob=0.2,classifier_pooling=mean'."}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer folder or Hub id, if not the checkpoint's own."}
    )
    from_scratch: bool = field(
        default=False,
        metadata={
            "help": "Random initialisation with the checkpoint's (or --config_name's) size and tokenizer: "
            "the baseline a pretrained checkpoint must beat."
        },
    )
    pair_encoding: str | None = field(
        default=None,
        metadata={
            "help": "Sentence pairs: 'separate' (each side encoded alone, the default) or 'concat' "
            "([A; SEP; B], MrCogito's; the default under --mrcogito_protocol)."
        },
    )
    classifier: str = field(
        default="pooled",
        metadata={
            "help": "'pooled' (concept pooling → classifier) or 'via_decoder' (MrCogito's ViaDecoder head: the "
            "checkpoint's perceiver MLM decoder decodes the input positions, mean → classifier; pairs concatenated)."
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub downloads are cached."})
    model_revision: str = field(default="main", metadata={"help": "Hub revision (branch, tag or commit)."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private checkpoints or datasets."})
    use_fast_tokenizer: bool = field(
        default=True, metadata={"help": "As in transformers' run_glue; transformers 5 tokenizers are always fast."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Use the checkpoint's own code files instead of the installed classes."}
    )
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Allow a classifier head of another label count to be re-initialised."}
    )

    def hub_options(self) -> dict:
        """Where and how every `from_pretrained` here fetches Hub files: `cache_dir`, `revision`, `token`."""
        return dict(cache_dir=self.cache_dir, revision=self.model_revision, token=self.token)


@dataclass
class DataTrainingArguments:
    """Which task(s), from where, and how much of it."""

    task_name: str | None = field(
        default=None,
        metadata={"help": "cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, paws; 'all'; or a comma list."},
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Classic GLUE layout (MRPC/train.tsv, MRPC/dev.tsv, ...; PAWS as paws/) instead of the Hub."},
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "Not supported: GLUE/PAWS come by --task_name; other data by files."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Not supported (see --dataset_name)."})
    train_file: str | None = field(default=None, metadata={"help": "Training data: csv, tsv, json or parquet."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation data: csv, tsv, json or parquet."})
    test_file: str | None = field(
        default=None,
        metadata={
            "help": "Data to predict with --do_predict (csv, tsv, json or parquet; labels not needed); default: the "
            "task's test.tsv under --data_dir."
        },
    )
    sentence1_key: str | None = field(default=None, metadata={"help": "Column of the first sentence (files only)."})
    sentence2_key: str | None = field(default=None, metadata={"help": "Column of the second sentence (files only)."})
    label_key: str = field(default="label", metadata={"help": "Column of the label (files only)."})
    max_seq_length: int = field(
        default=128, metadata={"help": "Longest tokenized input (per sentence with separate pair encoding)."}
    )
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every input to max_seq_length (otherwise per batch, faster)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N validation examples."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Predict only the first N test examples."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Tokenize again instead of using cached results."})
    mrcogito_protocol: bool = field(
        default=False,
        metadata={
            "help": "The research log's GLUE protocol: length 128, batch 96, lr 1e-5, 20 epochs (3 QQP/QNLI/MNLI, "
            "5 SST-2), evaluation every epoch and the best dev epoch reported (labelled as such)."
        },
    )
    registry_file: str = field(
        default="experiments/registry.md",
        metadata={"help": "Experiment registry to update with this run's score ('' to skip)."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over in an output folder that holds another run, or write into a non-empty folder this "
            "package did not write (its same-named files are replaced). Without it such folders are refused, and a "
            "folder holding this same run resumes from its last complete checkpoint."
        },
    )
    seeds: str | None = field(
        default=None,
        metadata={
            "help": "Comma list of seeds, e.g. '1,2,3': each task is fine-tuned once per seed (subfolders seed_N) "
            "and reported as mean ± sample std over them (instead of --seed)."
        },
    )


# ----------------------------------------------------------------------------------------------------------------------
# Checks and loading
# ----------------------------------------------------------------------------------------------------------------------


def check_arguments(model_args: ModelArguments, data_args: DataTrainingArguments):
    """Fail before any loading when the arguments cannot work together."""
    if model_args.pair_encoding not in (None, *PAIR_ENCODINGS):
        raise ValueError(f"--pair_encoding {model_args.pair_encoding!r}: choose one of {list(PAIR_ENCODINGS)}.")
    if model_args.classifier not in CLASSIFIERS:
        raise ValueError(f"--classifier {model_args.classifier!r}: choose one of {list(CLASSIFIERS)}.")
    if model_args.classifier == "via_decoder" and model_args.pair_encoding == "separate":
        raise ValueError("--classifier via_decoder decodes one input: use --pair_encoding concat (its default).")
    if not model_args.model_name_or_path and not (model_args.from_scratch and model_args.config_name):
        raise ValueError(
            "Give --model_name_or_path (a concept-encoder checkpoint), or --from_scratch with "
            "--config_name and --tokenizer_name."
        )
    if model_args.from_scratch and not (model_args.tokenizer_name or model_args.model_name_or_path):
        raise ValueError("--from_scratch needs a tokenizer: --tokenizer_name, or --model_name_or_path to borrow one.")
    if not data_args.task_name and not (data_args.train_file and data_args.validation_file):
        raise ValueError("Give --task_name (GLUE/PAWS), or --train_file and --validation_file.")
    if data_args.data_dir and (data_args.train_file or data_args.validation_file):
        raise ValueError("Give either --data_dir or --train_file/--validation_file, not both.")
    if data_args.dataset_name or data_args.dataset_config_name:
        raise ValueError(
            "--dataset_name/--dataset_config_name are not supported: give --task_name for GLUE or PAWS (from the Hub, "
            "or offline with --data_dir), or any other data as --train_file/--validation_file (and --test_file)."
        )
    if not model_args.use_fast_tokenizer:
        raise ValueError("--use_fast_tokenizer False: transformers 5 has fast tokenizers only; drop the flag.")
    for name in ("max_seq_length", "max_train_samples", "max_eval_samples"):
        value = getattr(data_args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name} {value}: must be a positive number (leave it out for the default).")


def load_task_data(task: GlueTask | None, data_args: DataTrainingArguments, model_args: ModelArguments):
    """`(DatasetDict, task)` from the files, the GLUE folder or the Hub, in that order of preference."""
    if data_args.train_file or data_args.validation_file:
        return load_files(
            task,
            data_args.train_file,
            data_args.validation_file,
            data_args.sentence1_key,
            data_args.sentence2_key,
            data_args.label_key,
        )
    if data_args.data_dir:
        return load_glue_dir(data_args.data_dir, task), task
    return load_glue_hub(task, model_args.cache_dir, model_args.token), task


def load_test_data(task: GlueTask, data_args: DataTrainingArguments):
    """The examples `--do_predict` labels: `--test_file`, else the task's `test.tsv` under `--data_dir`."""
    path = data_args.test_file
    if path is None and data_args.data_dir:
        path = os.path.join(data_args.data_dir, task.folder, "test.tsv")
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(
            f"--do_predict needs test data for {task.name}: {path or 'no file'} does not exist; give --test_file or "
            f"put test.tsv in {task.folder}/ under --data_dir."
        )
    return read_test_file(path, task)


def check_hub_sources(model_args: ModelArguments):
    """Fail within seconds, naming the local alternative, when a checkpoint, config or tokenizer given as a Hub id is
    neither a local folder nor in the cache and the Hub cannot be reached (offline)."""
    for flag, source, load in (
        ("--model_name_or_path", model_args.model_name_or_path, PretrainedConfig.get_config_dict),
        ("--config_name", model_args.config_name, PretrainedConfig.get_config_dict),
        ("--tokenizer_name", model_args.tokenizer_name, AutoTokenizer.from_pretrained),
    ):
        if source:
            instead = f"Give {flag} a local folder (a run_pretraining.py output folder, or one save_pretrained wrote)."
            require_local_or_cached(flag, source, load, instead, model_args.cache_dir)


def checkpoint_config_dict(model_args: ModelArguments) -> dict:
    """The config of `--config_name` or the checkpoint: a concept encoder's, or any other transformers model's."""
    source = model_args.config_name or model_args.model_name_or_path
    config_dict, _ = PretrainedConfig.get_config_dict(source, **model_args.hub_options())
    return config_dict


def is_concept_encoder(config_dict: dict) -> bool:
    return config_dict.get("model_type") == ConceptEncoderConfig.model_type


def parse_seeds(seeds: str | None) -> list[int]:
    """`"1,2,3"` → `[1, 2, 3]`; an empty list when not given."""
    try:
        values = [int(part) for part in (seeds or "").split(",") if part.strip()]
    except ValueError as error:
        raise ValueError(f"--seeds {seeds!r} must be a comma list of integers, e.g. '1,2,3'.") from error
    if len(set(values)) != len(values):
        raise ValueError(f"--seeds {seeds!r} repeats a seed: each seed must be given once.")
    return values


def check_sizes(max_seq_length: int, tokenizer_size: int, config: ConceptEncoderConfig):
    """The inputs must fit the model: sequence length within its positions, token ids within its vocabulary."""
    if max_seq_length > config.max_position_embeddings:
        raise ValueError(
            f"--max_seq_length {max_seq_length} exceeds the model's max_position_embeddings "
            f"({config.max_position_embeddings}): pass --max_seq_length {config.max_position_embeddings} or less."
        )
    if tokenizer_size > config.vocab_size:
        raise ValueError(
            f"The tokenizer has {tokenizer_size} tokens but the model's vocab_size is {config.vocab_size}: use the "
            "checkpoint's own tokenizer."
        )


def tokenizer_source(model_args: ModelArguments) -> str:
    """`--tokenizer_name`, else the checkpoint's own tokenizer; a local checkpoint without one (a MrCogito checkpoint
    ships none) is refused naming the flag, rather than with transformers' message about slow tokenizers."""
    source = model_args.tokenizer_name or model_args.model_name_or_path
    check_has_tokenizer(source)
    return source


def check_tokenizer(tokenizer, model_args: ModelArguments, config: ConceptEncoderConfig):
    """A pretrained checkpoint's embeddings are indexed by its own tokenizer's ids, so `--tokenizer_name` must give
    that same vocabulary: the checkpoint's own tokenizer when it ships one, else one that fits its embeddings
    (`check_tokenizer_fits`: at most `vocab_size` tokens, the config's pad and mask ids; a MrCogito checkpoint ships
    none); a random-init baseline may use any tokenizer that fits."""
    if model_args.from_scratch or not model_args.tokenizer_name:
        return
    folder = Path(model_args.model_name_or_path)
    own = None
    if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
        own = AutoTokenizer.from_pretrained(folder)
    if own is not None and own.get_vocab() != tokenizer.get_vocab():
        raise ValueError(
            f"--tokenizer_name {model_args.tokenizer_name} ({len(tokenizer)} tokens) is not the vocabulary of "
            f"{model_args.model_name_or_path}'s own tokenizer ({len(own)} tokens): its ids would index other "
            "embeddings. Drop --tokenizer_name to use the checkpoint's tokenizer."
        )
    if own is None:
        check_tokenizer_fits(
            tokenizer,
            config,
            f"--tokenizer_name {model_args.tokenizer_name}",
            "give the tokenizer the checkpoint was trained with.",
        )


def concept_class(auto_class: str, auto_map: dict | None, model_args: ModelArguments):
    """The config (`"AutoConfig"`) or classifier (`"AutoModelForSequenceClassification"`) class: the installed one,
    or with `--trust_remote_code` the one the checkpoint's own code serves under that Auto class (`auto_map`)."""
    if not (model_args.trust_remote_code and model_args.model_name_or_path):
        return {
            "AutoConfig": ConceptEncoderConfig,
            "AutoModelForSequenceClassification": ConceptEncoderForSequenceClassification,
        }[auto_class]
    reference = (auto_map or {}).get(auto_class)
    if reference is None:
        raise ValueError(
            f"--trust_remote_code: {model_args.model_name_or_path} has no code for {auto_class} (config.json "
            "auto_map); drop --trust_remote_code to use the installed package."
        )
    return get_class_from_dynamic_module(reference, model_args.model_name_or_path, **model_args.hub_options())


def build_config(config_dict: dict, model_args: ModelArguments, task: GlueTask | None = None) -> ConceptEncoderConfig:
    """The checkpoint's config (`config_dict`, read once) with any `--config_overrides` and the task's labels. The
    head (`classifier_head`) is the flags' to choose (`build_model`), not an override's."""
    if task is not None:
        config_dict = {**config_dict, **task.label_fields(), "finetuning_task": task.name}
    config = concept_class("AutoConfig", config_dict.get("auto_map"), model_args).from_dict(config_dict)
    if "classifier_head" in override_items(model_args.config_overrides, config, warn=None):  # warned when applied
        raise ValueError(
            "--config_overrides classifier_head=...: the head follows --classifier (pooled, via_decoder) and "
            "--pair_encoding (separate: sentence_pair); give those flags instead."
        )
    return apply_config_overrides(config, model_args.config_overrides)


def resolve_pair_encoding(model_args: ModelArguments, data_args: DataTrainingArguments) -> str:
    """`--pair_encoding` as given; otherwise `separate`, or `concat` under the MrCogito protocol (MrCogito's setting)
    and for the ViaDecoder head."""
    concat = data_args.mrcogito_protocol or model_args.classifier == "via_decoder"
    return model_args.pair_encoding or ("concat" if concat else "separate")


def classifier_head_of(task: GlueTask, pair_encoding: str, classifier: str) -> str:
    """`config.classifier_head` of the fine-tuned model: `"sentence_pair"` for separately encoded pairs; single
    sentences and concatenated pairs get `--classifier` (`"pooled"` or `"via_decoder"`)."""
    return "sentence_pair" if task.is_pair and pair_encoding == "separate" else classifier


def build_model(task: GlueTask, pair_encoding: str, config: ConceptEncoderConfig, model_args: ModelArguments):
    """The classifier of `config` with the head of the flags: encoder weights (and the ViaDecoder's decoder) from
    the checkpoint and a new head (transformers reports it as newly initialised), or everything random with
    `--from_scratch`."""
    if not hasattr(config, "classifier_head"):
        raise ValueError(
            f"--trust_remote_code: {model_args.model_name_or_path}'s own code predates config.classifier_head (it "
            "has a class per head), so it cannot build the head these flags ask for: drop --trust_remote_code to "
            "fine-tune the checkpoint with the installed package."
        )
    head = classifier_head_of(task, pair_encoding, model_args.classifier)
    classifier = ConceptEncoderForSequenceClassification.__name__ in (config.architectures or [])
    if classifier and head != config.classifier_head and not model_args.from_scratch:
        raise ValueError(
            f"{model_args.model_name_or_path} is a classifier fine-tuned with classifier_head="
            f"{config.classifier_head!r}; --classifier {model_args.classifier} --pair_encoding {pair_encoding} ask "
            f"for {head!r}. Give the flags of its own head, or fine-tune the pretrained checkpoint it came from."
        )
    config.classifier_head = head
    model_class = concept_class("AutoModelForSequenceClassification", getattr(config, "auto_map", None), model_args)
    if model_args.from_scratch:
        return model_class(config)
    return model_class.from_pretrained(
        model_args.model_name_or_path,
        config=config,
        **model_args.hub_options(),
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
    )


def build_transformer_config(model_args: ModelArguments, task: GlueTask | None = None):
    """Any other transformers model's config, with the task's labels and any `--config_overrides`."""
    labels = {} if task is None else dict(task.label_fields(), finetuning_task=task.name)
    config = AutoConfig.from_pretrained(
        model_args.config_name or model_args.model_name_or_path,
        **model_args.hub_options(),
        trust_remote_code=model_args.trust_remote_code,
        **labels,
    )
    return apply_config_overrides(config, model_args.config_overrides)


def build_transformer_model(config: PretrainedConfig, model_args: ModelArguments):
    """Any other transformers encoder: `AutoModelForSequenceClassification` with its own pooling (BERT: the [CLS]
    pooler) and a new head for the task's labels (`config`: `build_transformer_config` of the task); random weights
    of the same config with `--from_scratch`."""
    if model_args.from_scratch:
        return AutoModelForSequenceClassification.from_config(config, trust_remote_code=model_args.trust_remote_code)
    return AutoModelForSequenceClassification.from_pretrained(
        model_args.model_name_or_path,
        config=config,
        **model_args.hub_options(),
        trust_remote_code=model_args.trust_remote_code,
        ignore_mismatched_sizes=True,  # a pretraining pooler or head of another label count is replaced
    )


def checkpoint_summary(model_args: ModelArguments, config) -> dict:
    """The checkpoint's `run_summary.json` (run id, pretraining data, ...) when it has one; for `--from_scratch` a
    `scratch_H.._L.._C..` id, otherwise the checkpoint's folder name."""
    if model_args.from_scratch:
        return {
            "run_id": scratch_run_id(config),
            "model_type": "random init",
            "pretraining_data": "none (random init)",
            "architecture": architecture_of(config),
            "objective": None,
        }
    folder = Path(model_args.model_name_or_path)
    path = folder / SUMMARY_FILE
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    marker = read_identity(folder)  # a checkpoint-N carries its run's id (and its file list)
    if marker is not None and marker.get("run_id"):
        checkpoint_id = f"{marker['run_id']}/{folder.name}" if "files" in marker else marker["run_id"]
    else:
        checkpoint_id = folder.name or model_args.model_name_or_path
    return {"run_id": checkpoint_id, "architecture": architecture_of(config)}


# ----------------------------------------------------------------------------------------------------------------------
# Features, metrics, diagnostics
# ----------------------------------------------------------------------------------------------------------------------


def tokenize_dataset(
    dataset,
    tokenizer,
    task: GlueTask,
    separate: bool,
    max_length: int,
    pad: bool,
    token_type_ids: bool = False,
    overwrite_cache: bool = False,
):
    """Text → `input_ids/attention_mask` (`[A; SEP; B]` for concatenated pairs), plus `input_ids_b/attention_mask_b`
    for separate pairs; the text columns are dropped and `label` stays. `token_type_ids` (for transformers
    encoders with segment embeddings) are kept when asked and the tokenizer makes them."""
    options = dict(
        truncation=True,
        max_length=max_length,
        padding="max_length" if pad else False,
        return_token_type_ids=None if token_type_ids else False,
    )

    def encode(batch):
        if task.is_pair and separate:
            first, second = tokenizer(batch["sentence1"], **options), tokenizer(batch["sentence2"], **options)
            return {**first, "input_ids_b": second["input_ids"], "attention_mask_b": second["attention_mask"]}
        texts = [batch["sentence1"]] + ([batch["sentence2"]] if task.is_pair else [])
        return tokenizer(*texts, **options)

    text_columns = [c for c in dataset.column_names if c != "label"]
    return dataset.map(
        encode, batched=True, remove_columns=text_columns, load_from_cache_file=not overwrite_cache, desc="Tokenizing"
    )


def metrics_function(task: GlueTask):
    """`compute_metrics` for the Trainer: argmax of the logits (or the score for regression) against the labels."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predictions = np.squeeze(logits, axis=-1) if task.is_regression else np.argmax(logits, axis=-1)
        return compute_glue_metrics(task, predictions, prediction.label_ids)

    return compute_metrics


# ----------------------------------------------------------------------------------------------------------------------
# One task
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class TaskPlan:
    """What is decided for one task, once, before the first task trains (`plan_task`); every run of the task (one per
    seed with `--seeds`) and its summary, card and registry row read it from here."""

    task: GlueTask
    raw_datasets: DatasetDict
    pair_encoding: str  # a pair task's `resolve_pair_encoding` ("separate" or "concat"); "single" for one sentence
    config: PretrainedConfig  # the checkpoint's, with the task's labels and --config_overrides; each model a copy
    checkpoint_run: dict  # `checkpoint_summary`: the run the checkpoint came from (or its random-init twin's id)
    args: TrainingArguments  # the task's: its output folder (which holds the seeds' folders and their mean)
    runs: list[tuple[TrainingArguments, dict, str | None]]  # per seed (one run without --seeds): args, record, resume

    @property
    def separate(self) -> bool:
        """A pair whose sentences are encoded each on its own (`sentence_pair` head, `DataCollatorForSentencePairs`)."""
        return self.pair_encoding == "separate"

    @property
    def concept(self) -> bool:
        """A concept encoder (else another transformers encoder: no concept diagnostics, no card of ours)."""
        return self.config.model_type == ConceptEncoderConfig.model_type


def plan_task(
    task: GlueTask,
    raw_datasets: DatasetDict,
    config_dict: dict,
    checkpoint_run: dict,
    model_args: ModelArguments,
    data_args: DataTrainingArguments,
    training_args: TrainingArguments,
    seeds: list[int],
    own_folder: bool,
) -> TaskPlan:
    """The task's plan: its pair encoding, config (from `config_dict`, the checkpoint's, read once), the checkpoint's
    run (`checkpoint_run`, read once for every task), TrainingArguments (in a subfolder named after the task when
    `own_folder`), and its runs' folders, checked and claimed here (`prepare_task_folder`)."""
    pair_encoding = resolve_pair_encoding(model_args, data_args) if task.is_pair else "single"
    output_dir = os.path.join(training_args.output_dir, task.name) if own_folder else training_args.output_dir
    args = task_training_args(training_args, task, data_args, output_dir, pair_encoding == "separate")
    if own_folder and args.hub_model_id:
        args = dataclasses.replace(args, hub_model_id=f"{training_args.hub_model_id}-{task.name}")
    if is_concept_encoder(config_dict):
        config = build_config(config_dict, model_args, task)
    else:
        config = build_transformer_config(model_args, task)
    plan = TaskPlan(task, raw_datasets, pair_encoding, config, checkpoint_run, args, runs=[])
    for run_args in seed_arguments(args, seeds) if seeds else [args]:  # one folder per seed inside the task's
        plan.runs.append((run_args, *prepare_task_folder(plan, model_args, data_args, run_args)))
    return plan


def task_training_args(
    args: TrainingArguments, task: GlueTask, data_args: DataTrainingArguments, output_dir: str, separate: bool
) -> TrainingArguments:
    """The run's TrainingArguments for one task: its own output folder, pair batches' label name, and the
    MrCogito protocol's settings when asked."""
    changes = dict(output_dir=output_dir)
    if separate:
        changes.update(label_names=["labels"], remove_unused_columns=False)
    if data_args.mrcogito_protocol:
        changes.update(
            per_device_train_batch_size=MRCOGITO_PROTOCOL["batch_size"],
            per_device_eval_batch_size=MRCOGITO_PROTOCOL["batch_size"],
            learning_rate=MRCOGITO_PROTOCOL["learning_rate"],
            num_train_epochs=MRCOGITO_PROTOCOL_EPOCHS.get(task.name, MRCOGITO_PROTOCOL["epochs"]),
            eval_strategy="epoch",
            save_strategy="epoch",
            save_total_limit=2,
            load_best_model_at_end=True,
            metric_for_best_model=task.best_metric,
            greater_is_better=task.best_metric != "mse",
        )
    return dataclasses.replace(args, **changes)


def glue_identity(plan: TaskPlan, model_args: ModelArguments, data_args: DataTrainingArguments, seed: int) -> dict:
    """What makes a GLUE run that run: a rerun into its folder resumes only when all of it is the same."""

    def where(path: str | None) -> str | None:
        return os.path.abspath(path) if path and os.path.exists(path) else path

    return {
        "model_name_or_path": where(model_args.model_name_or_path),
        "model_revision": model_args.model_revision,
        "config_name": where(model_args.config_name),
        "config_overrides": model_args.config_overrides,
        "tokenizer": where(model_args.tokenizer_name or model_args.model_name_or_path),
        "from_scratch": model_args.from_scratch,
        "pair_encoding": plan.pair_encoding,
        "task_name": plan.task.name,
        "data": [where(data_args.data_dir), where(data_args.train_file), where(data_args.validation_file)],
        "columns": [data_args.sentence1_key, data_args.sentence2_key, data_args.label_key],
        "max_seq_length": data_args.max_seq_length,
        "max_train_samples": data_args.max_train_samples,
        "mrcogito_protocol": data_args.mrcogito_protocol,
        "seed": seed,
    }


def prepare_task_folder(
    plan: TaskPlan, model_args: ModelArguments, data_args: DataTrainingArguments, args: TrainingArguments
) -> tuple[dict, str | None]:
    """The run's record (run id and identity) and the checkpoint to resume, after checking its output folder:
    another run's folder, or a non-empty folder this package did not write, is refused (see `run_folder`)."""
    record = {
        "run_id": run_id("glue", plan.task.name, plan.checkpoint_run["run_id"], timestamp()),
        "script": "run_glue.py",
        "identity": glue_identity(plan, model_args, data_args, args.seed),
    }
    record, checkpoint = prepare_output_dir(
        args.output_dir,
        record,
        overwrite=data_args.overwrite_output_dir,
        do_train=args.do_train,
        resume_from_checkpoint=args.resume_from_checkpoint,
        main_process=args.process_index == 0,
    )
    if checkpoint is not None:
        logger.info(f"Resuming {record['run_id']} from {checkpoint}; give --overwrite_output_dir to start over.")
    return record, checkpoint


def run_task(
    plan: TaskPlan,
    run: tuple[TrainingArguments, dict, str | None],
    tokenizer,
    model_args: ModelArguments,
    data_args: DataTrainingArguments,
) -> dict:
    """Fine-tune and score one run of the task (`run`: its arguments, run record and the checkpoint it resumes, if
    any); writes the result files, then `finish_run` the summary, model card and registry row. Returns the summary."""
    task, raw_datasets, separate, concept = plan.task, plan.raw_datasets, plan.separate, plan.concept
    training_args, record, checkpoint = run
    set_seed(training_args.seed)
    config = copy.deepcopy(plan.config)  # the model's own: the plan's serves every seed
    if concept:
        model = build_model(task, plan.pair_encoding, config, model_args)
        if separate:  # pipeline("text-classification") feeds both sides: every save writes it (ConceptTrainer._save)
            model.config.custom_pipelines = PAIR_PIPELINE
    else:
        model = build_transformer_model(config, model_args)
    max_length = data_args.max_seq_length
    train_data, eval_splits = (
        raw_datasets["train"],
        {s: raw_datasets[s] for s in task.validation_splits if s in raw_datasets}
        or {"validation": raw_datasets["validation"]},
    )
    if data_args.max_train_samples is not None:
        train_data = train_data.select(range(min(data_args.max_train_samples, len(train_data))))
    dev_sizes = {split: len(data) for split, data in eval_splits.items()}  # before --max_eval_samples
    if data_args.max_eval_samples is not None:
        eval_splits = {s: d.select(range(min(data_args.max_eval_samples, len(d)))) for s, d in eval_splits.items()}
    encode = dict(
        tokenizer=tokenizer,
        task=task,
        separate=separate,
        max_length=max_length,
        pad=data_args.pad_to_max_length,
        token_type_ids=not concept,
        overwrite_cache=data_args.overwrite_cache,
    )
    train_data = tokenize_dataset(train_data, **encode)
    eval_splits = {split: tokenize_dataset(data, **encode) for split, data in eval_splits.items()}
    first_eval = next(iter(eval_splits.values()))

    if separate:
        collator = DataCollatorForSentencePairs(tokenizer)
    elif data_args.pad_to_max_length:
        collator = default_data_collator
    else:
        collator = DataCollatorWithPadding(tokenizer)
    trainer = ConceptTrainer(
        model=model,
        args=training_args,
        train_dataset=train_data if training_args.do_train else None,
        eval_dataset=first_eval,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=metrics_function(task),
    )
    if concept:
        add_callback_first(trainer, ConceptDiagnosticsCallback())  # concept diagnostics on the dev set
    add_callback_first(trainer, RunIdentityCallback(record))  # marks each checkpoint complete before anything else

    metrics = {}
    if training_args.do_train:
        check_room(training_args.output_dir, model, tokenizer, checkpoints=training_args.save_strategy != "no")
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        train_metrics = {**train_result.metrics, "train_samples": len(train_data)}
        trainer.log_metrics("train", train_metrics)
        trainer.save_metrics("train", train_metrics)
        trainer.save_state()
        metrics.update(train_metrics)

    eval_metrics = dev_metrics(
        task,
        {
            split: {**trainer.evaluate(eval_dataset=data), "eval_samples": len(data)}
            for split, data in eval_splits.items()
        },
    )
    eval_metrics["eval_selection"] = (
        "best epoch on dev (MrCogito protocol)"
        if data_args.mrcogito_protocol and training_args.do_train
        else "final model"
    )
    trainer.log_metrics("eval", eval_metrics)
    trainer.save_metrics("eval", eval_metrics)
    metrics.update(eval_metrics)

    if training_args.do_predict:
        predict(trainer, task, raw_datasets["test"], encode, data_args.max_predict_samples)

    summary = glue_summary(plan, metrics, record, model_args, data_args, training_args)
    summary["majority_scores"] = majority_scores(task, train_data["label"], first_eval["label"])  # the plots' level
    card = None
    if training_args.do_train and concept:  # our card describes a concept encoder
        split = next(iter(eval_splits))
        scored = scored_split(split, len(eval_splits[split]), dev_sizes[split])  # `validation[:N]`: only part scored
        card = dict(
            summary={**plan.checkpoint_run, "run_id": summary["run_id"]},
            glue_results={task.display_name: {name: metrics[f"eval_{name}"] for name in task.metrics}},
            eval_results=[glue_eval_result(task, name, metrics[f"eval_{name}"], scored) for name in task.metrics],
            base_model=hub_base_model(model_args),
            hyperparameters=finetuning_settings(
                task, metrics, data_args, training_args, plan.pair_encoding, dev_sizes[split]
            ),
        )
    finish_run(summary, training_args.output_dir, data_args.registry_file, trainer, card)  # one wandb run per task
    return summary


def predict(trainer: ConceptTrainer, task: GlueTask, test_data, encode: dict, limit: int | None):
    """Label the test examples and write `predict_results_<task>.txt` in GLUE's submission format."""
    if limit is not None:
        test_data = test_data.select(range(min(limit, len(test_data))))
    indices = test_data["index"]
    features = tokenize_dataset(test_data.remove_columns("index"), **encode)
    logits = trainer.predict(features, metric_key_prefix="predict").predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    if trainer.is_world_process_zero():
        path = Path(trainer.args.output_dir, f"predict_results_{task.name}.txt")
        path.write_text("\n".join(prediction_lines(task, indices, logits)) + "\n", encoding="utf-8")
        logger.info(f"Predictions for {len(indices)} test examples written to {path}")


def hub_base_model(model_args: ModelArguments) -> str | None:
    """The Hub id the model was fine-tuned from (the card's `base_model`); None for local folders and random init."""
    source = model_args.model_name_or_path
    if model_args.from_scratch or source is None or os.path.exists(source):
        return None
    return source


def finetuning_settings(task, metrics, data_args, training_args, pair_encoding, dev_size: int | None = None) -> dict:
    """What the card shows of a fine-tuning run, so that a 256-example run does not look like a full one (nor a
    score on part of the dev set like one on all of it: `20 of 24`)."""
    scored = metrics.get("eval_samples")
    batch = training_args.per_device_train_batch_size * training_args.world_size
    return {
        "Task": f"{task.display_name} ({'pair, ' + pair_encoding if task.is_pair else 'single sentence'})",
        "Training examples": metrics.get("train_samples"),
        "Dev examples scored": f"{scored} of {dev_size}" if dev_size and scored and scored < dev_size else scored,
        "Epochs": metrics.get("epoch"),
        "Batch size": f"{batch} x {training_args.gradient_accumulation_steps} accumulation",
        "Learning rate": training_args.learning_rate,
        "Max sequence length": data_args.max_seq_length,
        "Seed": training_args.seed,
        "Selection": metrics.get("eval_selection"),
    }


def glue_summary(plan: TaskPlan, metrics, record, model_args, data_args, training_args) -> dict:
    """The GLUE run's `run_summary.json` (read by the experiment registry), under its run record's id (kept across
    resumes)."""
    task = plan.task
    return run_summary(
        "glue",
        record["run_id"],
        plan.config,
        training_args.output_dir,
        wandb_location(training_args),
        timestamp=timestamp(),
        task=task.name,
        task_display_name=task.display_name,
        checkpoint_run_id=plan.checkpoint_run["run_id"],
        checkpoint=model_args.model_name_or_path,
        from_scratch=model_args.from_scratch,
        pair_encoding=plan.pair_encoding,
        metrics={key: value for key, value in metrics.items() if key.startswith("eval_")},
        scores=glue_scores(task, metrics),  # MNLI: "_mm" for mismatched
        registry_metric=task.registry_metric,
        registry_score=metrics[f"eval_{task.registry_metric}"],
        main_metric=task.main_metric,
        main_score=metrics.get(f"eval_{task.main_metric}"),
        effective_rank=metrics.get("eval_concept_effective_rank"),
        seed=training_args.seed,
        steps_per_second=metrics.get("train_steps_per_second"),
        epochs=metrics.get("epoch"),
        train_samples=metrics.get("train_samples"),
        mrcogito_protocol=data_args.mrcogito_protocol,
        selection=metrics["eval_selection"],
    )


# ----------------------------------------------------------------------------------------------------------------------
# Several tasks
# ----------------------------------------------------------------------------------------------------------------------


def summary_table(summaries: list[dict]) -> str:
    """One Markdown table over the tasks of a multi-task run."""
    lines = [
        "| Task | Scores (dev) | Eff. rank (dev) | Train samples | Epochs | Selection |",
        "|---|---|---|---|---|---|",
    ]
    for summary in summaries:
        spreads = summary.get("scores_std", {})
        scores = ", ".join(
            f"{name} {value:.4f}" + (f" ± {spreads[name]:.4f}" if name in spreads else "")
            for name, value in summary["scores"].items()
        )
        rank = "--" if summary["effective_rank"] is None else f"{summary['effective_rank']:.2f}"
        lines.append(
            f"| {summary['task_display_name']} | {scores} | {rank} | "
            f"{summary['train_samples'] or '--'} | {summary['epochs'] or '--'} | {summary['selection']} |"
        )
    return "\n".join(lines) + "\n"


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of the scores over seeds."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def seed_arguments(args: TrainingArguments, seeds: list[int]) -> list[TrainingArguments]:
    """One task's TrainingArguments per seed, each with its own folder `<output_dir>/seed_<N>`."""
    return [
        dataclasses.replace(args, seed=seed, output_dir=os.path.join(args.output_dir, f"seed_{seed}")) for seed in seeds
    ]


def run_seeds(plan: TaskPlan, tokenizer, model_args: ModelArguments, data_args: DataTrainingArguments) -> dict:
    """Fine-tune the task once per seed (`plan.runs`, folders `<output_dir>/seed_<N>`), then write the task's
    `seeds_results.json` (every score's mean, sample std and per-seed values), give each seed's model card the spread
    and `finish_run` the mean: `run_summary.json` (the means, with `scores_std`) and the registry's `mean ± std`.
    Returns the task's summary."""
    task, output_dir = plan.task, plan.args.output_dir
    seeds = [args.seed for args, _, _ in plan.runs]
    no_registry = dataclasses.replace(data_args, registry_file="")  # the registry gets the mean, not each seed
    per_seed = [run_task(plan, run, tokenizer, model_args, no_registry) for run in plan.runs]
    results = {}
    for name in per_seed[0]["scores"]:
        values = [summary["scores"][name] for summary in per_seed]
        mean, std = mean_and_std(values)
        results[name] = {"mean": mean, "std": std, "values": values}
    os.makedirs(output_dir, exist_ok=True)
    Path(output_dir, "seeds_results.json").write_text(
        json.dumps({"seeds": seeds, "std": "sample (ddof=1)", "scores": results}, indent=2) + "\n"
    )
    summary = {
        **per_seed[-1],
        "run_id": f"{per_seed[-1]['run_id']}_seeds{'-'.join(map(str, seeds))}",
        "seeds": seeds,
        "seed": None,
        "scores": {name: result["mean"] for name, result in results.items()},
        "scores_std": {name: result["std"] for name, result in results.items()},
        "registry_score": results[task.registry_metric]["mean"],
        "registry_score_std": results[task.registry_metric]["std"],
        "main_score": results[per_seed[-1]["main_metric"]]["mean"] if per_seed[-1]["main_metric"] in results else None,
        "effective_rank": mean_and_std([s["effective_rank"] for s in per_seed])[0]
        if per_seed[0]["effective_rank"] is not None
        else None,
        "seed_run_dirs": [summary["output_dir"] for summary in per_seed],
        "output_dir": str(output_dir),
    }
    if plan.concept and plan.args.do_train:
        over = f"over seeds {','.join(map(str, seeds))}"
        for seed_summary in per_seed:
            spread = {
                name: f"{value:.4f} (this seed); {results[name]['mean']:.4f} ± {results[name]['std']:.4f} {over}"
                for name, value in seed_summary["scores"].items()
            }
            write_model_card(
                seed_summary["output_dir"],
                {**plan.checkpoint_run, "run_id": seed_summary["run_id"]},
                {task.display_name: spread},
                repo_id=plan.args.hub_model_id,
            )
    finish_run(summary, output_dir, data_args.registry_file)
    return summary


@releases_run_locks
def run(model_args: ModelArguments, data_args: DataTrainingArguments, training_args: TrainingArguments) -> list[dict]:
    """Every requested task (all data loaded and checked before the first one trains); returns their summaries."""
    # Everything that can be checked is checked here, once, before any data is read.
    check_arguments(model_args, data_args)
    seeds = parse_seeds(data_args.seeds)
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        training_args = dataclasses.replace(training_args, do_train=True, do_eval=True)
    tasks = parse_task_names(data_args.task_name) if data_args.task_name else [None]
    if len(tasks) > 1 and (data_args.train_file or data_args.validation_file):
        raise ValueError("--train_file/--validation_file hold one task: give a single --task_name.")
    if data_args.mrcogito_protocol:
        data_args = dataclasses.replace(data_args, max_seq_length=MRCOGITO_PROTOCOL["max_seq_length"])
    if training_args.push_to_hub:
        check_push_to_hub(training_args.hub_model_id, training_args.hub_token)
    check_hub_sources(model_args)
    config_dict = checkpoint_config_dict(model_args)  # the one read of the checkpoint's config
    if is_concept_encoder(config_dict):
        config = build_config(config_dict, model_args)  # with --config_overrides, validated
    else:  # another transformers encoder: concatenated pairs, its own pooling
        if model_args.pair_encoding == "separate":
            raise ValueError(
                f"--pair_encoding separate needs a concept encoder; {model_args.model_name_or_path or model_args.config_name}"
                f" is a {config_dict.get('model_type')!r} model, which reads pairs concatenated: drop the flag or pass "
                "concat."
            )
        model_args = dataclasses.replace(model_args, pair_encoding="concat")
        config = build_transformer_config(model_args)
    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer_source(model_args), **model_args.hub_options(), trust_remote_code=model_args.trust_remote_code
    )
    check_sizes(data_args.max_seq_length, len(tokenizer), config)
    limit_to_positions(tokenizer, config.max_position_embeddings)  # saved with the fine-tuned model
    check_tokenizer(tokenizer, model_args, config)

    loaded = [load_task_data(task, data_args, model_args) for task in tasks]
    if training_args.do_predict:
        for raw_datasets, task in loaded:
            raw_datasets["test"] = load_test_data(task, data_args)
    if training_args.process_index == 0:  # one live run per folder: a second is refused naming the first's process
        hold_run_lock(training_args.output_dir)
    checkpoint_run = checkpoint_summary(model_args, config)
    plans = [  # every task's output folders are checked before the first one trains
        plan_task(task, raw, config_dict, checkpoint_run, model_args, data_args, training_args, seeds, len(tasks) > 1)
        for raw, task in loaded
    ]
    summaries = [
        run_seeds(plan, tokenizer, model_args, data_args)
        if seeds
        else run_task(plan, plan.runs[0], tokenizer, model_args, data_args)
        for plan in plans
    ]
    if len(tasks) > 1:
        table = summary_table(summaries)
        Path(training_args.output_dir, "glue_summary.md").write_text(table, encoding="utf-8")
        print(table)
    return summaries


def current_flag(name: str) -> str:
    """The argument `name` under its current name; a renamed one (`RENAMED_FIELDS`) is logged as deprecated, naming
    the flag to use instead."""
    if name not in RENAMED_FIELDS:
        return name
    logger.warning(f"--{name} is deprecated (removed in 0.3): use --{RENAMED_FIELDS[name]}, which does the same.")
    return RENAMED_FIELDS[name]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        values = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        model_args, data_args, training_args = parser.parse_dict({current_flag(k): v for k, v in values.items()})
    else:
        argv = [re.sub(r"^--(\w+)", lambda flag: f"--{current_flag(flag[1])}", token) for token in argv]
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    setup_logging(training_args, logger)
    torch.set_flush_denormal(True)  # CPU: MRPC fine-tuning ~1.09x faster with denormals flushed (same loss)
    return run(model_args, data_args, training_args)


def cli() -> None:
    """The console script `concept-encoder-glue`: `main()` with the command line's arguments and exit status 0
    when it finishes (the results are in the output folder; `main`'s return value is for callers in Python)."""
    main()


if __name__ == "__main__":
    cli()
