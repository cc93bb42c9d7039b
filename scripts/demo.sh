#!/usr/bin/env bash
# The bankrpc demo: runs the example programs built by `make build` into bin/.
# Run it with `make demo`, which installs what is missing and builds first.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

banner() { printf '\n=== %s\n\n' "$*"; }

need() {
	if [[ ! -x bin/$1 ]]; then
		echo "demo: bin/$1 not found: run 'make build' (it builds every examples/*/ main package)" >&2
		exit 1
	fi
}

banner "bankrpc demo"
echo "A typed client calls a generated service stub; the call travels as an encoded"
echo "envelope over a pluggable transport and comes back as a typed reply."

banner "quickstart"
need quickstart
bin/quickstart
