"""What a saved checkpoint folder needs beyond `save_pretrained` for the rest of the Hugging Face stack.

- Pair checkpoints (`classifier_head="sentence_pair"`) get the custom text-classification pipeline
  (`pipeline_concept_encoder.py`, named in `config.json`'s `custom_pipelines`), since the stock pipeline feeds one
  concatenated sequence.
- Concept-encoder checkpoints get a sentence-transformers configuration (`modules.json`: the stock `Transformer`
  module, then `concept_pooling.ConceptMeanPooling`, shipped as `concept_pooling.py`), so that
  `SentenceTransformer(folder, trust_remote_code=True)` encodes with the mean of the final concept states. The
  training scripts write both into every checkpoint they save (`complete_checkpoint`); for other folders:

      python -m concept_encoder.training.ecosystem sentence-transformers CHECKPOINT_FOLDER
"""

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

from concept_encoder import pipeline_concept_encoder
from concept_encoder.configuration_concept_encoder import ConceptEncoderConfig
from concept_encoder.modeling_concept_encoder import named_code_files

POOLING_MODULE = "concept_pooling"  # shipped as concept_pooling.py, imported by sentence-transformers only
POOLING_FOLDER = "1_ConceptMeanPooling"  # sentence-transformers' `<index>_<class>` folder of the second module


def sentence_transformers_files(config: dict) -> dict[str, dict | list]:
    """The files sentence-transformers reads for `[Transformer(folder), ConceptMeanPooling]`, by name relative to the
    folder, in the form every sentence-transformers version from 5 on reads (the `sentence_transformers.models`
    path and `max_seq_length` of version 5; version 6 reads it too): the position limit as `max_seq_length`, cosine
    similarity, the pooling's embedding size."""
    return {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": POOLING_FOLDER, "type": f"{POOLING_MODULE}.ConceptMeanPooling"},
        ],
        "sentence_bert_config.json": {"max_seq_length": config["max_position_embeddings"], "do_lower_case": False},
        "config_sentence_transformers.json": {
            "model_type": "SentenceTransformer",
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
        # the sentence vector's width: a distilled student's projection (`sentence_embedding_size`), else hidden_size
        f"{POOLING_FOLDER}/config.json": {
            "embedding_dimension": config.get("sentence_embedding_size") or config["hidden_size"]
        },
    }


def package_file(module: str) -> Path:
    """The source file of one of the package's root-level modules (`concept_encoder.<module>`), found without
    importing it (`concept_pooling` imports sentence-transformers, which the training scripts do not need)."""
    return Path(importlib.util.find_spec(f"concept_encoder.{module}").origin)


def add_pair_pipeline(folder: str):
    """Copy the pair pipeline into `folder` and name it in `config.json` (`custom_pipelines`)."""
    folder = Path(folder)
    source = Path(pipeline_concept_encoder.__file__)
    shutil.copy(source, folder / source.name)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["custom_pipelines"] = pipeline_concept_encoder.PAIR_PIPELINE
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def add_sentence_transformers(folder: str):
    """Write the sentence-transformers files and `concept_pooling.py` into the checkpoint `folder` (weights, config
    and tokenizer stay as they are); needs neither sentence-transformers nor a model in memory."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    for name, content in sentence_transformers_files(config).items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    shutil.copy(package_file(POOLING_MODULE), folder / f"{POOLING_MODULE}.py")


def complete_checkpoint(folder: str):
    """What every checkpoint folder of the training scripts carries beyond `save_pretrained`: for a concept encoder,
    the sentence-transformers files (so the natural `SentenceTransformer(folder, trust_remote_code=True)` pools the
    concepts, not the tokens), and every code file its config names (`custom_pipelines`) from this package, also
    when the model runs a checkpoint's own code (`--trust_remote_code`). Other models' folders stay as saved."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != ConceptEncoderConfig.model_type:
        return
    add_sentence_transformers(folder)
    for name in named_code_files(config.get("custom_pipelines")):
        if not (folder / name).is_file():
            shutil.copy(package_file(name.removesuffix(".py")), folder / name)


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description="Add what the Hugging Face stack needs to a checkpoint folder.")
    parser.add_argument("what", choices=["sentence-transformers", "pair-pipeline"])
    parser.add_argument("folder", help="a checkpoint folder written by save_pretrained or the training scripts")
    args = parser.parse_args(argv)
    if args.what == "sentence-transformers":
        add_sentence_transformers(args.folder)
    else:
        add_pair_pipeline(args.folder)


if __name__ == "__main__":
    main()
