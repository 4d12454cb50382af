# Two commands on a fresh Debian machine:
#   make demo   install, then check, show, compile and audit the example matrix (and, as root, prove it in a lab)
#   make test   install, then run the whole test suite
# As root on Debian, the first run installs the system packages too
# (nftables, its python binding, iptables, ipset, Graphviz and Chromium for the
# diagrams and the HTML report's browser test); see docs/install.md.

# Debian's own interpreter, so the venv sees the official nftables binding
# (python3-nftables) through --system-site-packages; see docs/nftables-binding.md.
PYTHON ?= $(shell [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
APT_PACKAGES := nftables libnftables1 python3-nftables iptables ipset iproute2 python3-venv graphviz chromium openssh-server perl
MATRIX := matrices/contact-highway-7.yaml
OUT    := out

.PHONY: demo test deps venv bench clean

demo: venv
	$(BIN)/fwmatrix check $(MATRIX)
	$(BIN)/fwmatrix show $(MATRIX)
	$(BIN)/fwmatrix compile $(MATRIX) --backend all --out-dir $(OUT)/contact-highway-7
	@echo
	@echo "--- $(OUT)/contact-highway-7/edge.nft ---"
	@cat $(OUT)/contact-highway-7/edge.nft
	@echo
	@echo "--- audit: the compiled ruleset against the matrix ---"
	$(BIN)/fwmatrix audit $(MATRIX) --ruleset $(OUT)/contact-highway-7/edge.nft
	@echo
	@echo "--- audit: a firewall that drifted (examples/drift; exit status 1: it has findings) ---"
	-$(BIN)/fwmatrix audit $(MATRIX) --ruleset examples/drift/edge.json
	@echo
	@echo "--- lab: the compiled ruleset in network namespaces, proven with real packets (root only) ---"
	@if [ "$$(id -u)" = 0 ]; then $(BIN)/fwmatrix lab $(MATRIX) --firewall edge; \
	else echo "skipped: fwmatrix lab creates network namespaces and needs root (sudo make demo)"; fi

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: venv
	$(BIN)/python bench/run.py

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "note: not installing$$missing (needs root on Debian); kernel tests and 'check' will skip what needs them"; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(MAKE) --no-print-directory deps
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis build *.egg-info
