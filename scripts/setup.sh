#!/usr/bin/env bash
# Installs what `make test` and `make demo` need, and only what is missing, so a second
# run does nothing and returns in a moment:
#
#   apt:  libzmq3-dev pkg-config protobuf-compiler libprotobuf-dev rabbitmq-server
#         (plus gcc, libc6-dev, git, npm when their commands are absent)
#   npm:  @bufbuild/buf, pinned, into the repo-local .tools/
#   go:   the module's dependencies (go mod download)
#
# Usage: scripts/setup.sh [--no-broker]
#   --no-broker or BANKRPC_SKIP_BROKER=1 leaves rabbitmq-server out (make demo needs none).
set -euo pipefail

BUF_VERSION=1.75.0

SELF=$(realpath "${BASH_SOURCE[0]}")
cd "$(dirname "$SELF")/.."
ROOT=$PWD
TOOLS=$ROOT/.tools
BUF=$TOOLS/node_modules/.bin/buf

skip_broker=${BANKRPC_SKIP_BROKER:-0}
for arg in "$@"; do
	case $arg in
	--no-broker) skip_broker=1 ;;
	-h | --help)
		awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SELF"
		exit 0
		;;
	*)
		echo "setup: unknown argument: $arg (want --no-broker)" >&2
		exit 2
		;;
	esac
done

log() { printf 'setup: %s\n' "$*"; }
die() {
	printf 'setup: error: %s\n' "$*" >&2
	exit 1
}

# as_root runs a command as root: directly when we are root, else through sudo.
as_root() {
	if [[ $EUID -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root to run '$*': run this script as root or install sudo"
	fi
}

installed() {
	[[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# --- apt packages -------------------------------------------------------------------------

# libprotobuf-dev brings the well-known types (google/protobuf/*.proto) that protoc needs
# for the generator fixtures (protoc-gen-bankrpc/testdata/regen.sh).
want=(libzmq3-dev pkg-config protobuf-compiler libprotobuf-dev)
[[ $skip_broker == 1 ]] || want+=(rabbitmq-server)
# cgo (-race, the zmq backend), check-generate and buf need these commands; on a
# stock Debian image they are usually present already.
command -v gcc >/dev/null 2>&1 || want+=(gcc)
installed libc6-dev || want+=(libc6-dev)
command -v git >/dev/null 2>&1 || want+=(git)
command -v npm >/dev/null 2>&1 || want+=(npm)

missing=()
for pkg in "${want[@]}"; do
	installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]} > 0)); then
	command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install them by hand"
	log "installing ${missing[*]}"

	# Without systemd, a package's postinst (rabbitmq-server's) tries to start its
	# service through invoke-rc.d, which can hang or fail the install. A policy-rc.d
	# that answers 101 ("action forbidden") makes invoke-rc.d skip the start; we only
	# add one if none exists and remove only the one we added. scripts/broker.sh
	# starts the broker when it is needed.
	policy=/usr/sbin/policy-rc.d
	if [[ ! -e $policy ]]; then
		as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
		trap 'as_root rm -f "$policy"' EXIT
	fi

	apt_opts=(-q -o DPkg::Lock::Timeout=300)
	as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
	as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y \
		--no-install-recommends "${missing[@]}"
else
	log "apt packages present: ${want[*]}"
fi

# --- buf ----------------------------------------------------------------------------------

command -v go >/dev/null 2>&1 || die "go not found in PATH: install Go 1.26+ from https://go.dev/dl/"

if [[ -x $BUF ]] && [[ $("$BUF" --version 2>/dev/null) == "$BUF_VERSION" ]]; then
	log "buf $BUF_VERSION present in .tools/"
else
	command -v npm >/dev/null 2>&1 || die "npm not found in PATH: needed to install buf"
	log "installing buf $BUF_VERSION into .tools/"
	got=$(npm view "@bufbuild/buf@$BUF_VERSION" version)
	[[ $got == "$BUF_VERSION" ]] || die "npm has no @bufbuild/buf@$BUF_VERSION (got '$got')"
	mkdir -p "$TOOLS"
	npm install --prefix "$TOOLS" --no-save --no-audit --no-fund --loglevel=error \
		"@bufbuild/buf@$BUF_VERSION"
	got=$("$BUF" --version)
	[[ $got == "$BUF_VERSION" ]] || die "$BUF reports version '$got', want $BUF_VERSION"
fi

# --- Go modules ---------------------------------------------------------------------------

go mod download
log "go modules downloaded"

log "done"
