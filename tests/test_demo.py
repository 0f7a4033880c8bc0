"""The README's main command (`make demo` → scripts/demo.py) runs end to end on the shared data, at smoke size."""

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO_ROOT


@pytest.mark.slow
def test_demo_prints_the_registry_and_the_pretrained_minus_scratch_table(tmp_path, data_dir):
    command = [sys.executable, "scripts/demo.py", "--data_dir", str(data_dir), "--output_dir", str(tmp_path)]
    command += ["--pretrain_steps", "5", "--glue_epochs", "1", "--max_train_samples", "32"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "| Date | Run ID / Model Type | Architecture |" in out
    assert re.search(r"\| `perceiver_posonly_mlm_H128L2C32_\d{8}_\d{6}` \| H128 L2 C32 \|", out)
    assert "| `scratch_H128L2C32` |" in out
    for task, metric in (("MRPC", "f1"), ("STS-B", "pearson"), ("RTE", "accuracy")):
        row = re.search(rf"\| {task} \| {metric} \| (-?[\d.]+) \| (-?[\d.]+) \| ([+-][\d.]+) \|", out)
        assert row, f"no {task} row in the difference table"
        pretrained, scratch, difference = map(float, row.groups())
        assert abs(pretrained - scratch - difference) < 1e-3
