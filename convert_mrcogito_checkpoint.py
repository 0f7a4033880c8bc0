"""Convert a checkpoint of MrCogito (ksopyla/MrCogito, `ksopyla/concept-encoder-*` on the Hub) into a complete Hub
folder of this package: our config (with `auto_map`), our weight names, both code files and the tokenizer, so it
loads with `trust_remote_code=True` anywhere, without this package.

    python convert_mrcogito_checkpoint.py ksopyla/concept-encoder-perceiver_mlm_H512L6C128_20260208_211633 OUT
    python convert_mrcogito_checkpoint.py ../shared/fixtures/mrcogito/tsdae_posonly_bixt OUT --tokenizer_name TOK

The tokenizer comes from SRC when it has one, else `--tokenizer_name`, else the MrCogito config's `tokenizer_name`
field, else MrCogito's ModernBERT tokenizer. Every weight must load (the conversion refuses anything it cannot
reproduce exactly) and the converted model must give the source model's outputs.
"""

import argparse
import logging
import os
import sys

import torch
from transformers import AutoTokenizer

from concept_encoder import modeling_concept_encoder
from concept_encoder.configuration_concept_encoder import ConceptEncoderConfig
from concept_encoder.training.hub import require_local_or_cached
from concept_encoder.training.tokenizer import check_tokenizer_fits

logger = logging.getLogger("convert_mrcogito_checkpoint")
DEFAULT_TOKENIZER = "answerdotai/ModernBERT-base"  # MrCogito's tokenizer
CHECK_LENGTH = 8  # tokens of the batch the converted model is checked on


def model_class_of(config: ConceptEncoderConfig):
    """The class `config.architectures` names (MrCogito's class names are translated to ours when the config is
    read), else the encoder."""
    classes = {model_class.__name__: model_class for model_class in modeling_concept_encoder.AUTO_CLASSES.values()}
    for name in config.architectures or []:
        if name in classes:
            return classes[name]
    if config.architectures:
        raise ValueError(f"config.architectures={config.architectures} names no class of modeling_concept_encoder.")
    return modeling_concept_encoder.ConceptEncoderModel


def load_tokenizer(source: str, config: ConceptEncoderConfig, tokenizer_name: str | None):
    """SRC's own tokenizer, else `tokenizer_name`, the config's `tokenizer_name` or MrCogito's default."""
    if tokenizer_name is None:
        try:
            return AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError):
            tokenizer_name = getattr(config, "tokenizer_name", None) or DEFAULT_TOKENIZER
            logger.info(f"{source} has no tokenizer: using {tokenizer_name}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
    except OSError as error:
        raise OSError(
            f"Tokenizer {tokenizer_name} cannot be loaded ({error}): pass --tokenizer_name with a local tokenizer "
            "folder (the one the checkpoint was trained with)."
        ) from error
    check_tokenizer_fits(
        tokenizer, config, f"Tokenizer {tokenizer_name}", "pass --tokenizer_name with the checkpoint's own tokenizer."
    )
    return tokenizer


def convert(source: str, output_dir: str, tokenizer_name: str | None = None):
    """Load SRC (MrCogito's or ours) exactly, save it as our Hub folder in OUTPUT_DIR, check the saved copy's
    outputs."""
    require_local_or_cached(
        "SRC",
        source,
        ConceptEncoderConfig.from_pretrained,
        "Give SRC as a local checkpoint folder (config.json and model.safetensors), e.g. one downloaded with "
        "`hf download ID --local-dir DIR` where the Hub can be reached, or ../shared/fixtures/mrcogito/<name>.",
    )
    config = ConceptEncoderConfig.from_pretrained(source)
    model_class = model_class_of(config)
    model = model_class.from_pretrained(source, config=config).eval()
    tokenizer = load_tokenizer(source, config, tokenizer_name)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    reloaded = model_class.from_pretrained(output_dir).eval()
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, config.vocab_size, (2, CHECK_LENGTH), generator=generator)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if model_class is modeling_concept_encoder.ConceptEncoderForSequenceClassification and (
        config.classifier_head == "sentence_pair"
    ):
        inputs.update(input_ids_b=input_ids.flip(1), attention_mask_b=inputs["attention_mask"])
    with torch.no_grad():
        before, after = model(**inputs), reloaded(**inputs)
    key = "last_hidden_state" if "last_hidden_state" in before else "logits"
    if not torch.equal(before[key], after[key]):
        raise RuntimeError(f"The converted checkpoint in {output_dir} does not reproduce {source}'s outputs.")
    print(f"{source} → {output_dir}: {model_class.__name__}, {sum(p.numel() for p in model.parameters()):,} parameters")
    return reloaded


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="MrCogito checkpoint folder or Hub id (config.json + model.safetensors).")
    parser.add_argument("output_dir", help="Folder to write the converted Hub checkpoint to.")
    parser.add_argument("--tokenizer_name", default=None, help="Tokenizer folder or Hub id, if SRC has none.")
    args = parser.parse_args(argv)
    if os.path.exists(os.path.join(args.output_dir, "config.json")):
        parser.error(f"{args.output_dir} already holds a checkpoint: choose an empty output folder.")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert(args.source, args.output_dir, args.tokenizer_name)


if __name__ == "__main__":
    sys.exit(main())
