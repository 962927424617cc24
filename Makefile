# mptcplab: `sudo make run` runs the dual-path experiment and draws its figure;
# `sudo make test` runs the test suite. Both set everything up first (idempotent).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := mininet openvswitch-switch iperf3 mptcpize ethtool iputils-ping iproute2 tshark \
                python3-venv python3-pip util-linux git make gcc libc6-dev
OVS_CTL := /usr/share/openvswitch/scripts/ovs-ctl
PYTEST_ARGS ?=

.PHONY: setup apt ovs venv run test test-netem clean-net check

setup: apt ovs venv

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q; \
	  apt-get install -y -q --no-install-recommends $$missing; \
	else echo "setup: apt packages present"; fi

ovs: apt
	@if ovs-vsctl --timeout=5 show >/dev/null 2>&1; then echo "setup: Open vSwitch running"; \
	else echo "setup: starting Open vSwitch"; $(OVS_CTL) start; ovs-vsctl --timeout=10 show >/dev/null; fi

# Debian's Mininet is importable only by /usr/bin/python3: the venv sees its site-packages.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml | apt
	@[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dask]'
	$(PY) -c "import mininet.net, mptcplab.network"
	@touch $@

run: setup
	$(VENV)/bin/run-experiment experiments/dual-path.yaml

# KERNEL_TESTS=0 skips the kernel series' tests: KUnit under ARCH=um, then the User-Mode Linux
# end-to-end check (two builds of about 6-7 min each on 2 cores the first time, cached in
# /var/cache/mptcplab-kernel by the series' hash afterwards).
KERNEL_TESTS ?= 1

# NETEM_TESTS=0 skips test-netem. The netem backend's tests (marker `netem`) run with the suite
# where this kernel has netem; where it has not, the suite leaves them to test-netem, which runs
# them in the User-Mode Linux kernel of kernel-patches/ (built once, about 7 min on 2 cores, then
# cached; the tests take about 3 min in the guest), so that none is skipped.
NETEM_TESTS ?= 1

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)
	@if [ "$(NETEM_TESTS)" = 1 ]; then \
	  if $(PY) -c "import sys; from mptcplab.capabilities import has_netem; sys.exit(not has_netem())"; \
	  then echo "test: this kernel has netem: the netem tests ran above"; else $(MAKE) test-netem; fi; fi
	@if [ "$(KERNEL_TESTS)" = 1 ]; then $(MAKE) -C kernel-patches test; fi

test-netem: setup
	$(MAKE) -C kernel-patches netem PYTHON=$(abspath $(PY))

check: setup
	$(VENV)/bin/mptcplab check

# Removes only what killed mptcplab runs left behind (never `mn -c`).
clean-net:
	$(VENV)/bin/mptcplab clean
