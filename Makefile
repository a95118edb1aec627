# The two README commands: `make demo` and `make test`. Both run the idempotent set-up first.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_CONFIG ?= configs/NEON/faster_rcnn_R_18_FPN_cpu.yaml
DEMO_OUT ?= output/demo

.PHONY: setup data demo test clean

setup:
	VENV=$(VENV) bash scripts/setup.sh

data: setup
	$(PY) -m fpn_variants.data.neon

# Train the FPN on neon_trees_train (CPU), evaluate on neon_trees_val (COCO AP table), draw detections.
demo: data
	$(PY) train_net.py --config-file $(DEMO_CONFIG) OUTPUT_DIR $(DEMO_OUT)
	$(PY) -m fpn_variants.visualize --config-file $(DEMO_CONFIG) --num-images 4 OUTPUT_DIR $(DEMO_OUT)

test: data
	$(PY) -m pytest -q tests

clean:
	rm -rf output
