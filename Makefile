# dockernet-exporter: `make run` to try it, `make test` to prove it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install run test test-env unit lint clean image

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $@

# Starts dockerd when none runs and it is installed, then the exporter in the foreground.
run: install
	bash scripts/test-env.sh dockerd-if-installed
	@echo "Containers and their host veths right now:"
	@$(BIN)/dockernet-exporter veths || true
	$(BIN)/dockernet-exporter $(ARGS)

# Everything the tests need (apt packages, dockerd, the local test image, the venv), then the suite.
test: test-env install
	$(BIN)/pytest $(PYTEST_ARGS)

test-env:
	bash scripts/test-env.sh

# The quality gate, without root: style and bug patterns (ruff), formatting, types (mypy); the
# page's assets (scripts/check_assets.py): script and style parse and are formatted, templates compile.
lint: install
	$(BIN)/ruff check exporter tests bench grafana scripts/check_assets.py
	$(BIN)/ruff format --check exporter tests bench grafana scripts/check_assets.py
	$(BIN)/mypy
	$(BIN)/python scripts/check_assets.py

# Only the tests that need neither root, nor Docker, nor promtool (pure, or on recorded fixtures; the
# promtool rule tests are in tests/integration). To keep it so, they run without a Docker socket and
# with `promtool` and `docker` on PATH replaced by a stub that fails.
UNIT_STUBS := build/unit-stubs
unit: install
	mkdir -p $(UNIT_STUBS)
	printf '#!/bin/sh\necho "make unit: no $$(basename "$$0") for unit tests" >&2\nexit 127\n' >$(UNIT_STUBS)/promtool
	chmod +x $(UNIT_STUBS)/promtool && ln -sf promtool $(UNIT_STUBS)/docker
	PATH="$(CURDIR)/$(UNIT_STUBS):$$PATH" DOCKER_HOST=unix:///nonexistent/docker.sock \
		$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# Regenerate tests/fixtures/golden/metrics.txt: the whole /metrics, rendered without root from
# recorded state and fixtures, that `make unit` compares byte for byte (tests/README.md). Review
# `git diff` before committing it.
.PHONY: golden
golden: install
	UPDATE_GOLDEN=1 $(BIN)/pytest tests/unit/test_golden_metrics.py -q -rs $(PYTEST_ARGS)

# The container image from wheels built here (offline build). BASE_IMAGE=dockernet-base:bookworm
# builds on a local debootstrap base (scripts/base-image.sh) where no registry is reachable.
IMAGE ?= dockernet-exporter
BASE_IMAGE ?= python:3.11-slim-bookworm
image: install
	rm -rf build/wheels
	$(BIN)/pip wheel --quiet --disable-pip-version-check -w build/wheels .
	case "$(BASE_IMAGE)" in dockernet-base:*) scripts/base-image.sh $(BASE_IMAGE);; esac
	docker build --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg VERSION=$$($(BIN)/python -c 'import exporter; print(exporter.__version__)') \
		--build-arg REVISION=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown) -t $(IMAGE) .

# Regenerate grafana/ (dashboards, rules, provisioning) from grafana/mixin; a test fails when they differ.
.PHONY: dashboards
dashboards: install
	$(BIN)/python -m grafana.mixin

# docs/topology.png: a real exporter with a few containers of its own, seen by headless Chromium.
.PHONY: screenshot
screenshot: install
	$(BIN)/python scripts/topology_screenshot.py docs/topology.png

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# The benchmark (bench/README.md): its own load of containers and veths, node_exporter side by
# side, a table of figures against their targets, bench/out/results.json and scrape.png.
# Takes the test lock exclusively; about 20 minutes. BENCH_ARGS=--tiny proves it works in seconds.
.PHONY: bench
bench: test-env install
	$(BIN)/python -m bench $(BENCH_ARGS)

# exporter/sources/runtimes/proto/*_pb2.py from the .proto subsets beside them; a test fails when they differ.
.PHONY: proto
proto: install
	cd exporter/sources/runtimes/proto && ../../../../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. cri.proto events.proto
