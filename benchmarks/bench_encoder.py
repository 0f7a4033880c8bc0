"""Speed and memory of concept encoders against the encoders a user would pick instead, in one run.

For every length in `--lengths` it times a training step (forward + backward) and a forward-only pass of
`ConceptEncoderModel` with perceiver layers (reading the tokens in every layer, and in the first only:
`perceiver_read_once`, `encoder_token_read_layers=[0]`) and with BiXT layers, and of the peers with the same hidden
size, depth, heads, vocabulary and FFN parameters (dropout off in every model): `transformers.BertModel` (full
attention, SDPA), `transformers.ModernBertModel` (local 128-token attention with global attention every third layer,
rotary positions, SDPA) and `transformers.PerceiverModel` (`hf_perceiver`: the latents read the tokens once, in one
cross-attention, then `num_hidden_layers` latent self-attention blocks). It prints one markdown table: median seconds
per step after warm-up, tokens/s, the ratio to each peer, the peak memory of the step and the achieved GFLOP/s of an
analytic FLOP count beside the measured fp32 (or bf16) matmul peak of the same machine. Then a long-sequence check (one
training step at `--long_length`, 65536 by default, within `--memory_budget_gib`), MrCogito's scaling rule (C grows with
N: `--concepts_per_tokens 4096:512,32768:2048,262144:4096`, one training step each) and one training step of the
perceiver MLM head with sparse decoding (15% of positions labelled) against decoding every position.

Configurations that would not fit are reported as "skipped (reason)": before each one the step time is
extrapolated from the previous length of the same model by the FLOP count, and the peak memory linearly (a lower
bound for BERT, whose attention grows faster); over `--time_budget_s` or `--memory_budget_gib` it is not run.

BERT's FFN is a plain GELU MLP; the concept encoder's is gated (`wo(gelu(gate)·up)`, 3·H·I weights). BERT gets
`--bert_intermediate_size` = 1.5 × `--intermediate_size` by default, so both FFNs have the same parameter count and
the same FLOPs per row: the comparison measures the attention pattern, not a smaller BERT. ModernBERT's FFN is gated
like ours (`intermediate_size` as is); HF Perceiver's latent MLP is plain, widened by `bert_intermediate_size /
hidden_size` (its cross-attention block keeps the library's default MLP of widening 1). ModernBERT's local layers run
through SDPA with a dense `[N, N]` sliding-window mask on CPU (the flash-attention kernel that skips the masked blocks
is CUDA-only), so its FLOPs are counted as computed: full attention in every layer.

Peak memory: `torch.cuda.max_memory_allocated` on GPU; on CPU the growth of the resident-set high-water mark (Linux
`VmHWM`, reset through `/proc/self/clear_refs` before each configuration so one process measures each on its own).
It covers activations, gradients and temporaries of the step, not the weights.

    python benchmarks/bench_encoder.py                      # the full table (7 min on 2 quiet cores before the peers; ModernBERT adds about what BERT takes)
    python benchmarks/bench_encoder.py --quick              # lengths 512 2048, one repeat, long check at 16384
    python benchmarks/bench_encoder.py --lengths 512 --batch_size 16
    python benchmarks/bench_encoder.py --device cuda --bf16
"""

import ctypes
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertModel,
    HfArgumentParser,
    ModernBertConfig,
    ModernBertModel,
    PerceiverConfig,
    PerceiverModel,
)
from transformers.models.perceiver.modeling_perceiver import PerceiverTextPreprocessor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from concept_encoder.configuration_concept_encoder import ConceptEncoderConfig  # noqa: E402
from concept_encoder.modeling_concept_encoder import ConceptEncoderForMaskedLM, ConceptEncoderModel  # noqa: E402

# perceiver_read_once: our perceiver with encoder_token_read_layers=[0], the tokens read once as in HF Perceiver
MODELS = ("perceiver", "perceiver_read_once", "bixt", "bert", "modernbert", "hf_perceiver")
PEERS = ("bert", "modernbert", "hf_perceiver")  # the table's "vs" columns: each peer's time over the row's
MODES = ("train", "forward")
GIB = 2**30
MIB = 2**20


@dataclass
class BenchmarkArguments:
    lengths: list[int] = field(default_factory=lambda: [512, 1024, 2048, 4096, 8192], metadata={"help": "Lengths N."})
    batch_size: int = field(default=1, metadata={"help": "Sequences per step."})
    repeats: int = field(default=3, metadata={"help": "Timed steps per configuration; the median is reported."})
    warmup: int = field(default=1, metadata={"help": "Untimed steps before the timed ones."})
    models: list[str] = field(default_factory=lambda: list(MODELS), metadata={"help": f"Any of {MODELS}."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 autocast (matmul peak measured in bfloat16 too)."})
    threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads; default: torch's choice."})
    peak_matmul_size: int | None = field(
        default=None, metadata={"help": "Side of the square matmul that measures the peak; default 8192 GPU, 2048 CPU."}
    )
    hidden_size: int = 512
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    concept_num: int = 128
    vocab_size: int = 32000
    bert_intermediate_size: int | None = field(
        default=None, metadata={"help": "BERT FFN width; default 1.5 x intermediate_size (same FFN parameters)."}
    )
    time_budget_s: float = field(
        default=150.0, metadata={"help": "Skip a configuration whose warm-up + repeats would take longer."}
    )
    memory_budget_gib: float = field(default=8.0, metadata={"help": "Skip (or fail) a step over this peak memory."})
    long_length: int = field(default=65536, metadata={"help": "Length of the long training-step check; 0 skips it."})
    concepts_per_tokens: str | None = field(
        default=None,
        metadata={
            "help": "The (N, C) scaling sweep: comma-separated N:C pairs, one training step each, e.g. MrCogito's "
            "plan '4096:512,32768:2048,262144:4096'."
        },
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute each layer in the backward pass (every model that supports it)."}
    )
    mlm_length: int = field(default=512, metadata={"help": "Length of the MLM head comparison; 0 skips it."})
    mlm_batch_size: int = 8
    mlm_probability: float = 0.15
    quick: bool = field(
        default=False, metadata={"help": "Lengths 512 2048, one repeat, long check at 16384, MLM batch 2."}
    )

    def __post_init__(self):
        if self.quick:
            self.lengths, self.repeats, self.long_length, self.mlm_batch_size = [512, 2048], 1, 16384, 2
        unknown = [name for name in self.models if name not in MODELS]
        if unknown:
            raise ValueError(f"--models has unknown names {unknown}: choose from {list(MODELS)}.")
        if self.device not in ("cpu", "cuda") or (self.device == "cuda" and not torch.cuda.is_available()):
            raise ValueError(f"--device {self.device!r}: use cpu, or cuda on a machine with a CUDA GPU.")
        if self.bert_intermediate_size is None:
            self.bert_intermediate_size = 3 * self.intermediate_size // 2
        if "hf_perceiver" in self.models and self.bert_intermediate_size % self.hidden_size:
            raise ValueError(
                f"--bert_intermediate_size {self.bert_intermediate_size} is not a multiple of --hidden_size "
                f"{self.hidden_size}: HF Perceiver's MLP width is an integer widening factor of the hidden size."
            )
        self.sweep = parse_concepts_per_tokens(self.concepts_per_tokens)
        if self.warmup < 1:
            raise ValueError(f"--warmup {self.warmup}: must be at least 1 (the first warm-up step measures memory).")
        self.lengths = sorted(self.lengths)


def parse_concepts_per_tokens(text: str | None) -> list[tuple[int, int]]:
    """`"4096:512, 32768:2048"` → `[(4096, 512), (32768, 2048)]`: the (N, C) pairs of the scaling sweep, sorted by N."""
    pairs = []
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        length, separator, concepts = item.partition(":")
        try:
            pair = (int(length), int(concepts))
        except ValueError:
            pair = None
        if not separator or pair is None or min(pair) <= 0:
            raise ValueError(
                f"--concepts_per_tokens item {item!r} is not N:C with positive integers (e.g. '4096:512')."
            )
        pairs.append(pair)
    lengths = [length for length, _ in pairs]
    if len(set(lengths)) != len(lengths):
        raise ValueError(f"--concepts_per_tokens {text!r} names a length twice: give one C per N.")
    return sorted(pairs)


# ----------------------------------------------------------------------------------------------------------------------
# Analytic FLOP count
# ----------------------------------------------------------------------------------------------------------------------


def matmul_flops(rows: int, inner: int, cols: int) -> int:
    """`[rows, inner] @ [inner, cols]`: one multiply and one add per term."""
    return 2 * rows * inner * cols


def attention_flops(queries: int, keys: int, hidden: int) -> int:
    """Logits q·kᵀ and the weighted sum of values, all heads together (heads × head_dim = hidden)."""
    return 2 * matmul_flops(queries, hidden, keys)


def ffn_flops(rows: int, hidden: int, intermediate: int, gated: bool) -> int:
    """Gated FFN: `[H, 2I]` in, `[I, H]` out; plain FFN: `[H, I]` in, `[I, H]` out."""
    return matmul_flops(rows, hidden, (2 if gated else 1) * intermediate) + matmul_flops(rows, intermediate, hidden)


def layer_flops(
    model: str,
    length: int,
    hidden: int,
    intermediate: int,
    concepts: int,
    token_ffn: bool = False,
    reads_tokens: bool = True,
) -> int:
    """Forward matmul FLOPs of one layer on one sequence (norms, softmax and elementwise ops are not counted).

    perceiver: concepts read the tokens (q of C rows, k/v of N rows), self-attention and FFN on C rows;
    bixt: + tokens read the concepts (q/out of N rows, k/v of C rows); bert: self-attention and FFN on N rows;
    modernbert: as bert with a gated FFN (full attention in every layer: see the module docstring). A concept layer
    with `reads_tokens=False` has no cross-attention (nor, in BiXT, token update): self-attention and FFN on C rows.
    """
    n, h, c = length, hidden, concepts
    if model in ("bert", "modernbert"):
        return (
            matmul_flops(n, h, 3 * h)
            + attention_flops(n, n, h)
            + matmul_flops(n, h, h)
            + ffn_flops(n, h, intermediate, model == "modernbert")
        )
    cross = matmul_flops(c, h, h) + matmul_flops(n, h, 2 * h) + attention_flops(c, n, h) + matmul_flops(c, h, h)
    concept_self = matmul_flops(c, h, 3 * h) + attention_flops(c, c, h) + matmul_flops(c, h, h)
    flops = concept_self + ffn_flops(c, h, intermediate, True)
    if not reads_tokens:
        return flops
    flops += cross
    if model == "bixt":
        flops += matmul_flops(n, h, h) + matmul_flops(c, h, 2 * h) + attention_flops(n, c, h) + matmul_flops(n, h, h)
        if token_ffn:
            flops += ffn_flops(n, h, intermediate, True)
    return flops


def hf_perceiver_flops(length: int, hidden: int, intermediate: int, latents: int, self_attends: int) -> int:
    """Forward matmul FLOPs of `transformers.PerceiverModel` on one sequence: one cross-attention of the latents over
    the tokens with its MLP of widening 1, then `self_attends` blocks of latent self-attention + plain MLP."""
    n, h, c = length, hidden, latents
    cross = matmul_flops(c, h, h) + matmul_flops(n, h, 2 * h) + attention_flops(c, n, h) + matmul_flops(c, h, h)
    cross += ffn_flops(c, h, h, False)
    block = matmul_flops(c, h, 3 * h) + attention_flops(c, c, h) + matmul_flops(c, h, h)
    block += ffn_flops(c, h, intermediate, False)
    return cross + self_attends * block


def concept_encoder_flops(model: str, args: BenchmarkArguments, length: int, concepts: int) -> int:
    """Forward FLOPs of the concept encoder stack on one sequence; `perceiver_read_once` reads the tokens in its first
    layer only, the others are concept self-attention + FFN."""
    hidden, intermediate, layers = args.hidden_size, args.intermediate_size, args.num_hidden_layers
    if model == "perceiver_read_once":
        concept_only = layer_flops("perceiver", length, hidden, intermediate, concepts, reads_tokens=False)
        return layer_flops("perceiver", length, hidden, intermediate, concepts) + (layers - 1) * concept_only
    return layers * layer_flops(model, length, hidden, intermediate, concepts)


def step_flops(
    model: str, args: BenchmarkArguments, length: int, batch: int, mode: str, concepts: int | None = None
) -> int:
    """FLOPs of one step of the encoder stack; a training step counts 3× the forward (backward = 2× forward).
    `concepts` (C, or HF Perceiver's latents) defaults to `--concept_num`."""
    concepts = concepts or args.concept_num
    layers, hidden = args.num_hidden_layers, args.hidden_size
    if model == "hf_perceiver":
        forward = hf_perceiver_flops(length, hidden, args.bert_intermediate_size, concepts, layers)
    elif model in ("bert", "modernbert"):
        intermediate = args.bert_intermediate_size if model == "bert" else args.intermediate_size
        forward = layers * layer_flops(model, length, hidden, intermediate, concepts)
    else:
        forward = concept_encoder_flops(model, args, length, concepts)
    forward *= batch
    if mode == "forward":
        return forward
    recompute = args.gradient_checkpointing and model != "hf_perceiver"  # the layers' forward runs again
    return (4 if recompute else 3) * forward


def matmul_peak_gflops(device: str, dtype: torch.dtype, size: int | None = None) -> float:
    """Best rate of a large square matmul on this machine, in GFLOP/s: the ceiling the models are compared with."""
    size = size or (8192 if device == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, device, warmup=2, repeats=5)
    return matmul_flops(size, size, size) / min(seconds) / 1e9


# ----------------------------------------------------------------------------------------------------------------------
# Timing and memory
# ----------------------------------------------------------------------------------------------------------------------


def load_average() -> str:
    """`os.getloadavg()` as text: on a shared machine the tables are read beside it."""
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def synchronize(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(step: Callable[[], object], device: str, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of `step`, after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key))


class PeakMemory:
    """Peak memory growth over a block, in bytes (`None` where the platform cannot tell): CUDA's allocator peak, or
    on Linux (glibc) the resident-set high-water mark, reset through `/proc/self/clear_refs` when the block starts,
    after `malloc_trim` has returned freed heap pages (pages kept by malloc would be reused without counting)."""

    def __init__(self, device: str):
        self.device = device
        self.peak = None

    def __enter__(self):
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
        else:
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, so reuse of them counts
                with open("/proc/self/clear_refs", "w") as clear_refs:
                    clear_refs.write("5")  # resets VmHWM to the current resident set
                self.baseline = _proc_status_kib("VmRSS") * 1024
            except (OSError, AttributeError):
                self.baseline = None
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            self.peak = torch.cuda.max_memory_allocated() - self.baseline
        elif self.baseline is not None:
            self.peak = _proc_status_kib("VmHWM") * 1024 - self.baseline


@dataclass
class Result:
    model: str
    length: int
    batch: int
    mode: str
    seconds: float | None = None  # median seconds per step
    peak_bytes: int | None = None
    flops: int = 0
    skipped: str | None = None
    concepts: int | None = None  # C (latents for hf_perceiver); None for BERT and ModernBERT


# ----------------------------------------------------------------------------------------------------------------------
# Models and steps
# ----------------------------------------------------------------------------------------------------------------------


def shared_sizes(args: BenchmarkArguments, length: int) -> dict:
    """The config fields every model of the comparison takes alike: same width, depth, heads, vocabulary and
    positions, dropout off."""
    return dict(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        max_position_embeddings=length,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def concept_config(args: BenchmarkArguments, model: str, length: int, concepts: int) -> ConceptEncoderConfig:
    return ConceptEncoderConfig(
        **shared_sizes(args, length),
        intermediate_size=args.intermediate_size,
        concept_num=concepts,
        encoder_layer_type="bixt" if model == "bixt" else "perceiver",
        encoder_token_read_layers=[0] if model == "perceiver_read_once" else None,
    )


def build_encoder(model: str, args: BenchmarkArguments, length: int, concepts: int | None = None) -> torch.nn.Module:
    """The encoder `model` sized for length `length` (positions), with `concepts` concepts or latents."""
    concepts = concepts or args.concept_num
    sizes = shared_sizes(args, length)
    if model == "bert":
        config = BertConfig(**sizes, intermediate_size=args.bert_intermediate_size, attn_implementation="sdpa")
        encoder = BertModel(config, add_pooling_layer=False)
    elif model == "modernbert":
        config = ModernBertConfig(
            vocab_size=args.vocab_size,
            hidden_size=args.hidden_size,
            num_hidden_layers=args.num_hidden_layers,
            num_attention_heads=args.num_attention_heads,
            intermediate_size=args.intermediate_size,  # gated like ours: the same FFN parameters
            max_position_embeddings=length,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            cls_token_id=1,
            sep_token_id=2,
            attn_implementation="sdpa",
        )
        encoder = ModernBertModel(config)
    elif model == "hf_perceiver":
        config = PerceiverConfig(
            num_latents=concepts,
            d_latents=args.hidden_size,
            d_model=args.hidden_size,
            num_blocks=1,
            num_self_attends_per_block=args.num_hidden_layers,
            num_self_attention_heads=args.num_attention_heads,
            num_cross_attention_heads=args.num_attention_heads,
            self_attention_widening_factor=args.bert_intermediate_size // args.hidden_size,
            attention_probs_dropout_prob=0.0,
            vocab_size=args.vocab_size,
            max_position_embeddings=length,
        )
        encoder = PerceiverModel(config, input_preprocessor=PerceiverTextPreprocessor(config))
    else:
        encoder = ConceptEncoderModel(concept_config(args, model, length, concepts))
    if args.gradient_checkpointing and encoder.supports_gradient_checkpointing:
        encoder.activation_checkpointing_enable()
    return encoder.to(args.device)


def random_batch(args: BenchmarkArguments, length: int, batch: int, model: str = "") -> dict[str, torch.Tensor]:
    """Random token ids with a full attention mask; HF Perceiver names its input `inputs`."""
    input_ids = torch.randint(5, args.vocab_size, (batch, length), device=args.device)
    return {
        "inputs" if model == "hf_perceiver" else "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
    }


def make_step(model: torch.nn.Module, inputs: dict, mode: str, args: BenchmarkArguments) -> Callable[[], None]:
    """A training step (gradients freed first, so each step allocates its own) or a forward pass under no_grad.
    Encoders train on a stand-in loss, the mean square of `last_hidden_state`; heads on their own `loss`."""
    autocast = torch.autocast(args.device, dtype=torch.bfloat16) if args.bf16 else nullcontext()

    def train():
        model.zero_grad(set_to_none=True)
        with autocast:
            outputs = model(**inputs)
            loss = (
                outputs.loss if outputs.get("loss") is not None else outputs.last_hidden_state.float().square().mean()
            )
        loss.backward()

    def forward():
        with torch.no_grad(), autocast:
            model(**inputs)

    model.train(mode == "train")
    return train if mode == "train" else forward


def measure(steps: dict[str, Callable[[], None]], device: str, warmup: int, repeats: int) -> dict[str, tuple]:
    """`(median seconds per step, peak memory growth)` of each named step.

    The first warm-up call of each step runs alone under `PeakMemory`; the timed calls are interleaved, one call of
    each step per round, so load from other processes on a shared machine hits every model alike and the ratios
    stay meaningful. With `repeats=0` the warm-up call's time is reported.
    """
    peaks, seconds = {}, {}
    for name, step in steps.items():
        with PeakMemory(device) as memory:
            seconds[name] = timed(step, device, warmup=0, repeats=1)
        peaks[name] = memory.peak
        timed(step, device, warmup=warmup - 1, repeats=0)
    if repeats:
        seconds = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            seconds[name] += timed(step, device, warmup=0, repeats=1)
    return {name: (statistics.median(seconds[name]), peaks[name]) for name in steps}


def estimate_skip(result: Result, previous: Result | None, steps: int, args: BenchmarkArguments) -> str | None:
    """Why `result` should not run, extrapolated from the last measured length of the same model and mode."""
    if previous is None or previous.seconds is None:
        return None
    reasons = []
    seconds = previous.seconds * result.flops / previous.flops * steps
    if seconds > args.time_budget_s:
        reasons.append(f"est. {seconds:,.0f} s for {steps} step(s) > --time_budget_s {args.time_budget_s:g}")
    if previous.peak_bytes is not None:
        memory = previous.peak_bytes * result.length * result.batch / (previous.length * previous.batch)
        if result.model == "hf_perceiver" and result.mode == "train":  # eager attention keeps its weights
            memory = max(memory, 2 * 4 * result.batch * args.num_attention_heads * result.concepts * result.length)
        if memory > args.memory_budget_gib * GIB:
            reasons.append(f"est. ≥ {memory / GIB:.1f} GiB > --memory_budget_gib {args.memory_budget_gib:g}")
    return "; ".join(reasons) or None


def run_group(model_names, args, length, batch, mode, previous, repeats, warmup, concepts=None) -> dict[str, Result]:
    """Every model of `model_names` at one length and mode, timed together (see `measure`), except those whose
    extrapolated cost from `previous[name]` (the last measured length) exceeds the budgets."""
    concepts = concepts or args.concept_num
    results = {
        name: Result(
            name,
            length,
            batch,
            mode,
            flops=step_flops(name, args, length, batch, mode, concepts),
            concepts=None if name in ("bert", "modernbert") else concepts,
        )
        for name in model_names
    }
    steps = {}
    for name, result in results.items():
        result.skipped = estimate_skip(result, previous.get(name), repeats + warmup, args)
        if not result.skipped:
            torch.manual_seed(0)
            encoder = build_encoder(name, args, length, concepts)
            steps[name] = make_step(encoder, random_batch(args, length, batch, name), mode, args)
    try:
        measured = measure(steps, args.device, warmup, repeats)
    except torch.OutOfMemoryError:
        measured = {}
        for name in steps:
            results[name].skipped = "out of device memory"
    for name, (seconds, peak) in measured.items():
        results[name].seconds, results[name].peak_bytes = seconds, peak
    del steps
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return results


def mlm_steps(args: BenchmarkArguments) -> dict[str, Result]:
    """Training steps of the perceiver MLM head, timed together: labels on `mlm_probability` of the positions
    (sparse decoding: only those reach the decoder FFN and LM head) and labels on every position (dense)."""
    torch.manual_seed(0)
    config = concept_config(args, "perceiver", args.mlm_length, args.concept_num)
    model = ConceptEncoderForMaskedLM(config).to(args.device)  # decoder_type="perceiver", the default
    sparse = random_batch(args, args.mlm_length, args.mlm_batch_size)
    labelled = torch.rand(sparse["input_ids"].shape, device=args.device) < args.mlm_probability
    dense = {**sparse, "labels": sparse["input_ids"]}
    sparse["labels"] = sparse["input_ids"].masked_fill(~labelled, -100)
    steps = {"mlm-sparse": make_step(model, sparse, "train", args), "mlm-dense": make_step(model, dense, "train", args)}
    return {
        name: Result(name, args.mlm_length, args.mlm_batch_size, "train", seconds=seconds, peak_bytes=peak)
        for name, (seconds, peak) in measure(steps, args.device, args.warmup, args.repeats).items()
    }


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------


PEER_NAMES = {"bert": "BERT", "modernbert": "ModernBERT", "hf_perceiver": "HF Perceiver"}


def table_header(peers: list[str], concepts: bool = False) -> str:
    """The results table's header: one "vs <peer>" column per peer in the run; a C column for the sweep."""
    columns = ["model", "N", *(["C"] if concepts else []), "batch", "mode", "ms/step", "tokens/s"]
    columns += [f"vs {PEER_NAMES[peer]}" for peer in peers]
    columns += ["peak MiB", "GFLOP/step", "GFLOP/s", "% matmul peak"]
    return "| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|"


def format_row(result: Result, peers: dict[str, Result | None], peak_gflops: float, concepts: bool = False) -> str:
    """One table row; each "vs" column is the peer's seconds per step over this row's (— where either is missing)."""
    head = f"| {result.model} | {result.length} "
    if concepts:
        head += f"| {result.concepts or '—'} "
    head += f"| {result.batch} | {result.mode} "
    if result.skipped:
        return head + f"| skipped ({result.skipped}) |" + " |" * (5 + len(peers))
    tokens_per_second = result.length * result.batch / result.seconds
    ratios = [
        f"{peer.seconds / result.seconds:.1f}×" if peer is not None and peer.seconds is not None else "—"
        for peer in peers.values()
    ]
    memory = f"{result.peak_bytes / MIB:,.0f}" if result.peak_bytes is not None else "n/a"
    gflops = result.flops / result.seconds / 1e9
    return (
        head
        + f"| {1000 * result.seconds:,.1f} | {tokens_per_second:,.0f} | "
        + "".join(f"{ratio} | " for ratio in ratios)
        + f"{memory} | {result.flops / 1e9:,.1f} | {gflops:,.1f} | {100 * gflops / peak_gflops:.0f}% |"
    )


def parameter_count(model_name: str, args: BenchmarkArguments) -> int:
    return sum(p.numel() for p in build_encoder(model_name, args, 512).to("cpu").parameters())


def main(argv: list[str] | None = None) -> dict[tuple[str, int, str], Result]:
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the training scripts do, so the benchmark times what they run
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    peak_gflops = matmul_peak_gflops(args.device, dtype, args.peak_matmul_size)
    print(
        f"## Concept encoders vs BERT, ModernBERT, HF Perceiver ({args.device}: {device_name}, torch {torch.__version__})\n"
    )
    print(
        f"- threads: torch.get_num_threads() = {torch.get_num_threads()}; precision: {'bf16 autocast' if args.bf16 else 'fp32'}"
        "; denormals flushed to zero"
    )
    print(f"- load average at start (1, 5, 15 min; {os.cpu_count()} CPUs): {load_average()}")
    print(f"- measured {dtype} matmul peak: {peak_gflops:,.1f} GFLOP/s")
    print(
        f"- sizes: H{args.hidden_size} L{args.num_hidden_layers} heads {args.num_attention_heads} C{args.concept_num}, "
        f"gated FFN {args.intermediate_size} (ModernBERT too); BERT and HF Perceiver plain FFN "
        f"{args.bert_intermediate_size} (same FFN parameters); vocab {args.vocab_size}; dropout off"
        + ("; gradient checkpointing (not HF Perceiver: unsupported)" if args.gradient_checkpointing else "")
    )
    print(
        "- parameters at 512 positions: "
        + ", ".join(f"{name} {parameter_count(name, args) / 1e6:.1f}M" for name in args.models)
        + f" (with the {args.vocab_size}×{args.hidden_size} token embeddings; ModernBERT has rotary positions)"
    )
    print(
        f"- median of {args.repeats} interleaved step(s) after {args.warmup} warm-up; "
        "peak memory = growth during the first warm-up step\n"
    )

    results: dict[tuple[str, int, str], Result] = {}
    order = [name for name in MODELS if name in args.models]
    peers = [name for name in PEERS if name in order]
    print(table_header(peers), flush=True)
    for length in args.lengths:
        for mode in MODES:
            previous = {}
            for name in order:
                measured = [
                    results[name, n, mode] for n in args.lengths if n < length and results[name, n, mode].seconds
                ]
                previous[name] = measured[-1] if measured else None
            group = run_group(order, args, length, args.batch_size, mode, previous, args.repeats, args.warmup)
            for name in order:
                results[name, length, mode] = group[name]
                print(format_row(group[name], {peer: group[peer] for peer in peers}, peak_gflops), flush=True)

    if args.long_length:
        print(f"\n### One training step at N={args.long_length}, batch 1 (budget {args.memory_budget_gib:g} GiB)\n")
        print(table_header([]), flush=True)
        for name in order:
            measured = [results[name, n, "train"] for n in args.lengths if results[name, n, "train"].seconds]
            previous = {name: measured[-1] if measured else None}
            result = run_group([name], args, args.long_length, 1, "train", previous, repeats=0, warmup=1)[name]
            if result.peak_bytes is not None and result.peak_bytes > args.memory_budget_gib * GIB:
                result.skipped = f"measured {result.peak_bytes / GIB:.1f} GiB > --memory_budget_gib"
            results[name, args.long_length, "long"] = result
            print(format_row(result, {}, peak_gflops), flush=True)

    if args.sweep:
        print(
            "\n### MrCogito's scaling rule: C grows with N, one training step each, batch 1 "
            f"(budgets {args.time_budget_s:g} s, {args.memory_budget_gib:g} GiB)\n"
        )
        print(table_header(peers, concepts=True), flush=True)
        for length, concepts in args.sweep:
            previous = {}
            for name in order:
                measured = [
                    result for key, result in results.items() if key[0] == name and key[2] in ("train", "sweep")
                ]
                measured = [result for result in measured if result.seconds and result.batch == 1]
                previous[name] = max(measured, key=lambda result: result.length) if measured else None
            group = run_group(order, args, length, 1, "train", previous, repeats=0, warmup=1, concepts=concepts)
            for name in order:
                results[name, length, "sweep"] = group[name]
                row = format_row(group[name], {peer: group[peer] for peer in peers}, peak_gflops, concepts=True)
                print(row, flush=True)

    if args.mlm_length:
        print(
            f"\n### Perceiver MLM training step, N={args.mlm_length}, batch {args.mlm_batch_size}, vocab {args.vocab_size}\n"
        )
        mlm = mlm_steps(args)
        print("| decoding | ms/step | peak MiB | time vs dense |\n|---|---|---|---|")
        for name, label in (
            ("mlm-sparse", f"sparse ({100 * args.mlm_probability:g}% labelled)"),
            ("mlm-dense", "dense (every position)"),
        ):
            result = results[name, args.mlm_length, "train"] = mlm[name]
            memory = f"{result.peak_bytes / MIB:,.0f}" if result.peak_bytes is not None else "n/a"
            ratio = result.seconds / mlm["mlm-dense"].seconds
            print(f"| {label} | {1000 * result.seconds:,.1f} | {memory} | {ratio:.2f}× |", flush=True)
    print(f"\n- load average at the end: {load_average()}")
    return results


if __name__ == "__main__":
    main()
