PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: all setup test test-python test-fast test-cluster stress sanitize run bench lint clean

all: test

CORE_SRC := setup.py $(wildcard csp_mp/_shm/c/*.c csp_mp/_shm/c/*.h)

# `make test` and the tools: csp_mp with its test extra
$(STAMP): pyproject.toml $(CORE_SRC)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools>=77'
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP) $(RUN_STAMP)

# `make run`: csp_mp and its four dependencies, nothing else (the benchmark needs no extra)
$(RUN_STAMP): pyproject.toml $(CORE_SRC)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools>=77'
	$(BIN)/python -m pip install -q -e .
	touch $(RUN_STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the same suite on the pure-Python path (the compiled core's specification and fallback), its
# slow and stress tests included (test_refcount.py's soaks with fewer requests on this path),
# less two kinds that `make test` has run already: the differential tests and the install
# without a compiler run both paths (or the Python one) whatever CSP_MP_NATIVE says. The slow
# and stress tests it runs add about two minutes on two cores. The cluster tests are
# make test-cluster's.
PYTHON_PATH_SKIP := not test_differential and not test_install_without_a_compiler
test-python: $(STAMP)
	CSP_MP_NATIVE=0 $(BIN)/python -m pytest -q -m 'not cluster' -k '$(PYTHON_PATH_SKIP)'

# the compiled core's tests, its misuse cases, the cross-P channel tests, the differential
# tests and those of the C task frames, handles and layout under AddressSanitizer and UBSan, on
# a copy of the tree built with the sanitizers (the installed build is left alone); the misuse
# cases with Python's own allocator off (PYTHONMALLOC=malloc), so that ASan sees a use of a
# freed object too; the last run leaves out the slow soaks; about four minutes on two cores
SAN := build/sanitize
sanitize: $(STAMP)
	rm -rf $(SAN) && mkdir -p $(SAN)
	cp -r csp_mp tests setup.py pyproject.toml MANIFEST.in README.md $(SAN)/
	rm -f $(SAN)/csp_mp/_shm/*.so
	cd $(SAN) && CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -g" \
		$(CURDIR)/$(BIN)/python setup.py -q build_ext --inplace
	cd $(SAN) && LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
		ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		PYTHONMALLOC=malloc CSP_MP_NATIVE=1 $(CURDIR)/$(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/test_native_fuzz.py tests/test_native_fuzz_ring.py tests/test_native_fuzz_task.py \
		tests/test_native_fuzz_chan.py tests/test_native_cleared.py tests/test_native_hygiene.py
	cd $(SAN) && LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
		ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		CSP_MP_NATIVE=1 $(CURDIR)/$(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/shm tests/test_mp_chan.py tests/test_mp_stress.py tests/test_atomic.py
	cd $(SAN) && LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
		ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		CSP_MP_NATIVE=1 $(CURDIR)/$(BIN)/python -m pytest -q -p no:cacheprovider -m 'not slow' \
		tests/test_mp_tasks.py tests/test_layout.py tests/test_refcount.py \
		tests/test_differential_chan.py tests/test_differential_wake.py \
		tests/test_differential_wake_fail.py \
		tests/test_differential_atomic.py tests/test_differential_sync.py

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not slow and not stress'

# the cluster tests on a simulated Ray cluster (tests/cluster): the ray extra, then the marked
# subset but the semantic cases marked slow (about three minutes on two cores; all of them:
# `pytest -m cluster tests/cluster`, two minutes more)
CLUSTER_STAMP := $(VENV)/.installed-ray
$(CLUSTER_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,ray]'
	touch $(CLUSTER_STAMP)

test-cluster: $(CLUSTER_STAMP)
	$(BIN)/python -m pytest -q -m 'cluster and not slow' tests/cluster

lint: $(STAMP)
	$(BIN)/ruff check csp_mp tests benchmarks examples docs
	$(BIN)/lint-imports
	$(BIN)/mypy csp_mp
	$(BIN)/python docs/gen_api.py --check

run: $(RUN_STAMP)
	$(BIN)/python -m csp_mp bench

bench: $(RUN_STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
