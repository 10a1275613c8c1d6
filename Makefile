# rsaccel: `make run` and `make test` set everything up from pyproject.toml, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2
# Eyeriss's DRAM link: 64 bits at 60 MHz for a 200 MHz core (DESIGN.md), 2.4 bytes a cycle.
DRAM   ?= --dram-bandwidth 2.4

.PHONY: setup run test bench lint clean

# (Re)install when the environment is missing or older than pyproject.toml.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

setup: $(STAMP)

# The default design (the whole accelerator on the small preset), then a real layer's
# geometry (AlexNet CONV5, channels reduced to keep the simulation short) through its RTL.
run: $(STAMP)
	$(BIN)/rsaccel generate -o build/default
	$(BIN)/rsaccel run --layer alexnet.conv5 --max-channels 32 --backend verilator

# pytest exits 5 when it collects no test: that is not a failure of the suite.
test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

bench: $(STAMP)
	$(BIN)/rsaccel bench numerics --count 1000000
	$(BIN)/rsaccel bench mac-depth --preset eyeriss --depths 1-7
	$(BIN)/rsaccel bench pe --preset eyeriss
	$(BIN)/rsaccel bench noc --preset eyeriss
	$(BIN)/rsaccel generate --preset eyeriss -o build/eyeriss
	for l in 1 2 3 4 5; do $(BIN)/rsaccel map --layer alexnet.conv$$l --preset eyeriss $(DRAM); done
	$(BIN)/rsaccel bench alexnet --preset eyeriss --backend model --batch 4 $(DRAM)
	$(BIN)/rsaccel bench alexnet --preset eyeriss --backend verilator --batch 4 $(DRAM)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf build
