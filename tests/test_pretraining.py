"""run_pretraining.py end to end on real WikiText-2 text with tiny models: complete Hub folders for every model type,
objective and layer type, loading in a fresh process, exact resume, two processes, wandb offline, output folders that
it resumes, refuses or checks before training, and clear errors for bad input."""

import codecs
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY_SIZES, Killed, run_isolated
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoTokenizer, HfArgumentParser

from concept_encoder import run_pretraining
from concept_encoder.collators import DataCollatorForTSDAE
from concept_encoder.configuration_concept_encoder import ConceptEncoderConfig
from concept_encoder.model_cards import write_model_card
from concept_encoder.modeling_concept_encoder import ConceptEncoderForMaskedLM
from concept_encoder.training import hub as hub_utils
from concept_encoder.training.config_flags import config_flags
from concept_encoder.training.glue import TASKS, load_files
from concept_encoder.training.hub import HubAccessError
from concept_encoder.training.recipes import RECIPES
from concept_encoder.training.run_folder import hold_run_lock, releases_run_locks
from concept_encoder.training.tokenizer import train_tokenizer

SUMMARY_KEYS = {
    "kind", "run_id", "date", "model_type", "architecture", "encoder_layer_type", "objective", "pretraining_data",
    "machine", "epochs", "concept_losses", "task_loss", "effective_rank", "concept_num", "steps_per_second",
    "tokens_per_second", "wandb", "git_commit", "output_dir", "mlm_probability", "deletion_prob", "tsdae_mode", "recipe", "teacher",
    "distill_losses",
}  # fmt: skip
HUB_FILES = [
    "config.json", "model.safetensors", "configuration_concept_encoder.py", "modeling_concept_encoder.py",
    "tokenizer.json", "tokenizer_config.json", "training_args.bin",
    "modules.json", "sentence_bert_config.json", "concept_pooling.py", "1_ConceptMeanPooling/config.json",
]  # fmt: skip  # a sentence-transformers folder too (ecosystem.complete_checkpoint)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, data_dir):
    """The first 300 lines of WikiText-2 train and 80 of valid, as local text files."""
    folder = tmp_path_factory.mktemp("wikitext")
    for split, lines in (("train", 300), ("valid", 80)):
        with open(data_dir / "corpus" / "wikitext-2" / f"{split}.txt", encoding="utf-8") as f:
            (folder / f"{split}.txt").write_text("".join(next(f) for _ in range(lines)), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, corpus):
    """One trained tokenizer for runs that must match exactly (trained once for the module)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    lines = [line for line in (corpus / "train.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    train_tokenizer(lines, vocab_size=200).save_pretrained(folder)
    return folder


def tiny_args(corpus, output_dir, **overrides) -> dict:
    """Arguments of a tiny run (`TINY_SIZES` with one layer, 200-token tokenizer, 4 steps)."""
    args = dict(
        train_file=str(corpus / "train.txt"),
        validation_file=str(corpus / "valid.txt"),
        train_tokenizer_vocab_size=200,
        **{**TINY_SIZES, "num_hidden_layers": 1},
        max_seq_length=TINY_SIZES["max_position_embeddings"],
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        max_eval_samples=16,
        max_steps=4,
        logging_steps=2,
        save_steps=4,
        do_train=True,
        do_eval=True,
        report_to="none",
        registry_file="",
        output_dir=str(output_dir),
    )
    args.update(overrides)
    return args


def argv_of(args: dict) -> list[str]:
    """`{"do_train": True, "max_steps": 4}` → `["--do_train", "--max_steps", "4"]`."""
    argv = []
    for key, value in args.items():
        if value is True:
            argv.append(f"--{key}")
        elif value is not False:
            argv += [f"--{key}", *(value if isinstance(value, list) else [str(value)])]
    return argv


def run_main(monkeypatch, args: dict) -> dict:
    args = {key: value for key, value in args.items() if value is not None}
    monkeypatch.setattr(sys, "argv", ["run_pretraining.py", *argv_of(args)])
    return run_pretraining.main()


@pytest.mark.parametrize(
    "model_type, objective, layer_type, extra",
    [  # the default suite keeps the demo's path (TSDAE, PosOnly) and the single-.json-file form
        ("perceiver_posonly_mlm", "tsdae", "perceiver", {"tsdae_mode": "mask"}),
        pytest.param("perceiver_posonly_mlm", "tsdae", "bixt", {"tsdae_mode": "delete"}, marks=pytest.mark.slow),
        pytest.param("perceiver_mlm", "mlm", "bixt", {"concept_losses": ["combined"], "concept_loss_weighting": "kendall_gal"}, marks=pytest.mark.slow),
        ("weighted_mlm", "mlm", "perceiver", {}),
        pytest.param("perceiver_posonly_mlm", "mlm", "bixt", {}, marks=pytest.mark.slow),
        pytest.param("perceiver_posonly_mlm", "tsdae", "perceiver", {"tsdae_mode": "delete", "concept_losses": ["t_regs"], "concept_loss_weighting": "fixed", "concept_loss_warmup_steps": 2, "config_overrides": "decoder_memory=mean"}, marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_run_writes_a_complete_hub_folder(monkeypatch, tmp_path, corpus, model_type, objective, layer_type, extra):
    output_dir = tmp_path / "run"
    args = tiny_args(
        corpus, output_dir, model_type=model_type, objective=objective, encoder_layer_type=layer_type,
        line_by_line=objective == "tsdae", registry_file=str(tmp_path / "registry.md"), **extra,
    )  # fmt: skip
    if model_type == "weighted_mlm":  # one run through the single-.json-file form
        json_file = tmp_path / "args.json"
        json_file.write_text(json.dumps(args))
        monkeypatch.setattr(sys, "argv", ["run_pretraining.py", str(json_file)])
        metrics = run_pretraining.main()
    else:
        metrics = run_main(monkeypatch, args)

    for folder in (output_dir, output_dir / "checkpoint-4"):  # the checkpoint both resumes and loads
        missing = [name for name in HUB_FILES if not (folder / name).is_file()]
        assert not missing, f"{folder} lacks {missing}"
    config = json.loads((output_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForMaskedLM"] == "modeling_concept_encoder.ConceptEncoderForMaskedLM"
    assert config["architectures"] == ["ConceptEncoderForMaskedLM"]
    assert {field: config[field] for field in run_pretraining.MODEL_TYPES[model_type]} == (
        run_pretraining.MODEL_TYPES[model_type]
    )  # the head variant --model_type asked for
    assert config["encoder_layer_type"] == layer_type and config["vocab_size"] == len(
        AutoTokenizer.from_pretrained(output_dir)
    )
    for folder in (output_dir, output_dir / "checkpoint-4"):  # truncation=True stops at the position limit
        assert AutoTokenizer.from_pretrained(folder).model_max_length == args["max_position_embeddings"]

    summary = json.loads((output_dir / "run_summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    assert summary["run_id"].startswith(f"{model_type}_H32L1C8_") and summary["architecture"] == "H32 L1 C8"
    assert summary["task_loss"] == metrics["eval_loss"] > 0
    assert 1.0 <= summary["effective_rank"] <= 8.0
    assert summary["steps_per_second"] > 0 and summary["tokens_per_second"] > 0
    assert summary["pretraining_data"] == f"{corpus.name}/train.txt"
    settings = {key: summary[key] for key in ("mlm_probability", "deletion_prob", "tsdae_mode")}
    if objective == "tsdae":
        assert settings == {"mlm_probability": None, "deletion_prob": 0.6, "tsdae_mode": extra["tsdae_mode"]}
    else:
        assert settings == {"mlm_probability": 0.15, "deletion_prob": None, "tsdae_mode": None}
    all_results = json.loads((output_dir / "all_results.json").read_text())
    assert {"train_steps_per_second", "train_tokens_per_second", "eval_loss"} <= set(all_results)

    card = (output_dir / "README.md").read_text()
    assert "trust_remote_code=True" in card and summary["run_id"] in card
    results = {result.metric_type: result for result in ModelCard.load(output_dir / "README.md").data.eval_results}
    assert set(results) == {"loss", "concept_effective_rank", "concept_entropy_effective_rank", "concept_mean_cosine"}
    assert results["loss"].metric_value == pytest.approx(all_results["eval_loss"], rel=1e-6)
    assert results["concept_effective_rank"].metric_value == pytest.approx(summary["effective_rank"], rel=1e-6)
    assert {result.dataset_split for result in results.values()} == {"validation[:16]"}  # --max_eval_samples 16
    assert f"{summary['effective_rank']:.1f} / 8" in card
    registry = (tmp_path / "registry.md").read_text()
    assert summary["run_id"] in registry
    assert (
        f"TSDAE ({extra['tsdae_mode']}, deletion 0.6)" if objective == "tsdae" else "MLM (masking 0.15)"
    ) in registry
    logged = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    if extra.get("concept_loss_weighting") == "kendall_gal":
        assert summary["concept_losses"] == "combined + kendall_gal"
        assert any("concept_loss/combined" in entry and "loss_weight/task" in entry for entry in logged)
    if "concept_loss_warmup_steps" in extra:
        assert summary["concept_losses"] == "t_regs + fixed=0.1"
        assert config["decoder_memory"] == "mean"
        assert not any(key.startswith("concept_loss") for key in config)  # a run's losses are not the model's
        weights = [entry["loss_weight/t_regs"] for entry in logged if "loss_weight/t_regs" in entry]
        assert weights[0] < 0.09 and weights[-1] == pytest.approx(0.1)  # warmed up over the first 2 of 4 steps


# Runs in a fresh process that cannot import this repository: loads the run folder through the Auto class and
# prints the loss on the fixed batch.
LOADER = """
import torch
from transformers import AutoModelForMaskedLM

folder = sys.argv[1]
model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    loss = model(**torch.load(os.path.join(folder, "..", "batch.pt"))).loss
print(type(model).__name__ + ":" + model.config.decoder_query, repr(loss.item()))
"""


@pytest.mark.slow
def test_run_folder_loads_with_trust_remote_code_in_a_fresh_process(monkeypatch, tmp_path, corpus):
    output_dir = tmp_path / "run"
    args = tiny_args(
        corpus, output_dir, model_type="perceiver_posonly_mlm", objective="tsdae", line_by_line=True,
        encoder_layer_type="bixt",
    )  # fmt: skip
    run_main(monkeypatch, args)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    torch.manual_seed(0)
    lines = (corpus / "valid.txt").read_text(encoding="utf-8").splitlines()
    features = [tokenizer(line, truncation=True, max_length=64) for line in lines if line.strip()][:8]
    batch = DataCollatorForTSDAE(tokenizer, max_length=64)(features)
    torch.save(batch, tmp_path / "batch.pt")
    model = ConceptEncoderForMaskedLM.from_pretrained(output_dir).eval()
    with torch.no_grad():
        expected = model(**batch).loss.item()

    name, loss = run_isolated(LOADER, output_dir, cwd=tmp_path, timeout=120).split()[-2:]
    assert name == "ConceptEncoderForMaskedLM:position"
    assert float(loss) == expected


@pytest.mark.slow
def test_continue_from_a_checkpoint_with_another_head_and_objective(monkeypatch, tmp_path, corpus):
    """MLM pretraining continued as TSDAE: the encoder and tokenizer come from the checkpoint (learning rate 0 keeps
    them as loaded), the PosOnly head is built on top, sizes cannot be changed."""
    run_main(monkeypatch, tiny_args(corpus, tmp_path / "mlm", model_type="perceiver_mlm", max_steps=2, save_steps=2))
    sizes = dict.fromkeys(TINY_SIZES)
    args = tiny_args(
        corpus, tmp_path / "tsdae", model_type="perceiver_posonly_mlm", objective="tsdae", line_by_line=True,
        model_name_or_path=str(tmp_path / "mlm"), train_tokenizer_vocab_size=None, learning_rate=0.0, max_steps=2,
        save_steps=2, **sizes,
    )  # fmt: skip
    run_main(monkeypatch, args)
    config = json.loads((tmp_path / "tsdae" / "config.json").read_text())
    assert config["architectures"] == ["ConceptEncoderForMaskedLM"] and config["decoder_query"] == "position"
    before, after = (load_file(tmp_path / name / "model.safetensors") for name in ("mlm", "tsdae"))
    encoder = [key for key in before if key.startswith("encoder.")]
    assert encoder and all(torch.equal(before[key], after[key]) for key in encoder)
    vocabularies = [AutoTokenizer.from_pretrained(tmp_path / name).get_vocab() for name in ("mlm", "tsdae")]
    assert vocabularies[0] == vocabularies[1]
    with pytest.raises(ValueError, match="continues a checkpoint whose sizes are fixed: drop \\['--hidden_size'\\]"):
        run_main(monkeypatch, {**args, "hidden_size": 64})


def test_a_checkpoint_continues_with_a_regulariser_that_stays_out_of_its_config(monkeypatch, tmp_path, corpus):
    """Concept losses are the run's arguments: a checkpoint (as a Hub one) continues under a regulariser that trains
    (its parts are logged), and the saved config holds none of it."""
    quick = dict(model_type="perceiver_mlm", max_steps=2, save_steps=2, do_eval=False)
    run_main(monkeypatch, tiny_args(corpus, tmp_path / "mlm", **quick))
    sizes = dict.fromkeys(TINY_SIZES)
    args = tiny_args(corpus, tmp_path / "tregs", model_name_or_path=str(tmp_path / "mlm"), train_tokenizer_vocab_size=None,
                     concept_losses=["t_regs"], concept_loss_weighting="fixed", concept_loss_weight=0.5, logging_steps=1,
                     **quick, **sizes)  # fmt: skip
    run_main(monkeypatch, args)
    logged = json.loads((tmp_path / "tregs" / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in logged if "loss" in entry]
    assert len(steps) == 2 and all(
        entry["loss_weight/t_regs"] == 0.5 and "concept_loss/t_regs" in entry for entry in steps
    )
    config = json.loads((tmp_path / "tregs" / "config.json").read_text())
    assert not any(key.startswith("concept_loss") for key in config)
    assert json.loads((tmp_path / "tregs" / "run_summary.json").read_text())["concept_losses"] == "t_regs + fixed=0.5"


class Interruption(RuntimeError):
    pass


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_loss_and_weights(monkeypatch, tmp_path, corpus, tokenizer_dir):
    """A 10-step run killed right after its step-5 checkpoint and started again (the last checkpoint is found
    automatically) ends exactly like an uninterrupted 10-step run, dropout and random masking included (the checkpoint
    falls on an epoch boundary, 20 examples of batch 4; test_concept_training.py resumes inside an epoch)."""
    common = dict(model_type="perceiver_mlm", max_steps=10, save_steps=5, logging_steps=1, seed=3,
                  max_train_samples=20, train_tokenizer_vocab_size=None, tokenizer_name=str(tokenizer_dir))  # fmt: skip
    uninterrupted = run_main(monkeypatch, tiny_args(corpus, tmp_path / "whole", **common))

    class InterruptAfterStep5(run_pretraining.ConceptDiagnosticsCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise Interruption("killed after the step-5 checkpoint")

    monkeypatch.setattr(run_pretraining, "ConceptDiagnosticsCallback", InterruptAfterStep5)
    with pytest.raises(Interruption):
        run_main(monkeypatch, tiny_args(corpus, tmp_path / "resumed", **common))
    assert sorted(p.name for p in (tmp_path / "resumed").glob("checkpoint-*")) == ["checkpoint-5"]
    monkeypatch.undo()
    resumed = run_main(monkeypatch, tiny_args(corpus, tmp_path / "resumed", **common))

    history = {}
    for name in ("whole", "resumed"):
        state = json.loads((tmp_path / name / "trainer_state.json").read_text())
        history[name] = [(entry["step"], entry["loss"]) for entry in state["log_history"] if "loss" in entry]
    # the same steps; losses and weights within float32 tolerance (a batch replayed wrongly moves them far more)
    assert [step for step, _ in history["resumed"]] == [step for step, _ in history["whole"]]
    assert len(history["whole"]) == 10
    losses = {name: [loss for _, loss in entries] for name, entries in history.items()}
    assert losses["resumed"] == pytest.approx(losses["whole"], rel=1e-4, abs=1e-5)
    assert resumed["eval_loss"] == pytest.approx(uninterrupted["eval_loss"], rel=1e-4, abs=1e-5)
    whole, again = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "resumed"))
    assert whole.keys() == again.keys()
    for key in whole:
        torch.testing.assert_close(again[key], whole[key], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path, corpus):
    """Two gloo processes train 2 steps into one default folder (named by the run's identity) with one checkpoint,
    under one run id (rank 0's timestamp)."""
    args = tiny_args(corpus, tmp_path / "unused", max_steps=2, save_steps=2, do_eval=False, logging_steps=1)
    del args["output_dir"]  # the default: outputs/<run name>, which both processes must agree on
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO_ROOT / "run_pretraining.py"), *argv_of(args), "--use_cpu"]  # fmt: skip
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    (run_dir,) = (tmp_path / "outputs").iterdir()
    assert run_dir.name.startswith("perceiver_mlm_H32L1C8_")
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    state = json.loads((run_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert summary["run_id"].startswith("perceiver_mlm_H32L1C8_2")  # the research log's form: rank 0's timestamp


def test_accelerate_launch_two_processes_on_cpu(tmp_path, corpus):
    """The README's `accelerate launch --multi_gpu --num_processes 2 ... --use_cpu` trains with two gloo processes
    (total batch 2 x 4); `--cpu --num_processes 2`, which accelerate runs as a single process, is refused."""
    args = tiny_args(corpus, tmp_path / "run", max_steps=2, save_steps=2, do_eval=False, logging_steps=1)
    script = [str(REPO_ROOT / "run_pretraining.py"), *argv_of(args), "--use_cpu"]
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), TRANSFORMERS_VERBOSITY="info")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", "--main_process_port", "29517"]
    result = subprocess.run(
        [*launch, "--multi_gpu", "--num_processes", "2", *script],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Total train batch size (w. parallel, distributed & accumulation) = 8" in result.stdout + result.stderr
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["global_step"] == 2
    result = subprocess.run(
        [*launch, "--cpu", "--num_processes", "2", *script[:1], "--output_dir", str(tmp_path / "single")],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode != 0 and "accelerate launch --multi_gpu --num_processes N" in result.stderr
    assert not (tmp_path / "single").exists()


def read_wandb_run(path) -> list:
    """The records of an offline run's `.wandb` file: a LevelDB-style log (7-byte file header, 32 KiB blocks,
    records split into FULL/FIRST/MIDDLE/LAST chunks with a 7-byte header) of wandb `Record` protobufs. wandb 0.31
    ships no Python reader (the Go core writes the file), so the test reads the format itself."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    records, pending, position, block = [], b"", 7, 32768
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:  # zero fill up to the end of the block
            position += block - position % block
            continue
        if position + 7 + length > len(data):  # a record still being written
            break
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST: a record is complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@pytest.mark.slow
def test_wandb_offline_run_holds_loss_components_and_effective_rank(monkeypatch, tmp_path, corpus):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "concept-encoder-tests")
    args = tiny_args(corpus, tmp_path / "run", report_to="wandb", concept_losses=["variance", "uniformity"],
                     concept_loss_weighting="fixed")  # fmt: skip
    run_main(monkeypatch, args)
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    (run_folder,) = (tmp_path / "wandb").glob("offline-run-*")
    assert summary["wandb"] == str(run_folder)

    run_file = next(run_folder.glob("run-*.wandb"))
    deadline = time.monotonic() + 30
    while not any(record.HasField("exit") for record in read_wandb_run(run_file)):  # wandb.finish() returns
        assert time.monotonic() < deadline, f"{run_file} was never completed"  # before its writer has flushed
        time.sleep(0.2)
    history, config = {}, {}
    for record in read_wandb_run(run_file):
        if record.HasField("history"):
            for item in record.history.item:
                history["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
        if record.HasField("config"):
            config.update({item.key: item.value_json for item in record.config.update})
    for key in ("train/task_loss", "train/concept_loss/variance", "train/concept_loss/uniformity",
                "train/loss_weight/variance", "train/loss_weight/task", "eval/loss",
                "eval/concept_effective_rank"):  # fmt: skip
        assert key in history, f"{key} not logged to the offline run: {sorted(history)}"
    assert history["eval/concept_effective_rank"] == summary["effective_rank"]
    assert history["train/loss_weight/variance"] == pytest.approx(0.1)
    assert json.loads(config["concept_num"]) == 8 and json.loads(config["run_name"]) == summary["run_id"]


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        ({"train_file": "missing.txt"}, FileNotFoundError, "--train_file missing.txt does not exist"),
        ({"train_file": "EMPTY"}, ValueError, "is empty"),
        ({"model_type": "roberta_mlm"}, ValueError, "one of \\['weighted_mlm', 'perceiver_mlm', 'perceiver_posonly_mlm', 'bert_mlm'\\]"),
        ({"max_seq_length": 128}, ValueError, "--max_seq_length 128 exceeds the model's max_position_embeddings=64"),
        ({"objective": "tsdae", "line_by_line": True}, ValueError, "position-only queries \\(--model_type perceiver_posonly_mlm"),
        ({"objective": "tsdae", "model_type": "perceiver_posonly_mlm"}, ValueError, "add --line_by_line"),
        ({"config_overrides": "hidden_sise=64"}, ValueError, "'hidden_sise' is not a ConceptEncoderConfig field"),
        ({"train_file": None, "validation_file": None}, HubAccessError,
         "--dataset_name JeanKaddour/minipile .* --train_file"),
        ({"train_tokenizer_vocab_size": None}, HubAccessError,
         "answerdotai/ModernBERT-base .* --train_tokenizer_vocab_size"),
        ({"push_to_hub": True, "hub_model_id": "me/model"}, HubAccessError, "--push_to_hub .* HF_HUB_OFFLINE=1"),
        ({"model_name_or_path": "me/concept-encoder", "train_tokenizer_vocab_size": None,
          **dict.fromkeys(TINY_SIZES)}, HubAccessError,
         "--model_name_or_path me/concept-encoder"),
    ],
)  # fmt: skip
def test_bad_input_fails_fast_with_a_clear_message(monkeypatch, tmp_path, corpus, overrides, error, message):
    if overrides.get("train_file") == "EMPTY":
        overrides["train_file"] = str(tmp_path / "empty.txt")
        (tmp_path / "empty.txt").write_text("\n  \n")
    args = tiny_args(corpus, tmp_path / "run", **overrides)
    start = time.monotonic()
    with pytest.raises(error, match=message):
        run_main(monkeypatch, args)
    assert time.monotonic() - start < 10
    assert not (tmp_path / "run").exists()


def lines_of(path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_parquet_train_and_validation_files(monkeypatch, tmp_path, corpus):
    from datasets import Dataset

    for split in ("train", "valid"):
        Dataset.from_dict({"text": lines_of(corpus / f"{split}.txt")}).to_parquet(tmp_path / f"{split}.parquet")
    args = tiny_args(corpus, tmp_path / "run", train_file=str(tmp_path / "train.parquet"), max_steps=2,
                     validation_file=str(tmp_path / "valid.parquet"), line_by_line=True, save_steps=2)  # fmt: skip
    metrics = run_main(monkeypatch, args)
    assert metrics["eval_loss"] > 0 and json.loads((tmp_path / "run" / "run_summary.json").read_text())["epochs"] > 0


def test_a_local_file_streams(monkeypatch, tmp_path, corpus, tokenizer_dir):
    """`--train_file x.csv --streaming` reads the file as a stream (never loaded whole); without a validation split
    to take a share of, the error names the file the user gave, not the default Hub dataset."""
    from datasets import Dataset, IterableDataset

    Dataset.from_dict({"text": lines_of(corpus / "train.txt")}).to_csv(tmp_path / "train.csv", index=False)
    loaded = []
    load_dataset = run_pretraining.load_dataset
    monkeypatch.setattr(
        run_pretraining, "load_dataset", lambda *a, **k: loaded.append(load_dataset(*a, **k)) or loaded[-1]
    )
    args = tiny_args(
        corpus, tmp_path / "run", train_file=str(tmp_path / "train.csv"), validation_file=None, streaming=True,
        train_tokenizer_vocab_size=None, tokenizer_name=str(tokenizer_dir), line_by_line=True, do_eval=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"--train_file .*train\.csv has no validation split to stream"):
        run_main(monkeypatch, args)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    metrics = run_main(monkeypatch, {**args, "validation_split_percentage": 0})
    assert loaded and all(isinstance(dataset, IterableDataset) for dataset in loaded)
    assert metrics["train_loss"] > 0


def test_push_to_hub_fails_fast_when_the_hub_does_not_answer(monkeypatch, tmp_path, corpus):
    """Without HF_HUB_OFFLINE the reachability check asks the endpoint (here a closed local port) once."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub_utils.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_utils.constants, "ENDPOINT", "http://127.0.0.1:9")
    hub_utils.hub_unreachable_reason.cache_clear()
    try:
        start = time.monotonic()
        with pytest.raises(HubAccessError, match="--push_to_hub .* http://127.0.0.1:9 gave no answer"):
            run_main(monkeypatch, tiny_args(corpus, tmp_path / "run", push_to_hub=True, hub_model_id="me/model"))
        assert time.monotonic() - start < 6
    finally:
        hub_utils.hub_unreachable_reason.cache_clear()


def test_config_overrides_go_through_update_from_string_and_clash_with_flags():
    arguments = run_pretraining.ModelArguments(
        hidden_size=64,
        config_overrides="concept_num=16, hidden_act=silu,tie_word_embeddings=false,hidden_dropout_prob=0",
    )
    config = run_pretraining.build_config(arguments)
    assert (config.hidden_size, config.concept_num, config.hidden_act) == (64, 16, "silu")
    assert config.tie_word_embeddings is False and config.hidden_dropout_prob == 0.0
    arguments = run_pretraining.ModelArguments(hidden_size=64, config_overrides="hidden_size=128")
    with pytest.raises(ValueError, match="given both as flags and in --config_overrides"):
        run_pretraining.build_config(arguments)
    with pytest.raises(ValueError, match="hidden_size=30 is not divisible"):
        run_pretraining.build_config(run_pretraining.ModelArguments(config_overrides="hidden_size=30"))
    with pytest.raises(ValueError, match="--config_overrides 'concept_num=many': invalid literal for int"):
        run_pretraining.build_config(run_pretraining.ModelArguments(config_overrides="concept_num=many"))


def test_config_overrides_take_the_names_of_0_1_with_a_warning_and_refuse_retired_switches(caplog, tmp_path):
    """0.1's field names and values still work in `--config_overrides` (logged, and a DeprecationWarning); a retired
    switch at a value that changed the computation, and the retired TSDAE mode, are refused naming the release."""
    overrides = "mlm_decoder=weighted,lm_head_type=linear,initialization=mrcogito,cross_attention_normalization=tokens"
    with pytest.warns(DeprecationWarning):
        config = run_pretraining.build_config(run_pretraining.ModelArguments(config_overrides=overrides))
    assert (config.decoder_type, config.decoder_lm_head, config.initialization) == (
        "weighted",
        "linear",
        "xavier_attention",
    )
    assert "field mlm_decoder is deprecated (renamed in 0.2, removed in 0.3): use decoder_type" in caplog.text
    assert caplog.text.count("field mlm_decoder is deprecated") == 1  # once, however often the overrides are read
    retired = run_pretraining.ModelArguments(config_overrides="cross_attention_normalization=concepts")
    with pytest.raises(ValueError, match="cross_attention_normalization='concepts' was retired in concept-encoder 0.2"):
        run_pretraining.build_config(retired)
    with pytest.raises(
        ValueError, match=r"--tsdae_mode='suffix' \(prefix → suffix\) was retired in concept-encoder 0.2"
    ):
        run_pretraining.parse_arguments(
            ["--objective", "tsdae", "--tsdae_mode", "suffix", "--output_dir", str(tmp_path)]
        )


def test_size_flags_and_their_help_come_from_the_config():
    """Every ConceptEncoderConfig field among the flags says the config's own description and default."""
    flags = config_flags(run_pretraining.ModelArguments)
    assert flags and set(flags) <= set(ConceptEncoderConfig().to_dict())
    help_text = {action.dest: action.help for action in HfArgumentParser(run_pretraining.ModelArguments)._actions}
    assert help_text["hidden_size"] == "width of tokens, concepts and every attention block (config default: 512)."
    for name in flags:
        assert f"(config default: {getattr(ConceptEncoderConfig(), name)})" in help_text[name], name


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipes_parse_and_command_line_flags_override_them(name):
    model_args, data_args, *_ = run_pretraining.parse_arguments(
        ["--recipe", name, "--output_dir", "out", "--deletion_prob", "0.5"]
    )
    assert data_args.deletion_prob == 0.5
    assert data_args.line_by_line == RECIPES[name].arguments.get("line_by_line", data_args.objective == "distill")
    config = run_pretraining.build_config(model_args, data_args.objective)  # every recipe's config is valid
    run_pretraining.check_model_and_objective(config, data_args.objective, model_args.model_type)


def test_model_card_has_a_glue_table_when_given(tmp_path):
    from conftest import tiny_config

    ConceptEncoderForMaskedLM(tiny_config(decoder_query="position")).save_pretrained(tmp_path)
    summary = {"run_id": "perceiver_posonly_mlm_H32L2C8_20260101_000000", "objective": "tsdae", "effective_rank": 3.25}
    card = open(write_model_card(tmp_path, summary, {"mrpc": {"accuracy": 0.8125, "f1": 0.85}, "stsb": 0.5})).read()
    assert "| mrpc | accuracy | 0.8125 |" in card and "| stsb | score | 0.5 |" in card
    assert (
        "3.2 / 8 (41%)" in card
        and "`ConceptEncoderForMaskedLM` (decoder_type=perceiver, decoder_query=position)" in card
    )
    parameters = sum(p.numel() for p in ConceptEncoderForMaskedLM(tiny_config(decoder_query="position")).parameters())
    assert f"{parameters:,}" in card


def test_bert_mlm_baseline_has_the_concept_encoders_sizes_and_a_registry_row(monkeypatch, tmp_path, corpus):
    output_dir = tmp_path / "bert"
    args = tiny_args(corpus, output_dir, model_type="bert_mlm", registry_file=str(tmp_path / "registry.md"))
    args.pop("concept_num")
    metrics = run_main(monkeypatch, args)
    config = json.loads((output_dir / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (32, 1, 4)
    assert config["intermediate_size"] == 96  # 1.5 x 64: the gated FFN's 3·H·I weights as a plain 2·H·I' MLP
    assert config["vocab_size"] == len(AutoTokenizer.from_pretrained(output_dir))
    summary = json.loads((output_dir / "run_summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    assert summary["run_id"].startswith("bert_mlm_H32L1_") and summary["architecture"] == "H32 L1 (bert)"
    assert summary["effective_rank"] is None and summary["task_loss"] == metrics["eval_loss"] > 0
    assert summary["run_id"] in (tmp_path / "registry.md").read_text()
    assert not (output_dir / "README.md").exists()  # the concept-encoder card does not describe a BERT
    with pytest.raises(ValueError, match="trains a baseline from scratch"):
        run_pretraining.ModelArguments(model_type="bert_mlm", model_name_or_path=str(output_dir))


def test_pretraining_default_folder_is_resumable_and_a_run_killed_before_its_first_checkpoint_reruns(
    monkeypatch, tmp_path, corpus
):
    """The README's command has no --output_dir: 0.1.0 named the folder with a timestamp (a rerun started over) and
    refused to rerun a run killed before its first checkpoint (its own tokenizer files were in the folder)."""
    monkeypatch.chdir(tmp_path)
    args = tiny_args(corpus, None, max_steps=2, save_steps=2, do_eval=False)
    del args["output_dir"]

    class KilledAtFirstStep(run_pretraining.ConceptDiagnosticsCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            raise Killed("killed before the first checkpoint")

    monkeypatch.setattr(run_pretraining, "ConceptDiagnosticsCallback", KilledAtFirstStep)
    with pytest.raises(Killed):
        run_main(monkeypatch, args)
    (folder,) = (tmp_path / "outputs").iterdir()
    assert (folder / "tokenizer.json").is_file() and not list(folder.glob("checkpoint-*"))
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    run_main(monkeypatch, args)  # the same command: the same folder, trained to the end
    first = json.loads((folder / "run_summary.json").read_text())
    results = (folder / "train_results.json").read_text()
    run_main(monkeypatch, args)  # and again: resumes the finished run from its checkpoint, keeping its id
    assert (folder / "train_results.json").read_text() == results  # not the no-op rerun's zeros
    assert [path.name for path in (tmp_path / "outputs").iterdir()] == [folder.name]
    again = json.loads((folder / "run_summary.json").read_text())
    assert again["run_id"] == first["run_id"] and again["steps_per_second"] == first["steps_per_second"] > 0
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 2  # 0.1.0 trained a step 3


def test_pretraining_never_writes_into_a_users_folder_without_the_flag(monkeypatch, tmp_path, corpus):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"mine": true}')
    with pytest.raises(ValueError, match=r"not empty and was not written by a run of this package.*config.json"):
        run_main(monkeypatch, tiny_args(corpus, tmp_path / "run"))
    assert (tmp_path / "run" / "config.json").read_text() == '{"mine": true}'


def test_pretraining_reads_each_data_file_by_its_own_format(tmp_path):
    """0.1.0 read a .jsonl validation file beside a .txt training file as plain text (eval_loss on JSON syntax)."""
    (tmp_path / "train.txt").write_text("first line of text\nsecond line\n")
    (tmp_path / "valid.jsonl").write_text('{"text": "held out line", "id": 1}\n')
    data_args = run_pretraining.DataTrainingArguments(
        train_file=str(tmp_path / "train.txt"), validation_file=str(tmp_path / "valid.jsonl")
    )
    raw = run_pretraining.load_raw_datasets(data_args, str(tmp_path / "cache"))
    assert raw["validation"]["text"] == ["held out line"] and raw["train"]["text"][0] == "first line of text"
    assert run_pretraining.text_column_of(raw, data_args) == "text"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mlm_probability": 0.0}, "--mlm_probability 0.0: must be in \\(0, 1\\]"),
        ({"max_seq_length": 0}, "--max_seq_length 0: must be a positive number"),
        ({"max_train_samples": 0}, "--max_train_samples 0: must be a positive number"),
        ({"train_file": "FOLDER"}, "--train_file .* is a folder"),
        ({"train_file": "LATIN1"}, "--train_file .* is not UTF-8 text"),
    ],
)
def test_pretraining_refuses_arguments_that_cannot_work(monkeypatch, tmp_path, corpus, overrides, message):
    """0.1.0 finished --mlm_probability 0 with eval_loss NaN and exit 0, read --max_seq_length 0 as the default, and
    failed on a folder or a Latin-1 file without naming it."""
    if overrides.get("train_file") == "FOLDER":
        overrides["train_file"] = str(corpus)
    if overrides.get("train_file") == "LATIN1":
        overrides["train_file"] = str(tmp_path / "latin1.txt")
        (tmp_path / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    with pytest.raises((ValueError, OSError), match=message):
        run_main(monkeypatch, tiny_args(corpus, tmp_path / "run", **overrides))
    assert not (tmp_path / "run").exists()


def test_pretraining_corpus_shorter_than_one_chunk_is_refused_by_name(monkeypatch, tmp_path, corpus):
    (tmp_path / "short.txt").write_text("a few words only\n")
    args = tiny_args(corpus, tmp_path / "run", train_file=str(tmp_path / "short.txt"), validation_file=None)
    args.update(do_eval=False, validation_split_percentage=0)
    with pytest.raises(ValueError, match="short.txt\\) gives no example of 64 tokens"):
        run_main(monkeypatch, args)


def test_the_output_folder_is_checked_before_training(monkeypatch, tmp_path, corpus):
    """0.1.0 found a full or unwritable output folder only when saving, after training (the model was lost)."""
    disk_usage = shutil.disk_usage

    def nearly_full(path):
        usage = disk_usage(path)
        return usage._replace(free=1024) if Path(path) == tmp_path / "run" else usage

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)

    class TrainingStarted(run_pretraining.ConceptDiagnosticsCallback):
        def on_train_begin(self, *args, **kwargs):
            raise AssertionError("training started")

    monkeypatch.setattr(run_pretraining, "ConceptDiagnosticsCallback", TrainingStarted)
    with pytest.raises(OSError, match=r"run has 0.0 MiB free, but this run writes about"):
        run_main(monkeypatch, tiny_args(corpus, tmp_path / "run"))
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(OSError, match=r"a_file/run cannot be written .*give a writable --output_dir"):
        run_main(monkeypatch, tiny_args(corpus, tmp_path / "a_file" / "run"))


def test_a_utf16_file_gets_the_utf16_conversion_command(monkeypatch, tmp_path, corpus):
    """Issue 23.8: a UTF-16 file (with its byte-order mark) was told to convert from latin1."""
    text = "sentence\tlabel\ncafé\t1\n"
    (tmp_path / "train.tsv").write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    (tmp_path / "dev.json").write_bytes(codecs.BOM_UTF16_BE + '{"sentence": "b", "label": 0}\n'.encode("utf-16-be"))
    with pytest.raises(
        ValueError, match=r"train.tsv is not UTF-8 text.*UTF-16 byte-order mark.*`iconv -f UTF-16 -t UTF-8 "
    ):
        load_files(TASKS["sst2"], str(tmp_path / "train.tsv"), str(tmp_path / "train.tsv"))
    with pytest.raises(ValueError, match=r"dev.json is not UTF-8 text.*`iconv -f UTF-16 -t UTF-8 "):
        load_files(TASKS["sst2"], str(tmp_path / "dev.json"), str(tmp_path / "dev.json"))
    (tmp_path / "corpus.txt").write_bytes(codecs.BOM_UTF16_LE + "some words\n".encode("utf-16-le"))
    with pytest.raises(ValueError, match=r"--train_file .*corpus.txt is not UTF-8 text.*`iconv -f UTF-16 -t UTF-8 "):
        run_main(monkeypatch, tiny_args(corpus, tmp_path / "run", train_file=str(tmp_path / "corpus.txt")))
    (tmp_path / "latin1.tsv").write_bytes(text.encode("latin-1"))  # no mark: Latin-1 is the guess
    with pytest.raises(ValueError, match=r"latin1.tsv is not UTF-8 text.*`iconv -f latin1 -t UTF-8 "):
        load_files(TASKS["sst2"], str(tmp_path / "latin1.tsv"), str(tmp_path / "latin1.tsv"))


def test_a_second_live_run_into_one_folder_is_refused_naming_the_first(monkeypatch, tmp_path, corpus):
    """Issue 23.14: two runs started at once into one --output_dir both trained into it. A live run holds the
    folder's lock; the OS frees it when the run dies (even by SIGKILL), and the dead run's process id is replaced."""
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from concept_encoder.training.run_folder import hold_run_lock; "
         "hold_run_lock(sys.argv[1]); print('held', flush=True); time.sleep(600)", str(folder)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=rf"Output folder .*run is in use by another run \(process {holder.pid}"):
            run_main(monkeypatch, tiny_args(corpus, folder))
        assert sorted(path.name for path in folder.iterdir()) == ["_run.lock", "_run.pid"]  # nothing else written
    finally:
        holder.kill()  # SIGKILL: no clean-up runs
        holder.wait()
    assert (folder / "_run.pid").read_text().strip() == str(holder.pid)  # a stale record, and a lock the OS freed
    locked = []
    with_lock = releases_run_locks(lambda: (hold_run_lock(folder), locked.append(True)))
    with_lock()
    assert locked and not (folder / "_run.pid").exists()  # taken despite the stale record, released on return


def test_a_run_refused_for_its_tokenizer_leaves_the_folder_free_for_the_corrected_rerun(
    monkeypatch, tmp_path, corpus, wikitext_lines
):
    """Issue 23.11: run_pretraining.py wrote run_identity.json before it checked the tokenizer, so a run refused for
    a bad tokenizer claimed the folder and the corrected rerun was refused as "another run"."""
    no_mask = tmp_path / "no_mask"
    tokenizer = train_tokenizer(wikitext_lines[:200], vocab_size=200)
    tokenizer.mask_token = None
    tokenizer.save_pretrained(no_mask)
    args = tiny_args(corpus, tmp_path / "run", tokenizer_name=str(no_mask), train_tokenizer_vocab_size=None)
    with pytest.raises(ValueError, match=r"no_mask lacks a pad or mask token"):
        run_main(monkeypatch, args)
    assert not (tmp_path / "run").exists()
    run_main(monkeypatch, {**args, "tokenizer_name": None, "train_tokenizer_vocab_size": 200, "max_steps": 1})
    assert (tmp_path / "run" / "model.safetensors").is_file()
