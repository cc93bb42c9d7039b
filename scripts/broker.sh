#!/usr/bin/env bash
# Ensures a RabbitMQ broker answers on 127.0.0.1:5672 for the AMQP tests.
#
# If something already listens there, it does nothing. Otherwise it starts the local
# rabbitmq-server (installed by scripts/setup.sh) detached, the way Debian's package runs
# it without systemd: as root, /usr/sbin/rabbitmq-server is a wrapper that su's to the
# rabbitmq user. It then waits, bounded, until the broker accepts connections and the
# default guest/guest user (allowed on loopback only) authenticates.
#
# It never stops or kills a broker. Prints one line saying what it did.
set -euo pipefail

HOST=127.0.0.1
PORT=5672
WAIT_SECONDS=${BANKRPC_BROKER_WAIT:-120}
LOG_DIR=/var/log/rabbitmq
NODE=${RABBITMQ_NODENAME:-rabbit@$(hostname -s 2>/dev/null || uname -n)}
LOG=$LOG_DIR/$NODE.log

# Debian installs the RabbitMQ commands in /usr/sbin, which is not on every user's PATH.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

die() {
	printf 'broker: error: %s\n' "$*" >&2
	exit 1
}

port_open() {
	timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$PORT" 2>/dev/null
}

if port_open; then
	echo "broker: something already answers on $HOST:$PORT; left it as it is"
	exit 0
fi

command -v rabbitmq-server >/dev/null 2>&1 ||
	die "nothing answers on $HOST:$PORT and rabbitmq-server is not installed: run scripts/setup.sh"

# The Debian wrappers must run as root (they drop to the rabbitmq user themselves) or as
# the rabbitmq user; anyone else goes through sudo.
run=()
if [[ $EUID -ne 0 && $(id -un) != rabbitmq ]]; then
	command -v sudo >/dev/null 2>&1 || die "starting rabbitmq-server needs root or sudo"
	run=(sudo)
fi

# fail prints where to look, then exits.
fail() {
	{
		printf 'broker: error: %s\n' "$*"
		echo "broker: broker log: $LOG (more in $LOG_DIR)"
		for f in "$LOG" "$LOG_DIR"/startup_log "$LOG_DIR"/startup_err; do
			[[ -s $f ]] || continue
			echo "--- tail of $f"
			tail -n 30 "$f"
		done
	} >&2
	exit 1
}

# A node may be up but still booting (its listener not open yet): then wait for it
# instead of starting a second one, which would fail on the taken node name.
if "${run[@]}" rabbitmq-diagnostics -q ping --timeout 5 >/dev/null 2>&1; then
	action="waited for the already running rabbitmq node to open $HOST:$PORT"
else
	"${run[@]}" rabbitmq-server -detached || fail "rabbitmq-server -detached failed"
	action="started rabbitmq-server -detached"
fi

deadline=$((SECONDS + WAIT_SECONDS))
# await_startup returns once the node has booted, but fails at once if the node has not
# yet registered itself; the port loop below covers both.
"${run[@]}" timeout "$WAIT_SECONDS" rabbitmqctl -q await_startup >/dev/null 2>&1 || true
until port_open; do
	((SECONDS < deadline)) || fail "RabbitMQ did not answer on $HOST:$PORT within ${WAIT_SECONDS}s"
	sleep 1
done

"${run[@]}" rabbitmqctl -q authenticate_user guest guest >/dev/null 2>&1 ||
	fail "RabbitMQ is up but guest/guest does not authenticate; the tests use amqp://guest:guest@$HOST:$PORT/ (or set BANKRPC_AMQP_URL)"

echo "broker: $action; RabbitMQ answers on $HOST:$PORT (log: $LOG)"
