#!/usr/bin/env bash
# Starts and stops a PRIVATE RabbitMQ node for tests that restart the broker or
# close every connection on it. The node lives entirely in DIR (data, logs, pid
# file, config, Erlang cookie), listens on 127.0.0.1 on its own ports, has no
# plugins, and is never the shared broker on 5672.
#
#   rabbitmq-node.sh start DIR [AMQP_PORT [DIST_PORT]]   start a node, wait until it serves
#   rabbitmq-node.sh stop DIR                            stop the node started in DIR
#   rabbitmq-node.sh restart DIR                         stop, then start on the same ports and data
#   rabbitmq-node.sh ctl DIR ARGS...                     rabbitmqctl -n <that node> ARGS...
#
# The node's max_message_size is bankrpc's frame limit plus its headroom,
# 4259840 bytes, as scripts/broker.sh sets on the shared broker; the
# environment variable BANKRPC_NODE_MAX_MESSAGE_SIZE, read by start, sets
# another number of bytes, or "default" to leave RabbitMQ's own (128 MiB):
# a broker configured by someone else (docs/protocol-amqp.md, section 12).
#
# start prints the node's settings as shell assignments (NODE=..., PORT=...,
# URL=...), also written to DIR/node.env. Ports default to free ones. Every
# wait is bounded (BANKRPC_NODE_WAIT seconds, default 60). stop only ever
# stops the node whose name is in DIR/node.env, through rabbitmqctl or, failing
# that, its own pid: never a broker it did not start.
set -euo pipefail

# Debian installs the server scripts outside the usual PATH. The /usr/sbin
# wrappers switch to the rabbitmq user and its cookie; the scripts behind them
# run as the caller, with the cookie in $HOME.
RMQ_BIN=${RABBITMQ_BIN_DIR:-/usr/lib/rabbitmq/bin}
WAIT_SECONDS=${BANKRPC_NODE_WAIT:-60}

die() {
	printf 'rabbitmq-node: error: %s\n' "$*" >&2
	exit 1
}

usage() {
	sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

port_open() {
	timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# free_port prints a port in 20000-39999 that nothing listens on.
free_port() {
	local p i
	for i in $(seq 1 50); do
		p=$((20000 + RANDOM % 20000))
		if ! port_open "$p"; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found in 20000-39999"
}

# node_env sets the environment rabbitmq-server and rabbitmqctl need for the
# node in $DIR; it reads $DIR/node.env.
node_env() {
	# shellcheck disable=SC1091
	. "$DIR/node.env"
	export HOME=$DIR # the Erlang cookie is $DIR/.erlang.cookie
	export RABBITMQ_NODENAME=$NODE
	export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
	export RABBITMQ_NODE_PORT=$PORT
	export RABBITMQ_DIST_PORT=$DIST_PORT
	export RABBITMQ_MNESIA_BASE=$DIR/mnesia
	export RABBITMQ_LOG_BASE=$DIR/log
	export RABBITMQ_PID_FILE=$DIR/node.pid
	export RABBITMQ_CONFIG_FILE=$DIR/rabbitmq.conf
	# Not the system's /etc/rabbitmq/conf.d/*.conf: this node's config is DIR's alone.
	export RABBITMQ_CONFIG_FILES=$DIR/conf.d
	export RABBITMQ_ADVANCED_CONFIG_FILE=$DIR/advanced.config
	export RABBITMQ_CONF_ENV_FILE=$DIR/rabbitmq-env.conf
	export RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/enabled_plugins
	export RABBITMQ_PLUGINS_EXPAND_DIR=$DIR/plugins-expand
}

ctl() {
	"$RMQ_BIN/rabbitmqctl" -n "$NODE" "$@"
}

start_node() {
	node_env
	mkdir -p "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE" "$RABBITMQ_CONFIG_FILES"
	if port_open "$PORT"; then
		die "port $PORT is already taken; not starting a second node there"
	fi
	"$RMQ_BIN/rabbitmq-server" >"$DIR/log/stdout.log" 2>&1 &
	echo $! >"$DIR/launcher.pid"

	local deadline=$((SECONDS + WAIT_SECONDS))
	until port_open "$PORT"; do
		if ! kill -0 "$(cat "$DIR/launcher.pid")" 2>/dev/null; then
			tail -n 30 "$DIR/log/stdout.log" >&2 || true
			die "node $NODE exited during start (logs in $DIR/log)"
		fi
		if ((SECONDS >= deadline)); then
			tail -n 30 "$DIR/log/stdout.log" >&2 || true
			die "node $NODE did not open port $PORT within ${WAIT_SECONDS}s (logs in $DIR/log)"
		fi
		sleep 0.2
	done
	timeout "$WAIT_SECONDS" "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" await_startup >/dev/null ||
		die "node $NODE did not finish booting within ${WAIT_SECONDS}s (logs in $DIR/log)"
}

stop_node() {
	node_env
	if timeout "$WAIT_SECONDS" "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1; then
		return 0
	fi
	# rabbitmqctl could not reach the node: stop the processes this script started.
	local pid
	for f in "$RABBITMQ_PID_FILE" "$DIR/launcher.pid"; do
		[[ -s $f ]] || continue
		pid=$(cat "$f")
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
	done
	local deadline=$((SECONDS + 10))
	while port_open "$PORT"; do
		((SECONDS < deadline)) || die "node $NODE still listens on $PORT"
		sleep 0.2
	done
}

print_env() {
	cat "$DIR/node.env"
	echo "URL=amqp://guest:guest@127.0.0.1:$PORT/"
}

[[ $# -ge 2 ]] || usage
cmd=$1
DIR=$(realpath -m "$2")
shift 2
[[ -x $RMQ_BIN/rabbitmq-server ]] || die "rabbitmq-server not found in $RMQ_BIN (install the rabbitmq-server package)"

case $cmd in
start)
	[[ ! -e $DIR/node.env ]] || die "$DIR already holds a node; use restart or stop"
	mkdir -p "$DIR"
	max_message_size=${BANKRPC_NODE_MAX_MESSAGE_SIZE:-4259840}
	if [[ $max_message_size == default ]]; then
		max_message_size_line="# max_message_size: RabbitMQ's default (BANKRPC_NODE_MAX_MESSAGE_SIZE=default)"
	elif [[ $max_message_size =~ ^[0-9]+$ ]] && ((max_message_size >= 1 && max_message_size <= 536870912)); then
		max_message_size_line="max_message_size = $max_message_size"
	else
		die "BANKRPC_NODE_MAX_MESSAGE_SIZE=$max_message_size: give a number of bytes up to 536870912, or default"
	fi
	amqp_port=${1:-$(free_port)}
	dist_port=${2:-$(free_port)}
	cookie=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
	(umask 077 && printf '%s' "$cookie" >"$DIR/.erlang.cookie")
	: >"$DIR/rabbitmq-env.conf"
	printf '[].\n' >"$DIR/enabled_plugins"
	printf '[].\n' >"$DIR/advanced.config"
	# The tests authenticate as guest, which RabbitMQ allows on loopback only.
	cat >"$DIR/rabbitmq.conf" <<-EOF
		listeners.tcp.default = 127.0.0.1:$amqp_port
		loopback_users.guest = true
		log.file.level = warning
		log.console = false
		$max_message_size_line
	EOF
	cat >"$DIR/node.env" <<-EOF
		NODE=bankrpc-test-$$@localhost
		PORT=$amqp_port
		DIST_PORT=$dist_port
	EOF
	start_node
	print_env
	;;
stop)
	[[ -e $DIR/node.env ]] || die "no node in $DIR"
	stop_node
	;;
restart)
	[[ -e $DIR/node.env ]] || die "no node in $DIR"
	stop_node
	start_node
	print_env
	;;
ctl)
	[[ -e $DIR/node.env ]] || die "no node in $DIR"
	node_env
	ctl "$@"
	;;
*)
	usage
	;;
esac
