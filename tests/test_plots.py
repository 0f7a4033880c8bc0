"""The pictures tell the truth, on synthetic runs: one colour per run in both panels and the legend, the rank axis
from 0 to C with the full-rank line, runs labelled by what differs, and no score dropped or merged."""

import json

import pytest
from matplotlib.colors import to_hex
from test_registry import glue_summary, pretraining_summary, save_run

from concept_encoder.training import plots
from concept_encoder.training import registry as experiment_registry

CONCEPTS = 16


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw, kept open instead of written."""
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.append(figure) or path)
    return drawn


def run_lines(axis) -> dict[str, str]:
    """`{run label: colour}` of an axis's labelled lines (reference lines carry no label)."""
    return {line.get_label(): to_hex(line.get_color()) for line in axis.get_lines() if line.get_label()[0] != "_"}


def test_each_run_keeps_one_colour_in_both_panels_and_the_legend(figures, tmp_path):
    """The middle run has no rank points (a BERT baseline): the runs after it keep their colour in the rank panel."""
    curves = {
        "concepts A": {"effective_rank": [(10, 4.1), (20, 4.0)], "task_loss": [(10, 5.0), (20, 4.5)]},
        "bert": {"effective_rank": [], "task_loss": [(10, 6.0), (20, 5.5)]},
        "concepts B": {"effective_rank": [(10, 9.0), (20, 12.0)], "task_loss": [(10, 5.2), (20, 4.8)]},
    }
    plots.plot_training_curves(curves, tmp_path / "curves.png")
    (figure,) = figures
    rank_axis, loss_axis = figure.axes
    (legend,) = figure.legends
    legend_colours = {
        text.get_text(): to_hex(handle.get_color()) for text, handle in zip(legend.get_texts(), legend.legend_handles)
    }
    assert set(legend_colours) == set(curves)  # every run, whichever panel it is drawn in
    assert len(set(legend_colours.values())) == len(curves)
    assert run_lines(rank_axis) == {label: legend_colours[label] for label in ("concepts A", "concepts B")}
    assert run_lines(loss_axis) == legend_colours


def test_the_rank_axis_runs_from_zero_to_the_concept_count(figures, tmp_path):
    curve = {"effective_rank": [(10, 4.06), (20, 4.15)], "task_loss": [(10, 5.0)], "concept_num": CONCEPTS}
    plots.plot_training_curves({"run": curve}, tmp_path / "curves.png")
    rank_axis = figures[0].axes[0]
    bottom, top = rank_axis.get_ylim()
    assert bottom == 0 and top >= CONCEPTS  # not autoscaled to 4.06-4.15
    assert any(list(line.get_ydata()) == [CONCEPTS, CONCEPTS] for line in rank_axis.get_lines())  # the C line
    assert "320" not in rank_axis.get_title()  # measured on whatever batch the run evaluated


def test_distinguishing_labels_name_what_differs_and_stay_unique():
    labels = plots.distinguishing_labels(
        {
            "run_1": {"objective": "tsdae", "model_type": "perceiver_posonly_mlm"},
            "run_2": {"objective": "mlm", "model_type": "perceiver_posonly_mlm"},
            "run_3": {"objective": "mlm", "model_type": "perceiver_posonly_mlm"},
        }
    )
    assert labels == {"run_1": "objective=tsdae", "run_2": "objective=mlm (run_2)", "run_3": "objective=mlm (run_3)"}
    assert plots.distinguishing_labels({"only": {"objective": "mlm"}}) == {"only": "only"}


def test_plot_command_labels_runs_by_their_recipe(figures, tmp_path):
    """Two pretraining runs whose ids differ only by the timestamp are told apart by their objective."""
    for stamp, objective in (("20260208_211633", "mlm"), ("20260208_211634", "tsdae")):
        run_id = f"perceiver_posonly_mlm_H512L6C128_{stamp}"
        folder = save_run(
            tmp_path / "runs" / run_id, {**pretraining_summary(run_id, "2026-02-08"), "objective": objective}
        )
        history = [{"step": 10, "task_loss": 4.5}, {"step": 20, "eval_concept_effective_rank": 3.5}]
        (folder / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    experiment_registry.plot_runs(tmp_path / "runs", tmp_path / "plots")
    legend_texts = [text.get_text() for text in figures[0].legends[0].get_texts()]
    assert sorted(legend_texts) == ["objective=mlm", "objective=tsdae"]
    assert figures[0].axes[0].get_ylim()[1] >= 128  # the runs' concept_num


def test_no_score_is_dropped_and_every_level_is_drawn(figures, tmp_path):
    """Two fine-tunes of one checkpoint on one task are two bars; six random-init levels are six dashed lines; the
    majority-class level is drawn where the runs recorded it."""
    checkpoint = "perceiver_mlm_H512L6C128_20260208_211633"
    for seed, score in ((1, 0.31), (2, 0.45)):
        summary = {**glue_summary(checkpoint, "mrpc", "MRPC", "f1", score, f"2026020{seed}_1"), "seed": seed}
        save_run(tmp_path / "runs" / f"glue_{seed}", {**summary, "majority_scores": {"f1": 0.81, "accuracy": 0.68}})
    scores, _ = experiment_registry.collect_scores(tmp_path / "runs")
    assert sorted(value["MRPC f1"][0] for value in scores.values()) == [0.31, 0.45]
    assert sorted(scores) == [f"{checkpoint} [seed=1]", f"{checkpoint} [seed=2]"]
    random_levels = {f"scratch_{index}": {"MRPC f1": 0.1 * index} for index in range(6)}
    experiment_registry.plot_runs(tmp_path / "runs", tmp_path / "plots")
    plots.plot_scores(scores, random_levels, tmp_path / "scores.png", majority_levels={"MRPC f1": 0.81})
    for figure in figures:
        (axis,) = [axis for axis in figure.axes if axis.get_visible()]
        assert len(axis.patches) == 2  # both bars
    levels_axis = figures[-1].axes[0]
    dashed = [line for line in levels_axis.get_lines() if line.get_linestyle() == "--"]
    assert sorted(line.get_label() for line in dashed) == sorted(random_levels)
    majority = [line for line in levels_axis.get_lines() if line.get_label() == "majority class"]
    assert [list(line.get_ydata()) for line in majority] == [[0.81, 0.81]]
    assert any(line.get_label() == "majority class" for line in figures[0].axes[0].get_lines())  # from the runs
