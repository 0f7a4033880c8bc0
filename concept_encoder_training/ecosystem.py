"""What a saved checkpoint folder needs beyond `save_pretrained` for the rest of the Hugging Face stack.

- Pair checkpoints (`classifier_head="sentence_pair"`) get the custom text-classification pipeline
  (`pipeline_concept_encoder.py`, named in `config.json`'s `custom_pipelines`), since the stock pipeline feeds one
  concatenated sequence.
- Any checkpoint can get a sentence-transformers configuration (`modules.json`: the stock `Transformer` module, then
  `concept_pooling.ConceptMeanPooling`, shipped as `concept_pooling.py`), so that
  `SentenceTransformer(folder, trust_remote_code=True)` encodes with the mean of the final concept states:

      python -m concept_encoder_training.ecosystem sentence-transformers CHECKPOINT_FOLDER
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import pipeline_concept_encoder

SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


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
    """Write the sentence-transformers files into the checkpoint `folder` (weights and config stay as they are).

    The files are those sentence-transformers itself saves for `[Transformer(folder), ConceptMeanPooling]` (written to
    a temporary folder, so its `save_pretrained` of the encoder cannot replace the checkpoint's own head weights),
    with `max_seq_length` = the position limit."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer

    import concept_pooling

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    transformer = Transformer(
        str(folder),
        max_seq_length=config["max_position_embeddings"],
        model_kwargs={"trust_remote_code": True},
        config_kwargs={"trust_remote_code": True},
        processor_kwargs={"trust_remote_code": True},
    )
    pooling = concept_pooling.ConceptMeanPooling(config["hidden_size"])
    with tempfile.TemporaryDirectory() as saved:
        SentenceTransformer(modules=[transformer, pooling]).save(saved)
        for name in SENTENCE_TRANSFORMERS_FILES:
            shutil.copy(Path(saved, name), folder / name)
        for module in json.loads(Path(saved, "modules.json").read_text(encoding="utf-8")):
            if module["path"]:  # the pooling module's own folder
                shutil.copytree(Path(saved, module["path"]), folder / module["path"], dirs_exist_ok=True)
    source = Path(concept_pooling.__file__)
    shutil.copy(source, folder / source.name)


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
