# Two commands do all the set-up on a fresh machine:
#   make train   # creates .venv on first use, trains on the built-in synthetic dataset
#   make test    # creates .venv on first use, adds Playwright (the "browser" extra), runs the whole test suite
# and one more to open the guided notebook:
#   make notebook  # also installs Jupyter (the "notebook" extra) into .venv, opens notebooks/walkthrough.ipynb
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
EPOCHS ?= 3
ARGS   ?=

.PHONY: train test gradcheck bench notebook notebook-outputs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# make test also installs the "browser" extra (Playwright for Python), so the browser test runs
# wherever Chromium is installed (apt-get install chromium) and skips, saying so, where it is not.
# Its own stamp: make train does not need Playwright, and neither reinstalls once stamped
# (a newer pyproject.toml redoes both).
$(VENV)/.test-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test,browser]"
	touch $@

train: $(VENV)/.installed
	$(PY) -m scratchcnn train --dataset synthetic --epochs $(EPOCHS) $(ARGS)

test: $(VENV)/.test-installed
	$(PY) -m pytest $(ARGS)

gradcheck: $(VENV)/.installed
	$(PY) -m scratchcnn gradcheck

# every benchmark into benchmarks/results/ (tables, charts, JSON with intervals), then docs/speed.md
# and the README's headline regenerated from them (python -m benchmarks.docs --write); run it on an otherwise idle machine
bench: $(VENV)/.installed
	$(PY) -m benchmarks.all $(ARGS)

$(VENV)/.notebook-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test,notebook]"
	touch $@

# Jupyter refuses to run as root unless told to (containers often run as root)
notebook: $(VENV)/.notebook-installed
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/walkthrough.ipynb

# after changing a notebook or the code it shows: run every notebook and save its outputs
notebook-outputs: $(VENV)/.installed
	$(PY) notebooks/execute.py --write

clean:
	rm -rf $(VENV) runs .pytest_cache
