"""How fast the distilled student embeds sentences and long documents, against its teacher, in one run.

The student is the `distill_minilm` recipe's concept encoder (H384 L2 C16; a trained checkpoint with
`--student`, else untrained: speed does not depend on the weights); its position table is widened to the longest
document measured (`max_position_embeddings`, which costs no time per token). The teacher is all-MiniLM-L6-v2, which
reads at most 256 word pieces: a sentence is one forward; a longer document is cut into chunks of 254 word pieces
(plus [CLS] and [SEP]) whose embeddings are averaged, the usual way to embed a long text with it. Both read the same
WikiText-2 text, tokenised by the same tokenizer (the teacher's), in inference mode, float32, on the CPU.

    python benchmarks/bench_distill.py                      # sentences (N ≈ 32, batch 64), documents 512 / 2048 / 8192
    python benchmarks/bench_distill.py --student outputs/distill_run --repeats 5

Prints one Markdown table: tokens/s of each model and the student/teacher ratio.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from concept_encoder.configuration_concept_encoder import ConceptEncoderConfig  # noqa: E402
from concept_encoder.modeling_concept_encoder import ConceptEncoderModel  # noqa: E402
from concept_encoder.training.distill import default_teacher, load_teacher  # noqa: E402
from concept_encoder.training.recipes import RECIPES  # noqa: E402

TEACHER_CHUNK = 254  # word pieces per teacher chunk: its 256 positions less [CLS] and [SEP]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = os.environ.get("CONCEPT_ENCODER_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--data_dir", default=data)
    parser.add_argument("--student", default=None, help="a distilled checkpoint (default: the recipe, untrained)")
    parser.add_argument("--sentence_batch", type=int, default=64)
    parser.add_argument("--document_lengths", default="512,2048,8192")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (after one warm-up); the best is kept")
    return parser.parse_args(argv)


def best_time(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    args = parse_args(argv)
    torch.set_flush_denormal(True)
    lengths = [int(length) for length in args.document_lengths.split(",")]
    teacher = load_teacher(default_teacher())
    transformer = teacher[0].auto_model.eval()
    tokenizer = teacher.tokenizer
    if args.student:
        student = ConceptEncoderModel.from_pretrained(args.student).eval()
    else:
        config = ConceptEncoderConfig(
            **RECIPES["distill_minilm"].config, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id
        )
        student = ConceptEncoderModel(config).eval()
    lines = (Path(args.data_dir) / "corpus" / "wikitext-2" / "test.txt").read_text(encoding="utf-8").splitlines()
    ids = tokenizer(" ".join(line.strip() for line in lines if line.strip()), add_special_tokens=False)["input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    def teacher_embed(batch_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = transformer(input_ids=batch_ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).float()
        return (states * weights).sum(1) / weights.sum(1)

    rows = []
    with torch.inference_mode():
        # sentences: N ≈ 32 (30 word pieces + [CLS] and [SEP]), a batch of them
        sentence = torch.tensor([[cls, *ids[i * 30 : i * 30 + 30], sep] for i in range(args.sentence_batch)])
        mask = torch.ones_like(sentence)
        tokens = sentence.numel()
        student_s = best_time(lambda: student(input_ids=sentence, attention_mask=mask), args.repeats)
        teacher_s = best_time(lambda: teacher_embed(sentence, mask), args.repeats)
        rows.append((f"sentences, N = {sentence.shape[1]}, batch {args.sentence_batch}", "one forward", tokens,
                     student_s, teacher_s))  # fmt: skip
        for length in lengths:
            document = ids[: length - 2]
            if len(document) < length - 2:
                raise SystemExit(f"WikiText-2 test has {len(ids)} word pieces, fewer than {length}.")
            if length > student.config.max_position_embeddings:
                student.config.max_position_embeddings = length
                old = student.embeddings.position_embeddings
                wider = torch.nn.Embedding(length, old.embedding_dim)
                wider.weight[: old.num_embeddings] = old.weight
                student.embeddings.position_embeddings = wider
            full = torch.tensor([[cls, *document, sep]])
            chunks = [document[i : i + TEACHER_CHUNK] for i in range(0, len(document), TEACHER_CHUNK)]
            padded = torch.full((len(chunks), TEACHER_CHUNK + 2), tokenizer.pad_token_id)
            chunk_mask = torch.zeros_like(padded)
            for row, chunk in enumerate(chunks):
                padded[row, : len(chunk) + 2] = torch.tensor([cls, *chunk, sep])
                chunk_mask[row, : len(chunk) + 2] = 1
            student_s = best_time(lambda full=full: student(input_ids=full), args.repeats)
            teacher_s = best_time(
                lambda padded=padded, chunk_mask=chunk_mask: teacher_embed(padded, chunk_mask).mean(0), args.repeats
            )
            rows.append((f"document, N = {length}", f"{len(chunks)} chunks of ≤ 256, averaged", length, student_s,
                         teacher_s))  # fmt: skip
    print(f"threads: {torch.get_num_threads()}, student: {args.student or 'distill_minilm recipe (untrained)'}\n")
    print("| Input | Teacher reads it as | Student tokens/s | Teacher tokens/s | Student / teacher |")
    print("|---|---|---|---|---|")
    for name, how, tokens, student_s, teacher_s in rows:
        print(
            f"| {name} | {how} | {tokens / student_s:,.0f} | {tokens / teacher_s:,.0f} | {teacher_s / student_s:.1f}× |"
        )


if __name__ == "__main__":
    main()
