# Two commands on a fresh machine:  `make run` (service + a sample request) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: install run test unit bench-gpu clean

$(VENV)/.installed: pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/llmserve run --sample

# A line per test file as it runs (not -q: nothing would show for many minutes), the slowest tests at the end.
test: install
	@echo "make test: unit tests (about 1 minute), then the real app on the CPU (about 30 minutes)"
	$(PY) -m pytest tests -W ignore::DeprecationWarning --durations=15

unit: install
	$(PY) -m pytest tests/unit -q

clean:
	rm -rf $(VENV) *.egg-info
