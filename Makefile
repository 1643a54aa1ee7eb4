# The two commands of the README: `make demo` (main job on the local stack) and `make test`.
# Each creates the virtual environment on first use; nothing but Python and PyPI is needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
FILES  ?=

.PHONY: venv up down status demo dev test bench lint clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[local,test,dev]'
	touch $(STAMP)

venv: $(STAMP)

up: venv
	$(BIN)/feedlot local up

down:
	$(BIN)/feedlot local down

status:
	$(BIN)/feedlot local status

# Main job, headless: stack up, publish the sample (or FILES=...), runs by the real sensor, report.
demo: venv
	$(BIN)/feedlot demo $(FILES)

# The same stack, with the Dagster UI on http://127.0.0.1:3000 and the sensor running. Ctrl-C or
# SIGTERM stops Dagster (the stack stays up: `make down`); in the background:
# `make dev > dev.log 2>&1 &`, later `kill %1`.
dev: venv
	exec $(BIN)/feedlot dev

# The whole test suite (moto server + real PostgreSQL; the MySQL tests on FEEDLOT_TEST_MYSQL_URL or
# the local MariaDB at 127.0.0.1:3306), one worker per core (TEST_WORKERS=0: one process).
# It ends by counting skipped tests and why.
TEST_WORKERS ?= auto
test: venv
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS)

# Benchmark, not a test: 1,000,000 records through the real load path vs raw COPY.
bench: venv
	$(BIN)/feedlot bench --records $${RECORDS:-1000000}

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

clean:
	-$(BIN)/feedlot local down
	rm -rf .feedlot
