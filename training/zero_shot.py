"""Zero-shot sentence similarity: score an encoder on STS-B dev and SICK relatedness without any fine-tuning.

Sentence vector: the mean of the final concept states for a concept encoder (`last_hidden_state`, `[batch, C, H]`;
the learned `ConceptPooler` of the classification heads is not trained before fine-tuning, so it is not used), or the
mean of the token states over the attention mask for any other `transformers` encoder (sentence-transformers'
mean pooling). Score of a pair: the cosine of the two vectors; of a dataset: Spearman's rank correlation between
the cosines and the gold scores, ×100, as the SBERT and SimCSE papers report it.

    python -m concept_encoder.training.zero_shot --model_name_or_path outputs/my_ckpt --data_dir ../shared/data
    python -m concept_encoder.training.zero_shot --model_name_or_path outputs/my_ckpt --from_scratch ...

Writes `zero_shot_results.json` and a `run_summary.json` (`"kind": "zero_shot"`) into `--output_dir`, and fills the
"Zero-shot STS" cell of the checkpoint's registry row.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils.logging import tqdm

from concept_encoder import modeling_concept_encoder  # noqa: F401  (registers the concept encoder with the Auto classes)
from concept_encoder.training.finish import finish_run
from concept_encoder.training.glue import SICK_FILE, TASKS, load_glue_dir, load_sick
from concept_encoder.training.run_info import SUMMARY_FILE, run_summary, scratch_run_id, timestamp

CONCEPT_MODEL_TYPE = "concept_encoder"
BENCHMARKS = ("stsb", "sickr")


def load_benchmark(name: str, data_dir: str | Path) -> tuple[list[str], list[str], list[float]]:
    """STS-B dev (`glue/STS-B/dev.tsv`) or SICK-R test (`sick/SICK.txt`) under the shared data folder."""
    if name == "sickr":
        return load_sick(Path(data_dir) / SICK_FILE, "TEST")
    if name == "stsb":
        dev = load_glue_dir(str(Path(data_dir) / "glue"), TASKS["stsb"])["validation"]
        return list(dev["sentence1"]), list(dev["sentence2"]), [float(score) for score in dev["label"]]
    raise ValueError(f"Zero-shot benchmark {name!r} is unknown: choose one of {list(BENCHMARKS)}.")


def spearman_of_cosines(first: torch.Tensor, second: torch.Tensor, gold) -> float:
    """Spearman ×100 between the cosines of paired rows of `first` and `second` (`[pairs, H]`) and `gold`."""
    cosines = torch.nn.functional.cosine_similarity(first.float(), second.float(), dim=-1)
    return float(100 * spearmanr(cosines.numpy(), np.asarray(gold, dtype=np.float64))[0])


@torch.no_grad()
def sentence_vectors(
    model, tokenizer, sentences: list[str], max_length: int, batch_size: int = 128, desc: str = "Encoding"
) -> torch.Tensor:
    """`[sentences, H]`: mean of the final concept states (concept encoder) or of the token states over the mask,
    with a progress bar named `desc` over the batches."""
    model.eval()
    concept = model.config.model_type == CONCEPT_MODEL_TYPE
    vectors = []
    for start in tqdm(range(0, len(sentences), batch_size), desc=desc, leave=False):
        inputs = tokenizer(
            sentences[start : start + batch_size],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        states = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
        if concept:
            vectors.append(states.mean(dim=1))  # [batch, C, H] -> [batch, H]
        else:
            mask = inputs["attention_mask"].unsqueeze(-1).to(states.dtype)  # [batch, seq, 1]
            vectors.append((states * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1))
    return torch.cat(vectors)


def load_encoder(model_name_or_path: str, from_scratch: bool = False, seed: int = 42):
    """The checkpoint's encoder (`AutoModel`, heads dropped), or with `from_scratch` a random one of its config
    (initialised from `seed`)."""
    config = AutoConfig.from_pretrained(model_name_or_path)
    if from_scratch:
        torch.manual_seed(seed)
        return AutoModel.from_config(config)
    return AutoModel.from_pretrained(model_name_or_path, config=config)


def score_model(
    model, tokenizer, data_dir, benchmarks=BENCHMARKS, max_length: int = 128, max_pairs: int | None = None
) -> dict[str, float]:
    """`{"stsb": Spearman×100, "sickr": ...}` of `model` on each benchmark (its first `max_pairs` pairs if given)."""
    max_length = min(max_length, getattr(model.config, "max_position_embeddings", max_length))
    scores = {}
    for name in benchmarks:
        first, second, gold = (column[:max_pairs] for column in load_benchmark(name, data_dir))
        vectors = sentence_vectors(model, tokenizer, first + second, max_length, desc=f"Encoding {name}")
        scores[name] = spearman_of_cosines(vectors[: len(first)], vectors[len(first) :], gold)
    return scores


def checkpoint_run_id(model_name_or_path: str, from_scratch: bool, config) -> str:
    """The id of the registry row this score belongs to: the checkpoint's run id, or its random-init twin's (the
    `scratch_...` id run_glue.py gives it)."""
    if from_scratch:
        return scratch_run_id(config)
    summary = Path(model_name_or_path) / SUMMARY_FILE
    if summary.is_file():
        return json.loads(summary.read_text(encoding="utf-8"))["run_id"]
    return Path(model_name_or_path).name or model_name_or_path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", required=True, help="checkpoint folder (any transformers encoder)")
    parser.add_argument("--tokenizer_name", default=None, help="default: the checkpoint's own")
    parser.add_argument("--from_scratch", action="store_true", help="random init of the checkpoint's config")
    parser.add_argument("--data_dir", default="../shared/data", help="holds glue/STS-B/dev.tsv and sick/SICK.txt")
    parser.add_argument("--benchmarks", default=",".join(BENCHMARKS), help=f"comma list of {list(BENCHMARKS)}")
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--max_pairs", type=int, default=None, help="score only the first N pairs (smoke tests)")
    parser.add_argument("--output_dir", default=None, help="where zero_shot_results.json goes; default: print only")
    parser.add_argument("--registry_file", default="experiments/registry.md", help="'' for none")
    args = parser.parse_args(argv)
    benchmarks = [name.strip() for name in args.benchmarks.split(",") if name.strip()]
    unknown = [name for name in benchmarks if name not in BENCHMARKS]
    if unknown:
        parser.error(f"--benchmarks {unknown} unknown: choose from {list(BENCHMARKS)}.")
    torch.set_flush_denormal(True)
    model = load_encoder(args.model_name_or_path, args.from_scratch)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name or args.model_name_or_path)
    scores = score_model(model, tokenizer, args.data_dir, benchmarks, args.max_seq_length, args.max_pairs)
    checkpoint_id = checkpoint_run_id(args.model_name_or_path, args.from_scratch, model.config)
    summary = run_summary(
        "zero_shot",
        f"zero_shot_{checkpoint_id}",
        model.config,
        args.output_dir,
        timestamp=timestamp(),
        checkpoint=args.model_name_or_path,
        checkpoint_run_id=checkpoint_id,
        from_scratch=args.from_scratch,
        pooling="mean of concept states" if model.config.model_type == CONCEPT_MODEL_TYPE else "masked token mean",
        metric="spearman x 100 of cosine similarity",
        scores=scores,
        pairs=args.max_pairs or "all",
    )
    print(json.dumps(scores, indent=2))
    if args.output_dir:
        output = Path(args.output_dir)
        output.mkdir(parents=True, exist_ok=True)
        (output / "zero_shot_results.json").write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
        finish_run(summary, output, args.registry_file)
    return summary


if __name__ == "__main__":
    main()
