# Fruits! image-features pipeline. `make demo` and `make test` set up what they need.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

# make run parameters (defaults = the demo's: bundled ImageNet MobileNetV2-0.35 weights)
IMAGES ?= data/sample
OUT ?= out/run
WEIGHTS ?= models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5
ALPHA ?= 0.35
MODEL ?= mobilenet_v2
IMAGE_SIZE ?= 224
POOLING ?= avg
# onnxruntime, onnxruntime-int8 (quantized, calibrated on data/sample: docs/int8.md) or tensorflow
ENGINE ?= onnxruntime
VARIANCE ?= 0.95
K ?=
MANIFEST ?=
# a saved PCA model folder (e.g. out/run/pca_model) to apply instead of fitting one
PCA_MODEL ?=
# make bench / make soak: folder of <label>/<image> files to replicate (default: the bundled test images)
BENCH_SAMPLE ?= tests/data/fruits-360

RUN_ARGS = --output $(OUT) --weights $(WEIGHTS) --alpha $(ALPHA) --model $(MODEL) \
	--image-size $(IMAGE_SIZE) --pooling $(POOLING) --engine $(ENGINE) \
	$(if $(MANIFEST),--manifest $(MANIFEST),--images $(IMAGES)) \
	$(if $(K),--k $(K),--variance $(VARIANCE)) \
	$(if $(PCA_MODEL),--pca-model $(PCA_MODEL))

.PHONY: lint setup jobs-setup bench-setup system-packages jars check-java class-archive iam-simulator demo run test test-fast bench bench-selection soak docs clean up down trigger logs coverage

# everything `make test` needs; the jobs alone (demo, run, bench, soak) need only jobs-setup
setup: system-packages jobs-setup iam-simulator

jobs-setup: $(STAMP) jars check-java class-archive

# Debian packages (Java, chromium, postgresql): installed when root, else the exact apt-get command
system-packages:
	@bash scripts/system-packages.sh

# hadoop-aws + AWS SDK bundle for s3:// and s3a:// in local Spark (checksums verified; idempotent)
jars: $(STAMP)
	$(PY) scripts/fetch_s3a_jars.py

$(STAMP): pyproject.toml requirements.txt constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 (or make PYTHON=/path/to/python3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e . -c constraints.txt
	@touch $(STAMP)

# the offline IAM policy simulator the IAM tests run (Node.js; npm ci checks the lock file's integrity hashes)
IAM_SIMULATOR := tests/support/iam_simulator
iam-simulator: $(IAM_SIMULATOR)/node_modules/.package-lock.json

$(IAM_SIMULATOR)/node_modules/.package-lock.json: $(IAM_SIMULATOR)/package.json $(IAM_SIMULATOR)/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found: apt-get install nodejs npm"; exit 1; }
	npm ci --prefix $(IAM_SIMULATOR) --no-audit --no-fund --loglevel=error

# the bench's peers (Ray Data): bench-only, never a dependency of the jobs or the DAG
bench-setup: $(BENCH_STAMP)

$(BENCH_STAMP): $(STAMP) bench/requirements-bench.txt
	$(PY) -m pip install --quiet -r bench/requirements-bench.txt -c constraints.txt
	@touch $(BENCH_STAMP)

# local Spark's JVM starts from an archive of the classes the jobs load (once, ~45-70 s; local_spark/class_archive.py)
class-archive: $(STAMP) jars check-java
	$(PY) -m local_spark.class_archive

check-java:
	@command -v java >/dev/null || [ -n "$$JAVA_HOME" ] || { \
	  echo "error: Java not found. Spark needs Java 17 (or 11): apt-get install openjdk-17-jre-headless"; exit 1; }

demo: jobs-setup
	$(PY) -m local_spark.run_local --images data/sample --output out/demo \
	  --weights models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5 --alpha 0.35

run: jobs-setup
	$(PY) -m local_spark.run_local $(RUN_ARGS)

# The whole suite (the CI command), its tests spread over TEST_WORKERS processes (pytest-xdist; most
# tests wait on Spark, Airflow or S3 more than they compute, so more workers than cores help).
TEST_WORKERS ?= 3
# What the fast lane leaves out: tests that start Spark, TensorFlow, Airflow, a browser or Docker.
FAST_LANE := not (spark or tensorflow or airflow or ui or compose)
# the reliability state machine (tests/fruits_emr/test_reliability_machine.py) runs 40 schedules here, 100 in make test
FAST_SCHEDULES ?= 40

test: setup bench-setup check-java lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15

# The pure and unit tests only: under 3 minutes on 2 cores, not the whole suite's half hour (docs/testing.md)
test-fast: $(STAMP) jars iam-simulator lint
	FRUITS_MACHINE_SCHEDULES=$(FAST_SCHEDULES) $(PY) -m pytest -q -n 2 --dist loadgroup -m "$(FAST_LANE)"

lint: $(STAMP)
	$(PY) -m ruff check .

bench: jobs-setup bench-setup
	$(PY) -m bench.run_bench --sample $(BENCH_SAMPLE) --update-docs
	$(PY) -m bench.daily_cost

# the daily run's selection at 100k and 1M keys -> selection_seconds_by_keys (docs/performance.md#selection)
bench-selection: $(STAMP)
	$(PY) -m bench.selection_scaling

soak: jobs-setup
	$(PY) -m bench.soak --sample $(BENCH_SAMPLE) --update-docs

# What is not covered yet (docs/dag.md#selection-commits-and-coverage): the images under raw/ by state against the committed
# outputs. make coverage BUCKET=acme-fruits [S3_ENDPOINT=http://localhost:5000] [COVERAGE_ARGS="--check"]
BUCKET ?=
S3_ENDPOINT ?=
COVERAGE_ARGS ?=
coverage: $(STAMP)
	@test -n "$(BUCKET)" || { echo "make coverage BUCKET=<bucket> [S3_ENDPOINT=<url>] [COVERAGE_ARGS=...]"; exit 2; }
	$(PY) -m fruits_emr.coverage --bucket $(BUCKET) $(if $(S3_ENDPOINT),--endpoint-url $(S3_ENDPOINT)) $(COVERAGE_ARGS)

# regenerate docs/dag.md's Params table from the DAG's Params (a test fails while it is stale)
docs: $(STAMP)
	$(PY) -m scripts.params_table
	$(PY) -m fruits_emr.stack_template > cloudformation/fruits-features.json

clean:
	rm -rf out .pytest_cache bench/work

# The local Airflow + Postgres + S3 (moto) stack (docs/local-stack.md): Docker with Compose v2
COMPOSE ?= docker compose
DAG_ID ?= fruits_features
# make trigger's run conf. The default processes every image in raw/: the sample lands on the day of
# make up, and a manual run covers yesterday's images (CONF='{}' for exactly that).
CONF ?= {"full_refresh": true}

up:
	@bash scripts/docker_check.sh "$(COMPOSE)"
	$(COMPOSE) up -d --build --wait
	@echo "Airflow UI: http://$$($(COMPOSE) port airflow-apiserver 8080) (login in .env.example; make trigger starts a run)"

down:
	$(COMPOSE) down

trigger:
	$(COMPOSE) exec -T airflow-apiserver airflow dags unpause $(DAG_ID)
	$(COMPOSE) exec -T airflow-apiserver airflow dags trigger $(DAG_ID) --conf '$(CONF)'

logs:
	$(COMPOSE) logs -f --tail=200
