# rtcore — one Makefile with the targets people expect.
# `make setup` installs what the build and tests need (Debian packages when
# running as root, a .venv with the package and its extensions built in
# place); every other target runs it first and it is quick when nothing changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := gcc g++ libnuma-dev numactl rt-tests strace stress-ng libcap2-bin util-linux prometheus valgrind libspdlog-dev pkgconf
SOURCES := $(wildcard rtcore/*.pyx rtcore/*.pxd rtcore/*.pxi rtcore/src/*.c rtcore/include/rtcore/*.h) setup.py
PYTEST_ARGS ?=
JAEGER_VERSION := v1.76.0
JAEGER := $(HOME)/.cache/rtcore/jaeger-$(JAEGER_VERSION)/jaeger
OPENSEARCH_VERSION := 2.19.6
OPENSEARCH := $(HOME)/.cache/rtcore/opensearch-$(OPENSEARCH_VERSION)
OPENSEARCH_SRC := bench/peers/opensearch

.PHONY: all setup sysdeps jaeger opensearch test test-fast bench demo lint format proto clean

all: setup

setup: sysdeps $(VENV)/.installed $(VENV)/.built jaeger opensearch

# Debian packages: installed only when one is missing, and only as root.
sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing (run 'sudo apt-get install$$missing')" >&2; exit 1; \
	  fi; \
	fi

# Jaeger v2 for the tracing tests, built once from the Go module proxy and
# cached outside the tree. Its go.mod has a `replace`, which `go install
# pkg@version` refuses, so it is built inside a writable copy of the module.
# A failed build does not fail make: the tracing tests skip and say why.
jaeger:
	@[ -x "$(JAEGER)" ] && exit 0; \
	if ! command -v go >/dev/null; then \
	  echo "jaeger: not built: no Go toolchain on PATH; the tracing tests will skip" >&2; exit 0; \
	fi; \
	echo "jaeger: building $(JAEGER_VERSION) into $(JAEGER) (once; minutes)"; \
	tmp=$$(mktemp -d); \
	info=$$(cd $$tmp && GOFLAGS=-mod=mod go mod download -json github.com/jaegertracing/jaeger@$(JAEGER_VERSION)); \
	dir=$$(echo "$$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	echo "$$info" | grep '"Error"' >&2; \
	[ -n "$$dir" ] && cp -r "$$dir" $$tmp/src && chmod -R u+w $$tmp/src \
	  && (cd $$tmp/src && GOFLAGS=-mod=mod go build -trimpath -o $$tmp/jaeger ./cmd/jaeger) \
	  && mkdir -p "$(dir $(JAEGER))" && mv $$tmp/jaeger "$(JAEGER)"; \
	rc=$$?; rm -rf $$tmp; \
	if [ $$rc != 0 ]; then \
	  echo "jaeger: not built: download or build of $(JAEGER_VERSION) failed (above; GOPROXY=$$(go env GOPROXY)); the tracing tests will skip" >&2; \
	fi

# A single-node OpenSearch for the log-export tests and benchmarks: our
# launcher (bench/peers/opensearch) with the server and four modules from
# Maven Central, built in a scratch copy; its runtime jars are cached outside
# the tree, Maven's downloads stay in ~/.m2. The marker, written last, holds a
# hash of the launcher's sources so an edit rebuilds. A failed build does not
# fail make: the OpenSearch tests skip and say why.
opensearch:
	@sum=$$(find $(OPENSEARCH_SRC) -name target -prune -o -type f -print | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16); \
	[ "$$(cat "$(OPENSEARCH)/complete" 2>/dev/null)" = "$$sum" ] && exit 0; \
	if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then \
	  echo "opensearch: not built: needs java and mvn on PATH; the OpenSearch tests will skip" >&2; exit 0; \
	fi; \
	echo "opensearch: building $(OPENSEARCH_VERSION) into $(OPENSEARCH) (once; under a minute)"; \
	tmp=$$(mktemp -d); cp -r $(OPENSEARCH_SRC)/. $$tmp/; rm -rf "$(OPENSEARCH)"; \
	(cd $$tmp && mvn -B -q -Dstyle.color=never -Dmaven.test.skip=true -Dopensearch.version=$(OPENSEARCH_VERSION) \
	  package dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=lib >mvn.log 2>&1) \
	  && cp $$tmp/target/opensearch-peer-*.jar $$tmp/lib/ && mkdir -p "$(OPENSEARCH)" \
	  && mv $$tmp/lib "$(OPENSEARCH)/lib" && echo "$$sum" > "$(OPENSEARCH)/complete"; \
	rc=$$?; \
	if [ $$rc != 0 ]; then \
	  tail -n 20 $$tmp/mvn.log >&2; \
	  echo "opensearch: not built: Maven build of $(OPENSEARCH_VERSION) failed (above); the OpenSearch tests will skip" >&2; \
	fi; \
	rm -rf $$tmp

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q --disable-pip-version-check --upgrade "setuptools>=77" wheel "Cython>=3.0" "numpy>=1.26"
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[dev]"
	touch $@

$(VENV)/.built: $(SOURCES) $(VENV)/.installed
	$(PY) setup.py -q build_ext --inplace
	touch $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# everything but the slow scenario tests
test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/rtctl bench latency
	$(VENV)/bin/rtctl bench logging
	$(VENV)/bin/rtctl bench failover

# a local 3-node cluster with RT loops, a job, a fault drill (the primary
# killed mid-job) and a summary
demo: setup
	$(PY) -m bench.demo

lint: setup
	$(VENV)/bin/ruff check rtcore control bench tests
	$(VENV)/bin/ruff format --check rtcore control bench tests
	PATH=$(VENV)/bin:$$PATH cython-lint --max-line-length 100 rtcore/*.pyx rtcore/*.pxd rtcore/*.pxi
	$(VENV)/bin/mypy control rtcore bench

format: setup
	$(VENV)/bin/ruff format rtcore control bench tests

# Regenerate the checked-in gRPC code (control/proto_gen) from proto/. The
# generated modules import each other as top-level `rtcore.v1`, which would be
# this repository's rtcore package: sed points them at control.proto_gen.
proto: setup
	rm -rf control/proto_gen/rtcore
	mkdir -p control/proto_gen/rtcore/v1
	touch control/proto_gen/rtcore/__init__.py control/proto_gen/rtcore/v1/__init__.py
	$(PY) -m grpc_tools.protoc -Iproto --python_out=control/proto_gen --pyi_out=control/proto_gen \
	  --grpc_python_out=control/proto_gen proto/rtcore/v1/control.proto
	sed -i 's/^from rtcore\.v1 import/from control.proto_gen.rtcore.v1 import/' \
	  control/proto_gen/rtcore/v1/*.py control/proto_gen/rtcore/v1/*.pyi

clean:
	rm -rf build $(VENV) rtcore/*.so rtcore/_core.c rtcore/_rt.c *.egg-info
