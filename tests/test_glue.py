"""run_glue.py and training/glue.py: loaders on the real GLUE files and on custom files, metrics against
scikit-learn/scipy, short fine-tuning runs of tiny checkpoints, the run folders it resumes or refuses, and the error
messages of bad input."""

import json
import logging
import time

import numpy as np
import pytest
from conftest import tiny_config
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import BertConfig, BertForMaskedLM, EvalPrediction

from concept_encoder import run_glue
from concept_encoder.modeling_concept_encoder import ConceptEncoderForMaskedLM
from concept_encoder.training.glue import (
    TASKS,
    compute_glue_metrics,
    dev_metrics,
    get_task,
    glue_scores,
    load_files,
    load_glue_dir,
    load_glue_hub,
    read_glue_tsv,
)
from concept_encoder.training.hub import HubAccessError
from concept_encoder.training.registry import read_summary
from concept_encoder.training.run_folder import IDENTITY_FILE, incomplete_reason, read_identity
from concept_encoder.training.tokenizer import train_tokenizer

DEV_ROWS = {"mrpc": 408, "stsb": 1500, "rte": 277, "cola": 1043, "sst2": 872, "qnli": 5463, "wnli": 71}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    """A tiny TSDAE-style (PosOnly MLM) checkpoint with its tokenizer, saved as run_pretraining.py saves one."""
    folder = tmp_path_factory.mktemp("checkpoint") / "tiny_posonly"
    config = tiny_config(vocab_size=len(tokenizer), max_position_embeddings=64, decoder_query="position")
    ConceptEncoderForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def fine_tune(checkpoint, output_dir, data_dir, task, *extra):
    """A few optimiser steps of run_glue.py on 32 training and 48 dev examples."""
    return run_glue.main(
        [
            "--model_name_or_path",
            str(checkpoint),
            "--task_name",
            task,
            "--data_dir",
            str(data_dir / "glue"),
            "--output_dir",
            str(output_dir),
            "--max_train_samples",
            "32",
            "--max_eval_samples",
            "48",
            "--per_device_train_batch_size",
            "16",
            "--max_seq_length",
            "64",
            "--num_train_epochs",
            "1",
            "--save_strategy",
            "no",
            "--registry_file",
            str(output_dir / "registry.md"),
            "--disable_tqdm",
            "true",
            *extra,
        ]
    )


def results(folder):
    return json.loads((folder / "all_results.json").read_text())


# ----------------------------------------------------------------------------------------------------------------------
# Loaders on the real files
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,rows", DEV_ROWS.items())
def test_dev_row_counts_match_sources(data_dir, name, rows):
    task = get_task(name)
    dev = read_glue_tsv(data_dir / "glue" / task.folder / "dev.tsv", task)
    assert len(dev) == rows
    assert dev.column_names == (["sentence1", "sentence2", "label"] if task.is_pair else ["sentence1", "label"])


def test_labels_map_as_glue_defines_them(data_dir):
    glue = data_dir / "glue"
    rte = read_glue_tsv(glue / "RTE" / "dev.tsv", TASKS["rte"])  # first row: not_entailment
    assert rte[0]["label"] == 1 and rte.features["label"].names == ["entailment", "not_entailment"]
    assert np.bincount(rte["label"]).tolist() == [146, 131]
    qnli = read_glue_tsv(glue / "QNLI" / "dev.tsv", TASKS["qnli"])
    assert np.bincount(qnli["label"]).tolist() == [2702, 2761]
    stsb = read_glue_tsv(glue / "STS-B" / "dev.tsv", TASKS["stsb"])
    assert stsb[0]["label"] == 5.0 and min(stsb["label"]) == 0.0 and max(stsb["label"]) == 5.0
    cola = read_glue_tsv(glue / "CoLA" / "dev.tsv", TASKS["cola"])  # no header: the first line is data
    assert cola[0] == {"sentence1": "The sailors rode the breeze clear of the rocks.", "label": 1}
    assert np.bincount(cola["label"]).tolist() == [322, 721]
    mrpc = load_glue_dir(str(glue), TASKS["mrpc"])  # BOM before the header, fields starting with a quote
    assert len(mrpc["train"]) == 3668 and np.bincount(mrpc["validation"]["label"]).tolist() == [129, 279]
    assert mrpc["validation"][0]["sentence2"].startswith('" The foodservice pie business')
    sst2 = read_glue_tsv(glue / "SST-2" / "dev.tsv", TASKS["sst2"])
    assert sst2[0]["sentence1"] == "it 's a charming and often affecting journey . "
    paws = read_glue_tsv(data_dir / "paws" / "dev.tsv", TASKS["paws"])  # CRLF line ends
    assert len(paws) == 8000 and np.bincount(paws["label"]).tolist() == [4461, 3539]
    assert not paws[0]["sentence2"].endswith("\r")


def test_files_with_column_auto_detection_and_overrides(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text('premise,hypothesis,gold\n"A, quoted",B,entailment\nC,D,not_entailment\n')
    data, task = load_files(TASKS["rte"], str(train), str(train), label_key="gold")
    assert data["train"][0] == {"sentence1": "A, quoted", "sentence2": "B", "label": 0}  # first two non-label columns
    assert task.name == "rte" and data["validation"]["label"] == [0, 1]
    with_id = tmp_path / "with_id.tsv"
    with_id.write_text("id\tsentence2\tsentence1\tlabel\n7\tsecond\tfirst\t1\n")
    data, _ = load_files(TASKS["mrpc"], str(with_id), str(with_id))  # sentence1/sentence2 are found by name
    assert data["train"][0] == {"sentence1": "first", "sentence2": "second", "label": 1}
    data, _ = load_files(TASKS["mrpc"], str(with_id), str(with_id), sentence1_key="sentence2", sentence2_key="id")
    assert data["train"][0]["sentence1"] == "second" and data["train"][0]["sentence2"] == "7"
    jsonl = tmp_path / "scores.jsonl"
    jsonl.write_text('{"text": "a", "score": 0.5}\n{"text": "b", "score": 2.25}\n')
    data, task = load_files(None, str(jsonl), str(jsonl), label_key="score")
    assert task.is_regression and not task.is_pair and data["train"]["label"] == [0.5, 2.25]


def test_parquet_files_read_as_their_csv_twin(tmp_path):
    from datasets import Dataset

    rows = {"premise": ["A, quoted", "C"], "hypothesis": ["B", "D"], "label": ["entailment", "not_entailment"]}
    Dataset.from_dict(rows).to_parquet(tmp_path / "train.parquet")
    data, task = load_files(TASKS["rte"], str(tmp_path / "train.parquet"), str(tmp_path / "train.parquet"))
    assert data["train"][0] == {"sentence1": "A, quoted", "sentence2": "B", "label": 0}
    assert task.name == "rte" and data["validation"]["label"] == [0, 1]


# ----------------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------------


def test_metrics_match_scikit_learn_and_scipy():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    mrpc = compute_glue_metrics(TASKS["mrpc"], predictions, labels)
    assert mrpc["accuracy"] == accuracy_score(labels, predictions) and mrpc["f1"] == f1_score(labels, predictions)
    assert mrpc["combined_score"] == pytest.approx((mrpc["accuracy"] + mrpc["f1"]) / 2)
    assert compute_glue_metrics(TASKS["cola"], predictions, labels) == {
        "matthews_correlation": matthews_corrcoef(labels, predictions)
    }
    scores, gold = rng.uniform(0, 5, 40), rng.uniform(0, 5, 40)
    stsb = compute_glue_metrics(TASKS["stsb"], scores, gold)
    assert stsb["pearson"] == pytest.approx(pearsonr(scores, gold)[0])
    assert stsb["spearmanr"] == pytest.approx(spearmanr(scores, gold)[0])
    assert compute_glue_metrics(TASKS["rte"], labels, labels) == {"accuracy": 1.0}


def test_glue_facts_main_metric_mismatched_scores_and_labels():
    """What glue.py knows of a task beyond its data: MNLI's mismatched split (`_mm`) and its combined score, the
    scores a summary and a study table quote, and the label fields of a config."""
    mnli, mrpc, stsb = TASKS["mnli"], TASKS["mrpc"], TASKS["stsb"]
    split_metrics = {
        "validation_matched": {"eval_loss": 1.1, "eval_accuracy": 0.6, "eval_samples": 10},
        "validation_mismatched": {"eval_loss": 1.2, "eval_accuracy": 0.4, "eval_samples": 12},
    }
    metrics = dev_metrics(mnli, split_metrics)
    assert metrics == {
        "eval_loss": 1.1, "eval_accuracy": 0.6, "eval_samples": 10, "eval_loss_mm": 1.2, "eval_accuracy_mm": 0.4,
        "eval_samples_mm": 12, "eval_combined_score": pytest.approx(0.5),
    }  # fmt: skip
    assert glue_scores(mnli, {**metrics, "train_loss": 0.3}) == {
        "accuracy": 0.6, "accuracy_mm": 0.4, "combined_score": pytest.approx(0.5)
    }  # fmt: skip
    assert (mnli.main_metric, mrpc.main_metric, TASKS["rte"].main_metric) == (
        "combined_score",
        "combined_score",
        "accuracy",
    )
    mrpc_metrics = {"eval_accuracy": 0.7, "eval_f1": 0.8, "eval_combined_score": 0.75}
    assert dev_metrics(mrpc, {"validation": mrpc_metrics}) == mrpc_metrics  # no mismatched split: as evaluated
    assert {name: TASKS[name].reported_metrics for name in ("stsb", "mrpc", "rte", "sickr", "cola")} == {
        "stsb": ("pearson",), "mrpc": ("accuracy", "f1"), "rte": ("accuracy",), "sickr": ("pearson",),
        "cola": ("matthews_correlation",),
    }  # fmt: skip
    assert stsb.label_fields() == dict(
        num_labels=1, problem_type="regression", id2label={0: "score"}, label2id={"score": 0}
    )
    assert mnli.label_fields()["id2label"] == {0: "entailment", 1: "neutral", 2: "contradiction"}


def test_trainer_metrics_take_argmax_or_score():
    logits = np.array([[2.0, -1.0], [0.1, 0.3], [-1.0, 1.0]])
    metrics = run_glue.metrics_function(TASKS["mrpc"])(
        EvalPrediction(predictions=logits, label_ids=np.array([0, 1, 0]))
    )
    assert metrics["accuracy"] == pytest.approx(2 / 3) and metrics["f1"] == pytest.approx(2 / 3)
    scores = np.array([[0.5], [4.0], [2.0]])
    metrics = run_glue.metrics_function(TASKS["stsb"])(
        EvalPrediction(predictions=scores, label_ids=np.array([1.0, 5.0, 2.5]))
    )
    assert metrics["spearmanr"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------------------------------
# Fine-tuning runs
# ----------------------------------------------------------------------------------------------------------------------


def test_mrpc_and_stsb_separate_pairs_write_results_summary_card_and_registry(checkpoint, data_dir, tmp_path):
    summaries = fine_tune(checkpoint, tmp_path, data_dir, "mrpc,stsb")
    assert [s["task"] for s in summaries] == ["mrpc", "stsb"] and {s["pair_encoding"] for s in summaries} == {
        "separate"
    }
    mrpc, stsb = results(tmp_path / "mrpc"), results(tmp_path / "stsb")
    for name in ("eval_accuracy", "eval_f1", "eval_combined_score"):
        assert 0.0 <= mrpc[name] <= 1.0
    assert mrpc["eval_samples"] == 48 and mrpc["train_samples"] == 32
    for name in ("eval_pearson", "eval_spearmanr"):
        assert -1.0 <= stsb[name] <= 1.0
    for metrics, summary in zip((mrpc, stsb), summaries):
        assert 1.0 <= metrics["eval_concept_effective_rank"] <= 8 and metrics["train_steps_per_second"] > 0
        assert summary["effective_rank"] == metrics["eval_concept_effective_rank"]
        assert not {"eval_effective_rank", "eval_mean_concept_cosine"} & set(metrics)  # one name per quantity
    assert json.loads((tmp_path / "mrpc" / "eval_results.json").read_text())["eval_f1"] == mrpc["eval_f1"]
    assert "| MRPC |" in (tmp_path / "glue_summary.md").read_text()
    card = (tmp_path / "mrpc" / "README.md").read_text()
    assert f"| MRPC | f1 | {mrpc['eval_f1']:.4g} |" in card
    registry = (tmp_path / "registry.md").read_text()
    assert "**MRPC:** " in registry and f"**STS-B:** {stsb['eval_pearson']:.3f}" in registry
    assert registry.count("`tiny_posonly`") == 1  # both tasks fill the checkpoint's one row


def test_mrpc_concat_pairs_with_the_checkpoint_code(checkpoint, data_dir, tmp_path):
    (summary,) = fine_tune(checkpoint, tmp_path, data_dir, "mrpc", "--pair_encoding", "concat", "--trust_remote_code")
    assert summary["pair_encoding"] == "concat"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["ConceptEncoderForSequenceClassification"]
    assert config["classifier_head"] == "pooled"
    assert 0.0 <= results(tmp_path)["eval_f1"] <= 1.0


def test_cola_from_scratch_reports_matthews(checkpoint, data_dir, tmp_path):
    (summary,) = fine_tune(checkpoint, tmp_path, data_dir, "cola", "--from_scratch")
    metrics = results(tmp_path)
    assert -1.0 <= metrics["eval_matthews_correlation"] <= 1.0 and "eval_accuracy" not in metrics
    assert summary["checkpoint_run_id"] == "scratch_H32L2C8" and summary["from_scratch"]
    assert "| `scratch_H32L2C8` | H32 L2 C8 | none (random init) |" in (tmp_path / "registry.md").read_text()


# ----------------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------------


def test_unknown_task_lists_valid_ones(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="Unknown task_name 'mrcp'.*cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte"):
        run_glue.main(["--model_name_or_path", str(checkpoint), "--task_name", "mrcp", "--output_dir", str(tmp_path)])


def test_missing_columns_are_named(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("text\ty\nhello\t1\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['label'\]; the file has \['text', 'y'\]"):
        load_files(None, str(train), str(train))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['premise'\]"):
        load_files(TASKS["rte"], str(train), str(train), sentence1_key="premise", label_key="y")


def test_label_outside_the_task_label_set(tmp_path):
    bad = tmp_path / "RTE"
    bad.mkdir()
    (bad / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\tmaybe\n")
    (bad / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(ValueError, match=r"train.tsv, line 3: label 'maybe' is not a rte label; allowed"):
        load_glue_dir(str(tmp_path), TASKS["rte"])
    scores = tmp_path / "stsb.csv"
    scores.write_text("sentence1,sentence2,label\na,b,7.5\n")
    with pytest.raises(ValueError, match=r"label '7.5' is not a stsb score in \[0.0, 5.0\]"):
        load_files(TASKS["stsb"], str(scores), str(scores))


def test_empty_and_malformed_files(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.tsv is empty"):
        load_files(TASKS["mrpc"], str(empty), str(empty))
    header_only = tmp_path / "header.csv"
    header_only.write_text("sentence1,sentence2,label\n")
    with pytest.raises(ValueError, match="header.csv has no data rows"):
        load_files(TASKS["mrpc"], str(header_only), str(header_only))
    malformed = tmp_path / "bad.tsv"
    malformed.write_text("sentence1\tsentence2\tlabel\na\tb\t1\nc\td\te\t0\n")
    with pytest.raises(ValueError, match=r"bad.tsv, line 3: 4 fields where 3 were expected"):
        load_files(TASKS["mrpc"], str(malformed), str(malformed))


def test_data_dir_without_the_task_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"has no folder MRPC/ for task mrpc"):
        load_glue_dir(str(tmp_path), TASKS["mrpc"])


def test_hub_loading_fails_fast_offline_naming_the_alternative():
    start = time.perf_counter()
    with pytest.raises(HubAccessError, match="--data_dir"):
        load_glue_hub(TASKS["mrpc"])
    assert time.perf_counter() - start < 5


def test_sizes_are_checked_before_any_data_is_read(checkpoint, tmp_path):
    """The checkpoint has 64 positions; the data folder does not even exist, so only an early check can answer."""
    arguments = ["--model_name_or_path", str(checkpoint), "--task_name", "mrpc,rte", "--output_dir", str(tmp_path)]
    arguments += ["--data_dir", str(tmp_path / "no_such_folder")]
    with pytest.raises(ValueError, match="--max_seq_length 128 exceeds the model's max_position_embeddings \\(64\\)"):
        run_glue.main(arguments)
    with pytest.raises(ValueError, match="--config_overrides 'hidden_dropout_prob=high'"):
        run_glue.main([*arguments, "--max_seq_length", "64", "--config_overrides", "hidden_dropout_prob=high"])
    with pytest.raises(FileNotFoundError, match="has no folder MRPC/"):  # the arguments are fine: data is read next
        run_glue.main([*arguments, "--max_seq_length", "64"])


@pytest.fixture(scope="module")
def bert_checkpoint(tmp_path_factory, tokenizer):
    """A tiny transformers BERT MLM checkpoint with the session tokenizer, as `--model_type bert_mlm` saves one."""
    folder = tmp_path_factory.mktemp("bert") / "tiny_bert"
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_bert_checkpoint_goes_through_run_glue_on_mrpc(bert_checkpoint, data_dir, tmp_path):
    (summary,) = fine_tune(bert_checkpoint, tmp_path, data_dir, "mrpc")
    assert summary["pair_encoding"] == "concat" and summary["architecture"] == "H32 L1 (bert)"
    assert summary["effective_rank"] is None and summary["concept_num"] is None
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and len(config["id2label"]) == 2
    metrics = results(tmp_path)
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and metrics["eval_samples"] == 48
    assert "eval_concept_effective_rank" not in metrics
    registry = (tmp_path / "registry.md").read_text()
    assert f"**MRPC:** {100 * metrics['eval_f1']:.1f}%" in registry and "`tiny_bert`" in registry
    with pytest.raises(ValueError, match="--pair_encoding separate needs a concept encoder"):
        fine_tune(bert_checkpoint, tmp_path / "separate", data_dir, "mrpc", "--pair_encoding", "separate")


def test_bert_from_scratch_is_its_own_random_init_row(bert_checkpoint, data_dir, tmp_path):
    (summary,) = fine_tune(bert_checkpoint, tmp_path, data_dir, "rte", "--from_scratch")
    assert summary["checkpoint_run_id"] == "scratch_bert_H32L1" and summary["from_scratch"]
    assert "`scratch_bert_H32L1`" in (tmp_path / "registry.md").read_text()


def test_seeds_give_one_run_each_and_numpys_mean_and_std(checkpoint, data_dir, tmp_path, monkeypatch):
    calls = {name: 0 for name in ("resolve_pair_encoding", "checkpoint_summary", "build_config", "plan_task")}

    def counted(name):
        function = getattr(run_glue, name)

        def wrapper(*arguments, **options):
            calls[name] += 1
            return function(*arguments, **options)

        return wrapper

    plans = []
    for name in calls:
        monkeypatch.setattr(run_glue, name, counted(name))
    monkeypatch.setattr(
        run_glue, "run_seeds", lambda plan, *rest, run=run_glue.run_seeds: plans.append(plan) or run(plan, *rest)
    )
    (summary,) = fine_tune(checkpoint, tmp_path, data_dir, "mrpc", "--seeds", "1,2,3")
    # each task's decisions are taken once (TaskPlan), not once per seed: the checks' config, then the task's
    assert calls == {"resolve_pair_encoding": 1, "checkpoint_summary": 1, "build_config": 2, "plan_task": 1}
    (plan,) = plans
    assert (plan.pair_encoding, plan.separate, plan.concept, plan.checkpoint_run["run_id"]) == (
        "separate", True, True, "tiny_posonly"
    )  # fmt: skip
    assert plan.config.num_labels == 2 and plan.config.finetuning_task == "mrpc"
    assert plan.config.classifier_head != "sentence_pair"  # each run's model got a copy of the plan's config
    assert [args.output_dir for args, _, _ in plan.runs] == [str(tmp_path / f"seed_{seed}") for seed in (1, 2, 3)]
    runs = [json.loads((tmp_path / f"seed_{seed}" / "run_summary.json").read_text()) for seed in (1, 2, 3)]
    assert [run["seed"] for run in runs] == [1, 2, 3]
    seeds = json.loads((tmp_path / "seeds_results.json").read_text())
    for name in ("accuracy", "f1"):
        values = [run["scores"][name] for run in runs]
        assert seeds["scores"][name]["values"] == values
        assert summary["scores"][name] == pytest.approx(np.mean(values))
        assert summary["scores_std"][name] == pytest.approx(np.std(values, ddof=1))
    assert summary["seeds"] == [1, 2, 3] and summary["registry_score_std"] == summary["scores_std"]["f1"]
    registry = (tmp_path / "registry.md").read_text()
    mean, std = 100 * summary["scores"]["f1"], 100 * summary["scores_std"]["f1"]
    assert f"**MRPC:** {mean:.1f} ± {std:.1f}%" in registry
    card = (tmp_path / "seed_2" / "README.md").read_text()
    assert f"{summary['scores']['f1']:.4f} ± {summary['scores_std']['f1']:.4f} over seeds 1,2,3" in card
    with pytest.raises(ValueError, match="repeats a seed"):
        fine_tune(checkpoint, tmp_path / "again", data_dir, "mrpc", "--seeds", "1,1")


@pytest.mark.slow
def test_mrcogito_protocol_settings_and_best_epoch_label(tokenizer, data_dir, tmp_path):
    checkpoint = tmp_path / "positions_128"  # the protocol's max length is 128
    config = tiny_config(
        vocab_size=len(tokenizer), max_position_embeddings=128, num_hidden_layers=1, decoder_query="position"
    )
    ConceptEncoderForMaskedLM(config).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    (summary,) = fine_tune(checkpoint, tmp_path / "run", data_dir, "rte", "--mrcogito_protocol")
    assert summary["pair_encoding"] == "concat" and summary["mrcogito_protocol"]
    assert summary["selection"] == "best epoch on dev (MrCogito protocol)" and summary["epochs"] == 20
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["best_metric"] == max(
        entry["eval_accuracy"] for entry in state["log_history"] if "eval_accuracy" in entry
    )
    assert results(tmp_path / "run")["eval_accuracy"] == state["best_metric"]  # the reported score is the best epoch's
    data_args = run_glue.DataTrainingArguments(task_name="qqp", mrcogito_protocol=True)
    args = run_glue.task_training_args(
        run_glue.TrainingArguments(output_dir=str(tmp_path)), TASKS["qqp"], data_args, str(tmp_path), separate=False
    )
    assert (args.per_device_train_batch_size, args.learning_rate, args.num_train_epochs) == (96, 1e-5, 3)
    assert args.metric_for_best_model == "combined_score" and args.load_best_model_at_end


def test_seed_protocol_is_a_deprecated_alias_and_old_run_records_read_under_the_new_name(monkeypatch, caplog, tmp_path):
    """`--seed_protocol` (0.1's name) still sets `--mrcogito_protocol`, as a flag or a `.json` key, with a warning
    naming the new flag; a run folder that recorded `seed_protocol` resumes and scores as the same run."""
    monkeypatch.setattr(run_glue, "run", lambda *arguments: arguments)  # the parsed arguments, nothing run
    needed = {"model_name_or_path": "unused", "task_name": "rte", "output_dir": str(tmp_path / "run")}
    flags = [word for name, value in needed.items() for word in (f"--{name}", value)]
    arguments = tmp_path / "arguments.json"
    arguments.write_text(json.dumps({**needed, "seed_protocol": True}), encoding="utf-8")
    for argv in ([*flags, "--seed_protocol"], [*flags, "--seed_protocol=true"], [str(arguments)]):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="concept_encoder.run_glue"):
            _, data_args, _ = run_glue.main(argv)
        assert data_args.mrcogito_protocol, argv
        assert "--seed_protocol is deprecated (removed in 0.3): use --mrcogito_protocol" in caplog.text, argv
    _, data_args, _ = run_glue.main(flags)
    assert not data_args.mrcogito_protocol

    folder = tmp_path / "old_run"
    folder.mkdir()
    (folder / "run_identity.json").write_text(json.dumps({"run_id": "r", "identity": {"seed_protocol": True}}))
    assert read_identity(folder)["identity"] == {"mrcogito_protocol": True}
    (folder / "run_summary.json").write_text(json.dumps({"kind": "glue", "seed_protocol": True}))
    assert read_summary(folder) == {"kind": "glue", "mrcogito_protocol": True}


def test_a_fine_tuned_classifier_asked_for_another_head_is_refused_naming_the_flags(tmp_path):
    """Its classifier does not fit the other head: the error names the flags, not a damaged checkpoint."""
    from concept_encoder.modeling_concept_encoder import ConceptEncoderForSequenceClassification

    ConceptEncoderForSequenceClassification(tiny_config(num_labels=2)).save_pretrained(tmp_path / "pooled")
    model_args = run_glue.ModelArguments(model_name_or_path=str(tmp_path / "pooled"))
    config = run_glue.build_config(json.loads((tmp_path / "pooled" / "config.json").read_text()), model_args)
    with pytest.raises(ValueError, match="classifier_head='pooled'; --classifier pooled --pair_encoding separate"):
        run_glue.build_model(TASKS["mrpc"], "separate", config, model_args)
    assert run_glue.build_model(TASKS["mrpc"], "concat", config, model_args).config.classifier_head == "pooled"


def test_an_old_config_name_in_config_overrides_warns_once(tmp_path, caplog):
    """0.1's `lm_head_type` still works in run_glue.py's --config_overrides, with one deprecation note, not two."""
    tiny_config().save_pretrained(tmp_path / "encoder")
    model_args = run_glue.ModelArguments(
        model_name_or_path=str(tmp_path / "encoder"), config_overrides="lm_head_type=linear"
    )
    with caplog.at_level("WARNING"), pytest.warns(DeprecationWarning) as caught:
        config = run_glue.build_config(json.loads((tmp_path / "encoder" / "config.json").read_text()), model_args)
    assert config.decoder_lm_head == "linear"
    assert len([warning for warning in caught if "lm_head_type" in str(warning.message)]) == 1


def test_files_without_a_task_refuse_missing_values_and_read_numeric_labels_as_numbers(tmp_path):
    """Issue 23.1: a null label or text became a class or sentence named "None", and labels written `1` and `1.0`
    became two classes."""
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        '{"sentence1": "a", "sentence2": "b", "label": 1}\n{"sentence1": "c", "sentence2": "d", "label": 1.0}\n'
        '{"sentence1": "e", "sentence2": "f", "label": 0}\n'
    )
    written = tmp_path / "written.csv"
    written.write_text("sentence1,sentence2,label\na,b,1\nc,d,1.0\ne,f,0\n")
    data, task = load_files(None, str(mixed), str(written))
    assert task.label_names == ("0", "1") and not task.is_regression
    assert data["train"]["label"] == [1, 1, 0] and data["validation"]["label"] == [1, 1, 0]
    null_label = tmp_path / "null_label.jsonl"
    null_label.write_text('{"sentence1": "a", "sentence2": "b", "label": 1}\n{"sentence1": "c", "sentence2": "d"}\n')
    with pytest.raises(ValueError, match=r"null_label.jsonl, row 2: column 'label' has no value"):
        load_files(None, str(null_label), str(written))
    empty_label = tmp_path / "empty_label.csv"
    empty_label.write_text("sentence1,sentence2,label\na,b,1\nc,d,\n")
    with pytest.raises(ValueError, match=r"empty_label.csv, row 2: column 'label' has no value"):
        load_files(None, str(written), str(empty_label))
    null_text = tmp_path / "null_text.jsonl"
    null_text.write_text(
        '{"sentence1": "a", "sentence2": null, "label": 1}\n{"sentence1": "c", "sentence2": "d", "label": 0}\n'
    )
    with pytest.raises(ValueError, match=r"null_text.jsonl, row 1: column 'sentence2' has no value"):
        load_files(None, str(null_text), str(written))
    with pytest.raises(ValueError, match=r"null_text.jsonl, row 1: column 'sentence2' has no value"):
        load_files(TASKS["mrpc"], str(null_text), str(written))


def test_a_task_named_twice_is_refused_as_a_repeated_seed_is(checkpoint, tmp_path):
    """Issue 23.4: `--task_name mrpc,mrpc` trained MRPC twice into one folder, the second run overwriting the first."""
    with pytest.raises(ValueError, match=r"--task_name 'mrpc,rte,MRPC' repeats \['mrpc'\]: give each task once"):
        run_glue.main(
            ["--model_name_or_path", str(checkpoint), "--task_name", "mrpc,rte,MRPC", "--output_dir", str(tmp_path)]
        )
    assert not any(tmp_path.iterdir())


def test_an_offline_hub_id_names_the_id_offline_and_the_local_alternative(checkpoint, tmp_path):
    """Issue 23.13: `--model_name_or_path user/ckpt` offline ended in transformers' OSError traceback."""
    with pytest.raises(
        HubAccessError, match=r"--model_name_or_path someone/concept-ckpt is not a local folder .*HF_HUB_OFFLINE=1 .*"
        r"Give --model_name_or_path a local folder"
    ):  # fmt: skip
        fine_tune("someone/concept-ckpt", tmp_path / "run", tmp_path, "mrpc")
    with pytest.raises(HubAccessError, match=r"--tokenizer_name someone/tokenizer is not a local folder .*OFFLINE"):
        fine_tune(checkpoint, tmp_path / "run", tmp_path, "mrpc", "--tokenizer_name", "someone/tokenizer")
    assert not (tmp_path / "run").exists()


def glue(checkpoint, output_dir, data_dir, task, *extra):
    """Two optimiser steps of run_glue.py (32 examples, batch 16) with a checkpoint after each."""
    return run_glue.main(
        [
            *("--model_name_or_path", str(checkpoint), "--task_name", task, "--data_dir", str(data_dir / "glue")),
            *("--output_dir", str(output_dir), "--max_train_samples", "32", "--max_eval_samples", "16"),
            *("--per_device_train_batch_size", "16", "--max_seq_length", "32", "--num_train_epochs", "1"),
            *("--save_strategy", "steps", "--save_steps", "1", "--registry_file", "", "--disable_tqdm", "true"),
            *("--report_to", "none", *extra),
        ]
    )


def test_glue_refuses_to_resume_another_runs_folder(checkpoint, data_dir, tmp_path):
    """0.1.0 resumed any checkpoint-* in --output_dir: an RTE run scored the MRPC model, a --from_scratch run the
    pretrained one. Now the folder's recorded run must match, and the same command resumes its own run."""
    (first,) = glue(checkpoint, tmp_path, data_dir, "mrpc")
    assert (tmp_path / "checkpoint-2" / IDENTITY_FILE).is_file() and incomplete_reason(
        tmp_path / "checkpoint-2"
    ) is None
    with pytest.raises(ValueError, match=r"holds another run .*task_name: 'mrpc' recorded, 'rte' now"):
        glue(checkpoint, tmp_path, data_dir, "rte")
    with pytest.raises(ValueError, match=r"from_scratch: False recorded, True now"):
        glue(checkpoint, tmp_path, data_dir, "mrpc", "--from_scratch")
    with pytest.raises(ValueError, match=r"seed: 42 recorded, 7 now"):
        glue(checkpoint, tmp_path, data_dir, "mrpc", "--seed", "7")
    (again,) = glue(checkpoint, tmp_path, data_dir, "mrpc")  # resumes checkpoint-2: the same run, the same id
    assert again["run_id"] == first["run_id"]
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == 2


def test_glue_refuses_a_folder_without_run_identity(checkpoint, data_dir, tmp_path):
    """A 0.1.0 run folder (checkpoint-N without run_identity.json) or a user's folder is never trained into (or
    resumed) silently: its files would be replaced."""
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "README.md").write_text("my notes\n")
    with pytest.raises(ValueError, match=r"not empty and was not written by a run of this package.*README.md"):
        glue(checkpoint, tmp_path, data_dir, "mrpc")
    assert (tmp_path / "README.md").read_text() == "my notes\n"


def test_file_labels_come_from_every_split_and_never_collide(tmp_path):
    """0.1.0 inferred the labels from the training file and also read labels as class ids: with training labels
    "1" and "2", a validation "0" became class 0, the class of "1"."""
    (tmp_path / "train.csv").write_text("sentence,label\na,1\nb,2\nc,1\n")
    (tmp_path / "dev.csv").write_text("sentence,label\nd,0\ne,1\nf,2\n")
    data, task = load_files(None, str(tmp_path / "train.csv"), str(tmp_path / "dev.csv"))
    assert task.label_names == ("0", "1", "2")
    assert data["validation"]["label"] == [0, 1, 2] and data["train"]["label"] == [1, 2, 1]
    (tmp_path / "train.csv").write_text("sentence,label\na,1\nb,0\n")
    with pytest.raises(ValueError, match=r"dev.csv, row 3: label '2' is not a sst2 label"):
        load_files(TASKS["sst2"], *(str(tmp_path / name) for name in ("train.csv", "dev.csv")))


def test_custom_regression_scores_are_not_limited_to_stsb_range(tmp_path):
    (tmp_path / "train.csv").write_text("sentence,label\na,12.5\nb,87.25\n")
    (tmp_path / "dev.csv").write_text("sentence,label\nc,99.5\n")
    data, task = load_files(None, str(tmp_path / "train.csv"), str(tmp_path / "dev.csv"))
    assert task.is_regression and data["validation"]["label"] == [99.5]


def test_glue_refuses_another_tokenizer_and_non_positive_lengths(checkpoint, data_dir, tmp_path, wikitext_lines):
    """0.1.0 fine-tuned with a smaller tokenizer than the model's (other ids, other embeddings) and read
    --max_seq_length 0 as the default."""
    small = tmp_path / "small_tokenizer"
    train_tokenizer(wikitext_lines[:50], vocab_size=80).save_pretrained(small)  # fewer characters, fewer tokens
    with pytest.raises(ValueError, match="is not the vocabulary of .*tiny_posonly's own tokenizer"):
        glue(checkpoint, tmp_path / "run", data_dir, "mrpc", "--tokenizer_name", str(small))
    with pytest.raises(ValueError, match="--max_seq_length 0: must be a positive number"):
        glue(checkpoint, tmp_path / "run", data_dir, "mrpc", "--max_seq_length", "0")


def test_glue_data_files_that_cannot_be_read_are_named(tmp_path):
    (tmp_path / "train.tsv").write_bytes("sentence\tlabel\ncafé\t1\n".encode("latin-1"))
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nb\t0\n")
    with pytest.raises(ValueError, match="train.tsv is not UTF-8 text"):
        load_files(TASKS["sst2"], str(tmp_path / "train.tsv"), str(tmp_path / "dev.tsv"))
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_files(TASKS["sst2"], str(tmp_path), str(tmp_path / "dev.tsv"))


def test_glue_scores_of_intermediate_checkpoints_go_to_their_runs_row(tmp_path):
    """0.1.0 keyed a checkpoint without run_summary.json by its folder name: two runs' checkpoint-10 shared a row."""
    config = tiny_config()
    ids = []
    for run in ("run_a", "run_b"):
        folder = tmp_path / run / "checkpoint-10"
        folder.mkdir(parents=True)
        (folder / IDENTITY_FILE).write_text(json.dumps({"run_id": f"{run}_20260101_000000", "files": {}}))
        model_args = run_glue.ModelArguments(model_name_or_path=str(folder))
        ids.append(run_glue.checkpoint_summary(model_args, config)["run_id"])
    assert ids == ["run_a_20260101_000000/checkpoint-10", "run_b_20260101_000000/checkpoint-10"]


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_file_whose_detected_text_column_holds_numbers_is_refused(tmp_path, suffix):
    """0.1.0 crashed on a numeric first column and no text column (`'int' object has no attribute 'strip'`); read
    as strings it would silently train on the ids."""
    rows = [(1, 0), (2, 1), (3, 0)]
    for name in ("train", "dev"):
        if suffix == "csv":
            text = "id,label\n" + "".join(f"{i},{label}\n" for i, label in rows)
        else:
            text = "".join(json.dumps({"id": i, "label": label}) + "\n" for i, label in rows)
        (tmp_path / f"{name}.{suffix}").write_text(text)
    files = [str(tmp_path / f"{name}.{suffix}") for name in ("train", "dev")]
    with pytest.raises(ValueError, match=rf"train.{suffix}: column 'id' was auto-detected as text .* --sentence1_key"):
        load_files(None, *files)
