"""Model cards: fill `concept_encoder.md` from a checkpoint folder and its run summary, write it as `README.md`.

Sizes come from the folder's `config.json`, the parameter count from its safetensors files, the training figures
from the run summary (`run_summary.json`, the experiment registry's schema), and an optional GLUE table from
fine-tuning results, so the same card serves a pretraining run and its later evaluations.
"""

import json
import math
import os
from glob import glob
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from safetensors import safe_open

from concept_encoder_training.diagnostics import format_effective_rank

TEMPLATE_PATH = Path(__file__).with_name("concept_encoder.md")
OBJECTIVES = {
    "mlm": "masked language modelling: masked tokens are predicted back from the concept states",
    "tsdae": "TSDAE denoising: most input tokens are deleted and every original token is reconstructed from the "
    "concept states alone (position-only decoder queries)",
}
PIPELINE_TAGS = {"AutoModelForMaskedLM": "fill-mask", "AutoModelForSequenceClassification": "text-classification"}


def count_parameters(folder: str) -> int:
    """Number of stored parameters in the folder's safetensors files (tied weights are stored once)."""
    total = 0
    for path in glob(os.path.join(folder, "*.safetensors")):
        with safe_open(path, framework="pt") as tensors:
            for name in tensors.keys():
                total += math.prod(tensors.get_slice(name).get_shape())
    return total


def auto_class_of(config: dict) -> str:
    """The Auto class under which `config.auto_map` serves the saved architecture (the card's loading snippet)."""
    architecture = (config.get("architectures") or ["ConceptEncoderModel"])[0]
    for auto_class, reference in (config.get("auto_map") or {}).items():
        if reference.endswith("." + architecture) and auto_class != "AutoConfig":
            return auto_class
    return "AutoModel"


def glue_rows(glue_results: dict | None) -> list[tuple[str, str, str]]:
    """`{task: score}` or `{task: {metric: score}}` → table rows `(task, metric, score)`."""
    rows = []
    for task, scores in (glue_results or {}).items():
        scores = scores if isinstance(scores, dict) else {"score": scores}
        rows += [(task, metric, _figure(score)) for metric, score in scores.items()]
    return rows


def _figure(value, digits: int = 4) -> str:
    """Numbers rounded for reading, anything missing as `n/a`."""
    if value is None or value == "":
        return "n/a"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def write_model_card(
    output_dir: str, summary: dict, glue_results: dict | None = None, repo_id: str | None = None
) -> str:
    """Write `output_dir/README.md` for the checkpoint saved there and return its path.

    Args:
        output_dir: a saved checkpoint folder (`config.json`, safetensors weights).
        summary: the run summary (`run_summary.json` fields: run_id, model_type, objective, task_loss, ...).
        glue_results: optional `{task: score}` or `{task: {metric: score}}` for a GLUE table.
        repo_id: the Hub id used in the loading snippet; the run id when not given.
    """
    with open(os.path.join(output_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    auto_class = auto_class_of(config)
    data = summary.get("pretraining_data") or "n/a"
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAGS.get(auto_class),
        tags=["concept-encoder", "custom_code", summary.get("objective") or "pretraining"],
        datasets=[data] if "/" in data and not os.path.exists(data) else None,
    )
    rank = summary.get("effective_rank")
    concept_num = config["concept_num"]
    card = ModelCard.from_template(
        card_data,
        template_path=TEMPLATE_PATH,
        run_id=summary.get("run_id") or Path(output_dir).name,
        repo_id=repo_id or summary.get("run_id") or Path(output_dir).name,
        model_class=(config.get("architectures") or ["ConceptEncoderModel"])[0],
        model_type=summary.get("model_type", "n/a"),
        architecture=summary.get("architecture", "n/a"),
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
        concept_losses=summary.get("concept_losses") or "none",
        task_loss=_figure(summary.get("task_loss")),
        effective_rank=format_effective_rank(rank, concept_num) if rank is not None else "n/a",
        steps_per_second=_figure(summary.get("steps_per_second"), 3),
        tokens_per_second=f"{summary['tokens_per_second']:,.0f}" if summary.get("tokens_per_second") else "n/a",
        machine=summary.get("machine") or "n/a",
        wandb=summary.get("wandb") or "n/a",
        git_commit=summary.get("git_commit") or "n/a",
        glue_rows=glue_rows(glue_results),
        auto_class=auto_class,
    )
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path
