#!/usr/bin/env bash
# Ensures a RabbitMQ broker answers on 127.0.0.1:5672 for the AMQP tests.
#
# If something already listens there, it does nothing. Otherwise it starts the local
# rabbitmq-server (installed by scripts/setup.sh) detached, the way Debian's package runs
# it without systemd: as root, /usr/sbin/rabbitmq-server is a wrapper that su's to the
# rabbitmq user. It then waits, bounded, until the broker accepts connections and the
# default guest/guest user (allowed on loopback only) authenticates.
#
# Every time, started or found running, it sets the broker's max_message_size
# to bankrpc's frame limit plus its headroom (4 MiB + 64 KiB = 4259840 bytes,
# BANKRPC_BROKER_MAX_MESSAGE_SIZE to change it), so that the broker refuses a
# message the protocol would refuse anyway instead of handing a server up to
# 128 MiB (RabbitMQ's default) per delivery (docs/protocol-amqp.md, section
# 12): in /etc/rabbitmq/conf.d/90-bankrpc.conf for the next start, and at once
# in the running node (rabbitmqctl eval; new channels get it). Both steps are
# idempotent. When it cannot (the broker on 5672 is not a local node it can
# reach) it says so and tells what to set.
#
# It never stops or kills a broker. Prints what it did.
set -euo pipefail

HOST=127.0.0.1
PORT=5672
WAIT_SECONDS=${BANKRPC_BROKER_WAIT:-120}
# bankrpc.DefaultMaxFrameSize (4 MiB) + the 64 KiB headroom a frame may exceed it by.
MAX_MESSAGE_SIZE=${BANKRPC_BROKER_MAX_MESSAGE_SIZE:-4259840}
CONF_D=/etc/rabbitmq/conf.d
CONF_FILE=$CONF_D/90-bankrpc.conf
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

[[ $MAX_MESSAGE_SIZE =~ ^[0-9]+$ ]] && ((MAX_MESSAGE_SIZE >= 65536 && MAX_MESSAGE_SIZE <= 536870912)) ||
	die "BANKRPC_BROKER_MAX_MESSAGE_SIZE=$MAX_MESSAGE_SIZE: give a number of bytes from 65536 to 536870912 (RabbitMQ's maximum)"

run=()
if [[ $EUID -ne 0 && $(id -un) != rabbitmq ]] && command -v sudo >/dev/null 2>&1; then
	run=(sudo -n)
fi

# write_config puts max_message_size in the config the local rabbitmq-server
# reads at its next start; it rewrites the file only when it differs.
write_config() {
	local want="# Written by bankrpc's scripts/broker.sh: the largest message the broker accepts,
# bankrpc's frame limit (4 MiB) plus 64 KiB (docs/protocol-amqp.md, section 12).
max_message_size = $MAX_MESSAGE_SIZE"
	[[ -d /etc/rabbitmq ]] || return 0
	if [[ -f $CONF_FILE && $(cat "$CONF_FILE") == "$want" ]]; then
		return 0
	fi
	if "${run[@]}" mkdir -p "$CONF_D" && printf '%s\n' "$want" | "${run[@]}" tee "$CONF_FILE.tmp" >/dev/null 2>&1 &&
		"${run[@]}" chmod 0644 "$CONF_FILE.tmp" && "${run[@]}" mv "$CONF_FILE.tmp" "$CONF_FILE"; then
		echo "broker: wrote max_message_size = $MAX_MESSAGE_SIZE to $CONF_FILE (read at the next start)"
	else
		echo "broker: warning: could not write $CONF_FILE; a restarted broker will accept messages up to its default (128 MiB)" >&2
	fi
}

# set_running applies max_message_size to the running node at once; it
# prints a warning, not an error, when the node cannot be reached (a broker
# in a container, on another host, or not ours to configure).
set_running() {
	local got
	if got=$("${run[@]}" timeout 30 rabbitmqctl -q eval \
		"ok = application:set_env(rabbit, max_message_size, $MAX_MESSAGE_SIZE), application:get_env(rabbit, max_message_size)." 2>/dev/null) &&
		[[ $got == "{ok,$MAX_MESSAGE_SIZE}" ]]; then
		echo "broker: max_message_size = $MAX_MESSAGE_SIZE in the running node (for channels opened from now on)"
		return 0
	fi
	{
		echo "broker: warning: could not set max_message_size in the broker on $HOST:$PORT (rabbitmqctl eval failed: ${got:-no answer})."
		echo "broker:   Set max_message_size = $MAX_MESSAGE_SIZE in its rabbitmq.conf, or the server's memory under"
		echo "broker:   oversized messages is bounded only by prefetch x 128 MiB (docs/protocol-amqp.md, section 12)."
	} >&2
}

if port_open; then
	write_config
	set_running
	echo "broker: something already answers on $HOST:$PORT; left it running"
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
write_config

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

set_running
echo "broker: $action; RabbitMQ answers on $HOST:$PORT (log: $LOG)"
