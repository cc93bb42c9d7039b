# bankrpc: a fresh Debian machine needs only `make demo` and `make test`; both are
# idempotent. Tools are installed by scripts/setup.sh (buf lands in .tools/).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
MAKEFLAGS += --no-print-directory

# transport/zmq links libzmq through cgo, and -race needs cgo too.
export CGO_ENABLED := 1

TOOLS_BIN := $(CURDIR)/.tools/node_modules/.bin
WITH_TOOLS := PATH="$(TOOLS_BIN):$$PATH"

# Run after `buf generate`, when non-empty (e.g. rebuilding the generator's test
# descriptors).
GENERATE_EXTRA ?= protoc-gen-bankrpc/testdata/regen.sh

AMQP_URL_DEFAULT := amqp://guest:guest@127.0.0.1:5672/
GO_TEST_FLAGS ?= -race -count=1 -timeout 20m
# The bench module's tests only check that the benchmark runs and that its numbers
# are well formed (tiny durations); without -race, as the numbers' harness runs.
BENCH_TEST_FLAGS ?= -count=1 -timeout 5m

comma := ,
banner = @printf '\n==> %s\n' '$(1)'
need_buf = @[[ -x $(TOOLS_BIN)/buf ]] || { echo "buf not found in .tools/: run make setup" >&2; exit 1; }

.PHONY: setup broker check-deps generate check-generate lint build test demo bench bench-full chaos clean

setup:
	$(call banner,setup: system packages$(comma) buf$(comma) Go modules)
	bash scripts/setup.sh

broker:
	$(call banner,broker: RabbitMQ on 127.0.0.1:5672)
	bash scripts/broker.sh

# Fails when a command, proto import or C header the build uses comes from a Debian
# package that scripts/setup.sh does not install (-v: the whole list).
check-deps:
	$(call banner,check-deps: every package the build uses is one scripts/setup.sh installs)
	bash scripts/check-deps.sh

generate:
	$(call banner,generate: buf generate -> gen/)
	$(need_buf)
	$(WITH_TOOLS) buf generate
	$(if $(strip $(GENERATE_EXTRA)),$(GENERATE_EXTRA))

check-generate: generate
	$(call banner,check-generate: gen/ matches the sources)
	@stale=$$(git status --porcelain --untracked-files=all -- gen protoc-gen-bankrpc/testdata); \
	if [[ -n $$stale ]]; then \
		echo "$$stale"; \
		git --no-pager diff --stat -- gen protoc-gen-bankrpc/testdata; \
		git --no-pager diff -- gen protoc-gen-bankrpc/testdata; \
		echo "gen/ is stale: run make generate and commit" >&2; \
		exit 1; \
	fi

lint:
	$(call banner,lint: buf lint$(comma) gofmt$(comma) go vet)
	$(need_buf)
	$(WITH_TOOLS) buf lint
	@files=$$(git ls-files -z --cached --others --exclude-standard -- '*.go' | \
		while IFS= read -r -d '' f; do if [[ -f $$f ]]; then printf '%s\0' "$$f"; fi; done | \
		xargs -0 -r gofmt -l); \
	if [[ -n $$files ]]; then \
		echo "gofmt -l: these files need gofmt -w:" >&2; \
		echo "$$files" >&2; \
		exit 1; \
	fi
	go vet ./...
	@# bench/ is a module of its own (grpc-go stays out of the SDK's go.mod): ./... skips it.
	cd bench && go vet ./...
	@# Only transport/zmq links libzmq: the rest builds without cgo.
	CGO_ENABLED=0 go build . ./transport ./codec ./bank ./transport/inproc ./transport/amqp

build:
	$(call banner,build: examples -> bin/)
	@mains=$$(go list -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./examples/...); \
	if [[ -z $${mains//[[:space:]]/} ]]; then echo "no main packages under examples/ yet"; exit 0; fi; \
	echo go build -o bin/ $$mains; \
	go build -o bin/ $$mains

test:
	@$(MAKE) setup
	@$(MAKE) broker
	@$(MAKE) check-deps
	@$(MAKE) check-generate
	@$(MAKE) lint
	$(call banner,test: go test $(GO_TEST_FLAGS) ./... (real libzmq; RabbitMQ via BANKRPC_AMQP_URL))
	BANKRPC_AMQP_URL=$${BANKRPC_AMQP_URL:-$(AMQP_URL_DEFAULT)} \
		go test $(GO_TEST_FLAGS) ./...
	$(call banner,test: the bench module (it runs; its numbers are well formed; the SDK has no grpc))
	cd bench && BANKRPC_AMQP_URL=$${BANKRPC_AMQP_URL:-$(AMQP_URL_DEFAULT)} \
		go test $(BENCH_TEST_FLAGS) ./...

demo:
	$(call banner,setup (no broker needed))
	bash scripts/setup.sh --no-broker
	@$(MAKE) build
	$(call banner,demo)
	bash scripts/demo.sh

# The benchmark report (BENCHMARKS.md) lives in the bench/ module. Unset
# BANKRPC_AMQP_URL= (empty) skips the amqp rows; a URL where no broker answers fails.
bench:
	$(call banner,bench: short run (< 3 min): every row in one run; medians of paired ratios)
	@$(MAKE) broker
	cd bench && BANKRPC_AMQP_URL=$${BANKRPC_AMQP_URL-$(AMQP_URL_DEFAULT)} go run ./cmd/bankrpc-bench

bench-full:
	$(call banner,bench-full: the full run; tables and SVG charts into bench/results/)
	@$(MAKE) broker
	cd bench && BANKRPC_AMQP_URL=$${BANKRPC_AMQP_URL-$(AMQP_URL_DEFAULT)} go run ./cmd/bankrpc-bench -full -out results

# The fault suite as real processes, ~40s of faults per scenario (docs/RELIABILITY.md);
# its short variant runs in make test (cmd/bankrpc-chaos TestChaosShort).
# CHAOS_FLAGS: e.g. -run 'zmq' or -duration 2m or -work DIR.
chaos:
	$(call banner,chaos: the fault suite (bank-server/bank-client processes, a private RabbitMQ node))
	go run ./cmd/bankrpc-chaos $(CHAOS_FLAGS)

clean:
	rm -rf bin/
