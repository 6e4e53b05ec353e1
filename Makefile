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

test: install
	$(PY) -m pytest tests -q -W ignore::DeprecationWarning

unit: install
	$(PY) -m pytest tests/unit -q

clean:
	rm -rf $(VENV) *.egg-info
