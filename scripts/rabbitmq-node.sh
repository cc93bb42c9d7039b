#!/usr/bin/env bash
# Starts and stops PRIVATE RabbitMQ nodes for tests that restart the broker,
# close every connection on it or lose cluster nodes. A node lives entirely in
# DIR (data, logs, pid file, config, Erlang cookie), listens on 127.0.0.1 on
# its own ports, has no plugins, and is never the shared broker on 5672.
#
#   rabbitmq-node.sh start DIR [AMQP_PORT [DIST_PORT]]   start a node, wait until it serves;
#                                                        on a DIR whose node is down: start it again
#   rabbitmq-node.sh stop DIR                            stop the node started in DIR
#   rabbitmq-node.sh kill DIR                            kill -9 the node started in DIR
#   rabbitmq-node.sh restart DIR                         stop, then start on the same ports and data
#   rabbitmq-node.sh ctl DIR ARGS...                     rabbitmqctl -n <that node> ARGS...
#   rabbitmq-node.sh await-quorum DIR                    wait until every quorum queue with a member on
#                                                        the node in DIR could lose that node (quorum + 1 online)
#   rabbitmq-node.sh cluster-start DIR [N]               start N nodes (default 3) in DIR/node1..N, joined
#   rabbitmq-node.sh cluster-stop DIR                    stop every node of the cluster, remove DIR
#   rabbitmq-node.sh cluster-leader DIR QUEUE            print the DIR of the node leading a quorum queue
#
# The node's max_message_size is bankrpc's frame limit plus its headroom,
# 4259840 bytes, as scripts/broker.sh sets on the shared broker; the
# environment variable BANKRPC_NODE_MAX_MESSAGE_SIZE, read by start, sets
# another number of bytes, or "default" to leave RabbitMQ's own (128 MiB):
# a broker configured by someone else (docs/protocol-amqp.md, section 12).
#
# start and cluster-start print the settings as shell assignments (NODE=...,
# PORT=..., URL=...; for a cluster NODES=, DIRS= and URLS=, space-separated,
# and ADDRESS=, one address listing every node), also written to DIR/node.env
# and DIR/cluster.env. Ports default to free ones. Every wait is bounded
# (BANKRPC_NODE_WAIT seconds, default 60). stop, kill and cluster-stop only
# ever act on nodes whose names and pids are in DIR: never on a broker the
# script did not start. A killed or stopped cluster node started again
# (start DIR/nodeK) rejoins its cluster by itself. cluster-stop keeps DIR,
# with the logs, when a node could not be stopped.
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
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
	exit 2
}

port_open() {
	timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# free_port sets FREE_PORT to a port in 20000-32767 that nothing listens on
# and that this script did not hand out before (PICKED). The range ends below
# Linux's ephemeral ports (32768-60999), which outgoing connections take
# without listening: a node whose port is taken so fails to start. Not to be
# called in a subshell, which would forget PICKED.
PICKED=" "
free_port() {
	local p i
	for i in $(seq 1 50); do
		p=$((20000 + RANDOM % 12768))
		if [[ $PICKED != *" $p "* ]] && ! port_open "$p"; then
			PICKED+="$p "
			FREE_PORT=$p
			return 0
		fi
	done
	die "no free port found in 20000-32767"
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
	export ERL_CRASH_DUMP=$DIR/log/erl_crash.dump
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
	# From DIR: a node that crashes writes its Mnesia core file in its
	# working directory.
	(cd "$DIR" && exec "$RMQ_BIN/rabbitmq-server") >"$DIR/log/stdout.log" 2>&1 &
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

# max_message_size_line prints the node's max_message_size setting (see the
# header: BANKRPC_NODE_MAX_MESSAGE_SIZE).
max_message_size_line() {
	local size=${BANKRPC_NODE_MAX_MESSAGE_SIZE:-4259840}
	if [[ $size == default ]]; then
		echo "# max_message_size: RabbitMQ's default (BANKRPC_NODE_MAX_MESSAGE_SIZE=default)"
	elif [[ $size =~ ^[0-9]+$ ]] && ((size >= 1 && size <= 536870912)); then
		echo "max_message_size = $size"
	else
		die "BANKRPC_NODE_MAX_MESSAGE_SIZE=$size: give a number of bytes up to 536870912, or default"
	fi
}

# init_node writes the files of a new node in $DIR: init_node AMQP_PORT
# DIST_PORT NODE_NAME COOKIE.
init_node() {
	mkdir -p "$DIR"
	(umask 077 && printf '%s' "$4" >"$DIR/.erlang.cookie")
	: >"$DIR/rabbitmq-env.conf"
	printf '[].\n' >"$DIR/enabled_plugins"
	printf '[].\n' >"$DIR/advanced.config"
	# The tests authenticate as guest, which RabbitMQ allows on loopback only.
	cat >"$DIR/rabbitmq.conf" <<-EOF
		listeners.tcp.default = 127.0.0.1:$1
		loopback_users.guest = true
		log.file.level = warning
		log.console = false
		$(max_message_size_line)
	EOF
	cat >"$DIR/node.env" <<-EOF
		NODE=$3
		PORT=$1
		DIST_PORT=$2
	EOF
}

new_cookie() {
	head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'
}

# kill_node kills the node in $DIR with SIGKILL, as a crash would: no
# goodbye to its peers or clients. Only the pids this script recorded.
kill_node() {
	node_env
	local pid killed=0
	for f in "$RABBITMQ_PID_FILE" "$DIR/launcher.pid"; do
		[[ -s $f ]] || continue
		pid=$(cat "$f")
		if kill -0 "$pid" 2>/dev/null; then
			kill -KILL "$pid" 2>/dev/null && killed=1
		fi
	done
	((killed)) || die "node $NODE is not running (no live pid in $DIR)"
	local deadline=$((SECONDS + 10))
	while port_open "$PORT"; do
		((SECONDS < deadline)) || die "node $NODE still listens on $PORT after kill -9"
		sleep 0.1
	done
	rm -f "$RABBITMQ_PID_FILE"
}

# cluster_nodes prints the node directories of the cluster in $CLUSTER.
cluster_nodes() {
	local d
	for d in "$CLUSTER"/node*; do
		[[ -e $d/node.env ]] && echo "$d"
	done
}

cluster_start() {
	local n=$1 i cookie pids=() dirs=() nodes=() urls=() hosts=() failed=0 first amqp_port
	[[ $n =~ ^[1-9][0-9]?$ ]] || die "the number of nodes must be 1-99, not $n"
	mkdir -p "$CLUSTER"
	cookie=$(new_cookie)
	for i in $(seq 1 "$n"); do
		DIR=$CLUSTER/node$i
		free_port
		amqp_port=$FREE_PORT
		free_port
		init_node "$amqp_port" "$FREE_PORT" "bankrpc-c$$-n$i@localhost" "$cookie"
		dirs+=("$DIR")
	done
	# Boot in parallel: a node takes seconds to start on a busy machine.
	for DIR in "${dirs[@]}"; do
		(start_node) &
		pids+=($!)
	done
	for i in "${!pids[@]}"; do
		wait "${pids[$i]}" || failed=1
	done
	if ((failed)); then
		cluster_stop_all
		die "a node of the cluster in $CLUSTER did not start (logs in $CLUSTER/node*/log)"
	fi
	DIR=${dirs[0]}
	node_env
	first=$NODE
	for DIR in "${dirs[@]:1}"; do
		node_env
		if ! { ctl -q stop_app >/dev/null && timeout "$WAIT_SECONDS" "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" join_cluster "$first" >/dev/null &&
			ctl -q start_app >/dev/null; }; then
			cluster_stop_all
			die "node $NODE could not join $first (logs in $CLUSTER/node*/log)"
		fi
	done
	for DIR in "${dirs[@]}"; do
		node_env
		nodes+=("$NODE")
		urls+=("amqp://guest:guest@127.0.0.1:$PORT/")
		hosts+=("127.0.0.1:$PORT")
	done
	{
		echo "NODES='${nodes[*]}'"
		echo "DIRS='${dirs[*]}'"
		echo "URLS='${urls[*]}'"
		echo "ADDRESS='amqp://guest:guest@$(
			IFS=,
			echo "${hosts[*]}"
		)/'"
	} >"$CLUSTER/cluster.env"
	cat "$CLUSTER/cluster.env"
}

# cluster_stop_all stops every node of $CLUSTER; it returns 1 when one could
# not be stopped.
cluster_stop_all() {
	local d pids=() rc=0
	while read -r d; do
		(
			DIR=$d
			node_env
			# A node that is down already (killed, stopped) has nothing to stop.
			if port_open "$PORT" || { [[ -s $RABBITMQ_PID_FILE ]] && kill -0 "$(cat "$RABBITMQ_PID_FILE")" 2>/dev/null; }; then
				stop_node
			fi
		) &
		pids+=($!)
	done < <(cluster_nodes)
	for p in "${pids[@]}"; do
		wait "$p" || rc=1
	done
	return $rc
}

cluster_leader() {
	local queue=$1 d leader=""
	while read -r d; do
		DIR=$d
		node_env
		port_open "$PORT" || continue
		leader=$(timeout "$WAIT_SECONDS" "$RMQ_BIN/rabbitmqctl" -q -n "$NODE" list_queues --no-table-headers name leader 2>/dev/null |
			awk -v q="$queue" '$1 == q { print $2 }') || continue
		[[ -n $leader ]] && break
	done < <(cluster_nodes)
	[[ -n $leader ]] || die "no live node of $CLUSTER knows a leader of queue $queue"
	while read -r d; do
		DIR=$d
		node_env
		if [[ $NODE == "$leader" ]]; then
			echo "$d"
			return 0
		fi
	done < <(cluster_nodes)
	die "queue $queue is led by $leader, not a node of $CLUSTER"
}

[[ $# -ge 2 ]] || usage
cmd=$1
DIR=$(realpath -m "$2")
shift 2
[[ -x $RMQ_BIN/rabbitmq-server ]] || die "rabbitmq-server not found in $RMQ_BIN (install the rabbitmq-server package)"

case $cmd in
start)
	if [[ -e $DIR/node.env ]]; then
		node_env
		! port_open "$PORT" || die "the node in $DIR already runs on port $PORT"
		start_node
		print_env
		exit 0
	fi
	amqp_port=${1:-}
	dist_port=${2:-}
	if [[ -z $amqp_port ]]; then
		free_port
		amqp_port=$FREE_PORT
	fi
	if [[ -z $dist_port ]]; then
		free_port
		dist_port=$FREE_PORT
	fi
	init_node "$amqp_port" "$dist_port" "bankrpc-test-$$@localhost" "$(new_cookie)"
	start_node
	print_env
	;;
stop)
	[[ -e $DIR/node.env ]] || die "no node in $DIR"
	stop_node
	;;
kill)
	[[ -e $DIR/node.env ]] || die "no node in $DIR"
	kill_node
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
await-quorum)
	[[ -e $DIR/node.env ]] || die "no node in $DIR"
	node_env
	timeout $((WAIT_SECONDS + 10)) "$RMQ_BIN/rabbitmq-upgrade" -q -n "$NODE" await_online_quorum_plus_one -t "$WAIT_SECONDS" >/dev/null ||
		die "the quorum queues of node $NODE did not all have quorum + 1 members online within ${WAIT_SECONDS}s"
	;;
cluster-start)
	CLUSTER=$DIR
	[[ ! -e $CLUSTER/cluster.env && -z $(cluster_nodes) ]] || die "$CLUSTER already holds a cluster; use cluster-stop first"
	cluster_start "${1:-3}"
	;;
cluster-stop)
	CLUSTER=$DIR
	[[ -n $(cluster_nodes) ]] || die "no cluster in $CLUSTER"
	cluster_stop_all || die "a node of $CLUSTER could not be stopped; $CLUSTER is kept"
	rm -rf "$CLUSTER"
	;;
cluster-leader)
	CLUSTER=$DIR
	[[ $# -eq 1 ]] || usage
	cluster_leader "$1"
	;;
*)
	usage
	;;
esac
