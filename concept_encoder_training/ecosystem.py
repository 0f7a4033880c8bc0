"""What a saved checkpoint folder needs beyond `save_pretrained` for the rest of the Hugging Face stack.

- Pair checkpoints (`ConceptEncoderForSentencePairClassification`) get the custom text-classification pipeline
  (`pipeline_concept_encoder.py`, named in `config.json`'s `custom_pipelines`), since the stock pipeline feeds one
  concatenated sequence.
"""

import json
import shutil
from pathlib import Path

import pipeline_concept_encoder


def add_pair_pipeline(folder: str):
    """Copy the pair pipeline into `folder` and name it in `config.json` (`custom_pipelines`)."""
    folder = Path(folder)
    source = Path(pipeline_concept_encoder.__file__)
    shutil.copy(source, folder / source.name)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["custom_pipelines"] = pipeline_concept_encoder.PAIR_PIPELINE
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
