#!/usr/bin/env bash
# Installs what `make test` and `make demo` need, and only what is missing, so a second
# run does nothing and returns in a moment:
#
#   apt:  libzmq3-dev pkg-config protobuf-compiler libprotobuf-dev libc6-dev python3
#         python3-zmq python3-pika python3-protobuf rabbitmq-server
#         (plus gcc, git, npm, make when their commands are absent)
#   npm:  @bufbuild/buf, pinned, into the repo-local .tools/
#   go:   the module's dependencies, and the bench/ module's (go mod download)
#
# scripts/check-deps.sh (run by make test) fails when a command, proto import or C header
# the build uses comes from a Debian package this list does not install.
#
# Usage: scripts/setup.sh [--no-broker | --print-packages]
#   --no-broker or BANKRPC_SKIP_BROKER=1 leaves rabbitmq-server out (make demo needs none).
#   --print-packages prints every apt package this script may install, one a line, and
#   does nothing else; a package installed only when a command is absent is followed by
#   that command ("npm npm").
set -euo pipefail

BUF_VERSION=1.75.0

SELF=$(realpath "${BASH_SOURCE[0]}")
cd "$(dirname "$SELF")/.."
ROOT=$PWD
TOOLS=$ROOT/.tools
BUF=$TOOLS/node_modules/.bin/buf

skip_broker=${BANKRPC_SKIP_BROKER:-0}
print_packages=0
for arg in "$@"; do
	case $arg in
	--no-broker) skip_broker=1 ;;
	--print-packages) print_packages=1 ;;
	-h | --help)
		awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SELF"
		exit 0
		;;
	*)
		echo "setup: unknown argument: $arg (want --no-broker or --print-packages)" >&2
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

# Every package the build, the tests and the demo rely on, with what needs it.
# scripts/check-deps.sh derives what they use (commands, proto imports, C headers) and
# fails when it comes from a package missing here: a package that merely happens to
# be installed on a developer's machine is the miss it catches.
want=(
	libzmq3-dev       # transport/zmq links libzmq through cgo
	pkg-config        # cgo finds libzmq with it
	libc6-dev         # cgo: the C library's headers
	protobuf-compiler # protoc: regen.sh, the generator's and the user-module tests
	libprotobuf-dev   # google/protobuf/*.proto, which protoc imports from /usr/include
	python3           # clients/python and its test (clients/python/python_test.go)
	python3-zmq       # clients/python: ZeroMQ (pyzmq)
	python3-pika      # clients/python: RabbitMQ
	python3-protobuf  # clients/python: the envelope's generated classes (3.21, as protoc)
)
broker=(rabbitmq-server) # the AMQP tests' broker (scripts/broker.sh starts it)
# Commands that a stock Debian image may already have from elsewhere (gcc from
# build-essential, npm from nodesource, ...): their package is installed only when
# the command is absent. make runs this script; .ci/run installs it this way first.
declare -A for_command=([gcc]=gcc [git]=git [npm]=npm [make]=make)

if [[ $print_packages == 1 ]]; then
	printf '%s\n' "${want[@]}" "${broker[@]}"
	for cmd in "${!for_command[@]}"; do printf '%s %s\n' "${for_command[$cmd]}" "$cmd"; done | sort
	exit 0
fi

[[ $skip_broker == 1 ]] || want+=("${broker[@]}")
for cmd in "${!for_command[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || want+=("${for_command[$cmd]}")
done

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
# bench/ is a module of its own (it adds grpc-go, which the SDK never depends on).
(cd bench && go mod download)
log "go modules downloaded (the SDK's and bench/'s)"

log "done"
