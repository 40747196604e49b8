# Two commands do all the set-up on a fresh machine:
#   make train   # creates .venv on first use, trains on the built-in synthetic dataset
#   make test    # creates .venv on first use, runs the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
EPOCHS ?= 3
ARGS   ?=

.PHONY: train test gradcheck bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

train: $(VENV)/.installed
	$(PY) -m scratchcnn train --dataset synthetic --epochs $(EPOCHS) $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest $(ARGS)

gradcheck: $(VENV)/.installed
	$(PY) -m scratchcnn gradcheck

# every benchmark into benchmarks/results/ (tables, charts, JSON with intervals), then the README's
# Speed section regenerated from them; run it on an otherwise idle machine
bench: $(VENV)/.installed
	$(PY) -m benchmarks.all $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
