"""Model cards: fill `concept_encoder.md` from a checkpoint folder and its run summary, write it as `README.md`.

Sizes come from the folder's `config.json`, the parameter count from its safetensors files, the training figures
from the run summary (`run_summary.json`, the experiment registry's schema), and an optional GLUE table from
fine-tuning results, so the same card serves a pretraining run and its later evaluations. The YAML header is a
`huggingface_hub.ModelCardData`: license, language, base model of a fine-tuned checkpoint, and the scores as
`EvalResult`s (the Hub's `model-index` results widget).
"""

import html
import json
import math
import os
import re
from glob import glob
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open

from concept_encoder.training.diagnostics import format_effective_rank

TEMPLATE_PATH = Path(__file__).with_name("concept_encoder.md")
OBJECTIVES = {
    "mlm": "masked language modelling: masked tokens are predicted back from the concept states",
    "tsdae": "TSDAE denoising: most input tokens are deleted and every original token is reconstructed from the "
    "concept states alone (position-only decoder queries)",
    "distill": "knowledge distillation: the sentence vector (the mean of the concept states) learns a "
    "sentence-transformers teacher's embedding of the same text (the teacher is named under Run settings); what this "
    "model knows of meaning comes from that teacher, not from self-supervision",
}
PIPELINE_TAGS = {"AutoModelForMaskedLM": "fill-mask", "AutoModelForSequenceClassification": "text-classification"}
# The config fields that make each class's head variant (one class per Auto class), shown beside the class.
HEAD_FIELDS = {
    "ConceptEncoderForMaskedLM": ("decoder_type", "decoder_query"),
    "ConceptEncoderForSequenceClassification": ("classifier_head",),
}
LOCAL_SUFFIXES = (".txt", ".csv", ".tsv", ".json", ".jsonl", ".parquet")
LICENSE = "apache-2.0"  # the package's license (setup.cfg)
LANGUAGE = ["en"]  # every corpus and task the scripts train on is English


def count_parameters(folder: str) -> int:
    """Number of stored parameters in the folder's safetensors files (tied weights are stored once)."""
    total = 0
    for path in glob(os.path.join(folder, "*.safetensors")):
        with safe_open(path, framework="pt") as tensors:
            for name in tensors.keys():
                total += math.prod(tensors.get_slice(name).get_shape())
    return total


def saved_class_of(config: dict) -> str:
    """The saved class (`config.architectures`), the encoder when none is named."""
    return (config.get("architectures") or ["ConceptEncoderModel"])[0]


def auto_class_of(config: dict) -> str:
    """The Auto class under which `config.auto_map` serves the saved architecture (the card's loading snippet)."""
    architecture = saved_class_of(config)
    for auto_class, reference in (config.get("auto_map") or {}).items():
        if reference.endswith("." + architecture) and auto_class != "AutoConfig":
            return auto_class
    return "AutoModel"


def head_variant(config: dict) -> str:
    """`decoder_type=perceiver, decoder_query=position`: the fields that make the saved head (empty for the encoder)."""
    names = HEAD_FIELDS.get(saved_class_of(config), ())
    if config.get("decoder_type") == "weighted":  # the weighted decoder has no queries: decoder_query does nothing
        names = tuple(name for name in names if name != "decoder_query")
    return ", ".join(f"{name}={config[name]}" for name in names if name in config)


def glue_rows(glue_results: dict | None) -> list[tuple[str, str, str]]:
    """`{task: score}` or `{task: {metric: score}}` → table rows `(task, metric, score)`."""
    rows = []
    for task, scores in (glue_results or {}).items():
        scores = scores if isinstance(scores, dict) else {"score": scores}
        rows += [(markdown_text(task), markdown_text(metric), _figure(score)) for metric, score in scores.items()]
    return rows


def hub_datasets(pretraining_data: str | None, eval_results: list[EvalResult] | None) -> list[str]:
    """Hub dataset ids of the card's YAML: the pretraining data when it is one (`owner/name`, not a local
    `folder/file.txt`), then the datasets of the scores."""
    names = [pretraining_data, *(result.dataset_type for result in eval_results or [])]
    return list(dict.fromkeys(name for name in names if is_hub_dataset(name)))


def is_hub_dataset(name: str | None) -> bool:
    """Whether `name` is a Hub dataset id (`owner/name`), not a local `folder/file.txt`."""
    return bool(re.fullmatch(r"[\w-]+/[\w.-]+", name or "")) and Path(name).suffix not in LOCAL_SUFFIXES


def scored_split(split: str, scored: int | None, total: int | None) -> str:
    """The split's name as `datasets` slices it when only its first `scored` of `total` examples were scored
    (`validation[:256]`, `--max_eval_samples`), so the card's model-index does not present a part as the whole.
    `scored` None: all of it; `total` None: unknown (a stream), so a limit is a part."""
    if scored is None or (total is not None and scored >= total):
        return split
    return f"{split}[:{scored}]"


PRETRAINING_METRICS = {  # run metric → the model-index metric it is reported as
    "eval_loss": "loss",
    "eval_concept_effective_rank": "concept_effective_rank",
    "eval_concept_entropy_effective_rank": "concept_entropy_effective_rank",
    "eval_concept_mean_cosine": "concept_mean_cosine",
}


def pretraining_eval_results(metrics: dict, data: str, split: str = "validation") -> list[EvalResult]:
    """A pretraining run's evaluation as Hub `EvalResult`s: its eval loss and the concept diagnostics (effective rank
    in the research log's and the entropy form, mean concept cosine) on `data`'s `split`."""
    return [
        EvalResult(
            task_type="fill-mask",
            dataset_type=data,
            dataset_name=data,
            dataset_split=split,
            metric_type=name,
            metric_name=name,
            metric_value=float(metrics[key]),
        )
        for key, name in PRETRAINING_METRICS.items()
        if metrics.get(key) is not None
    ]


def glue_eval_result(task, metric: str, score: float, split: str = "validation") -> EvalResult:
    """One GLUE/PAWS score as a Hub `EvalResult` (`task` is a `concept_encoder.training.glue.GlueTask`)."""
    return EvalResult(
        task_type="text-classification",
        dataset_type=task.hub_path,
        dataset_name=f"{task.hub_path.split('/')[-1].upper()} {task.display_name}",
        dataset_config=task.hub_name or task.name,
        dataset_split=split,
        metric_type=metric,
        metric_name=metric,
        metric_value=float(score),
    )


def markdown_text(value) -> str:
    """Text a user controls (run, file and dataset names) as Markdown that shows it as written: HTML's `<`, `>` and
    `&` as entities, so no tag, script or event handler in a name is rendered; `|` escaped and line breaks as spaces,
    so no table of the card is broken."""
    return " ".join(html.escape(str(value), quote=False).replace("|", "\\|").splitlines())


def _figure(value, digits: int = 4) -> str:
    """Numbers rounded for reading, anything missing as `n/a`, text escaped (`markdown_text`)."""
    if value is None or value == "":
        return "n/a"
    return f"{value:.{digits}g}" if isinstance(value, float) else markdown_text(value)


def write_model_card(
    output_dir: str,
    summary: dict,
    glue_results: dict | None = None,
    repo_id: str | None = None,
    eval_results: list[EvalResult] | None = None,
    base_model: str | None = None,
    hyperparameters: dict | None = None,
) -> str:
    """Write `output_dir/README.md` for the checkpoint saved there and return its path.

    Args:
        output_dir: a saved checkpoint folder (`config.json`, safetensors weights).
        summary: the run summary (`run_summary.json` fields: run_id, model_type, objective, task_loss, ...); for a
            fine-tuned checkpoint, the summary of the checkpoint it started from.
        glue_results: optional `{task: score}` or `{task: {metric: score}}` for a GLUE table.
        repo_id: the Hub id used in the loading snippet; without it the snippet loads the local folder.
        eval_results: the scores as Hub `EvalResult`s (YAML `model-index`).
        base_model: the Hub id of the checkpoint this one was fine-tuned from (YAML `base_model`).
        hyperparameters: `{name: value}` of the run (samples, steps, learning rate, ...), a table in the card.
    """
    with open(os.path.join(output_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    auto_class = auto_class_of(config)
    pipeline_tag = PIPELINE_TAGS.get(auto_class)
    pair = saved_class_of(config) == "ConceptEncoderForSequenceClassification" and (
        config.get("classifier_head") == "sentence_pair"
    )
    if pair and "custom_pipelines" not in config:
        pipeline_tag = None  # the stock text-classification pipeline cannot feed two separately encoded sentences
    data = _figure(summary.get("pretraining_data"))
    run_id = summary.get("run_id") or Path(output_dir).name
    card_data = ModelCardData(
        model_name=run_id,
        license=LICENSE,
        language=LANGUAGE,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=["concept-encoder", "custom_code", summary.get("objective") or "pretraining"],
        datasets=hub_datasets(summary.get("pretraining_data"), eval_results) or None,
        base_model=base_model,
        eval_results=eval_results or None,
    )
    rank = summary.get("effective_rank")
    concept_num = config["concept_num"]
    card = ModelCard.from_template(
        card_data,
        template_path=TEMPLATE_PATH,
        run_id=markdown_text(run_id),
        repo_id=repo_id or ".",
        local_snippet=repo_id is None,
        model_class=saved_class_of(config),
        head_variant=head_variant(config),
        pair_pipeline="custom_pipelines" in config,
        pipeline_tag=pipeline_tag,
        base_model=base_model and markdown_text(base_model),
        hyperparameter_rows=[
            (markdown_text(name), _figure(value, 6)) for name, value in (hyperparameters or {}).items()
        ],
        model_type=_figure(summary.get("model_type")),
        architecture=_figure(summary.get("architecture")),
        encoder_layer_type=config["encoder_layer_type"],
        hidden_size=config["hidden_size"],
        num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"],
        concept_num=concept_num,
        vocab_size=config["vocab_size"],
        max_position_embeddings=config["max_position_embeddings"],
        parameters=f"{count_parameters(output_dir):,}",
        objective_text=OBJECTIVES.get(summary.get("objective"), _figure(summary.get("objective"))),
        pretraining_data=data,
        epochs=_figure(summary.get("epochs"), 3),
        concept_losses=_figure(summary.get("concept_losses") or "none"),
        task_loss=_figure(summary.get("task_loss")),
        effective_rank=format_effective_rank(rank, concept_num) if rank is not None else "n/a",
        steps_per_second=_figure(summary.get("steps_per_second"), 3),
        tokens_per_second=f"{summary['tokens_per_second']:,.0f}" if summary.get("tokens_per_second") else "n/a",
        machine=_figure(summary.get("machine")),
        wandb=_figure(summary.get("wandb")),
        git_commit=_figure(summary.get("git_commit")),
        glue_rows=glue_rows(glue_results),
        auto_class=auto_class,
    )
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path
