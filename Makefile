# The two commands of the README: `make run` and `make test`. Both create the virtualenv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements-installed
NODE_STAMP := node_modules/.installed

.PHONY: run test bench lint clean system-deps

# Debian packages the test suite uses when present (docker-compose validates docker/compose.yaml,
# chromium runs the browser tests, dovecot is the IMAP server of the email tests).
# Installed only as root with apt-get; otherwise the tests that need them say so and skip.
SYSTEM_PACKAGES := docker-compose chromium dovecot-imapd

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

# JS/CSS from npm at build time (package-lock.json pins them); oidc-provider is the tests' OIDC server.
# `npm run vendor` copies the browser assets into static/vendor (served by whitenoise, never committed).
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	npm run --silent vendor
	touch $(NODE_STAMP)

## run: every process on embedded defaults (PostgreSQL, Redis, local files); Ctrl-C stops them all
run: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m gbplatform.devrun

## test: the whole suite against real PostgreSQL and Redis started by the harness
test: $(STAMP) $(NODE_STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get install -y -q $$missing >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null; } \
	      || echo "warning: could not install$$missing; the tests needing them will skip"; \
	  else echo "not root: skipping Debian packages$$missing"; fi; \
	fi

## bench: speed figures (tenant creation, BASIC VM, ...), printed; not part of the test suite
bench: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m tests.bench

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf var/test-pg var/test-redis var/bench-pg
