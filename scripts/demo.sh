#!/usr/bin/env bash
# The bankrpc demo: runs the example programs built by `make build` into bin/.
# Run it with `make demo`, which installs what is missing and builds first.
#
# First the quickstart (a typed call over the in-memory transport), then the bank
# story: a bank over ZeroMQ in a temporary directory, two customers, a refused
# withdrawal, transfers, a restart that keeps the balances, and a second bank at the
# same time. If RabbitMQ answers on 127.0.0.1:5672 the key steps are repeated over it.
#
# Every step's outcome is checked: the script exits non-zero when a reply, an exit
# status or a balance is not what the story says. It stops every process it started,
# by PID, and removes its temporary directory, whatever happens.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# The commands shown are the commands run: bank-server and bank-client from bin/.
export PATH="$ROOT/bin:$PATH"
# Only what this script sets counts, not the caller's BANKRPC_ variables.
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^BANKRPC_' || true)

banner() { printf '\n=== %s\n\n' "$*"; }
say() { printf '%s\n' "$*"; }

need() {
	if [[ ! -x bin/$1 ]]; then
		echo "demo: bin/$1 not found: run 'make build' (it builds every examples/*/ main package)" >&2
		exit 1
	fi
}

fail() {
	printf '\ndemo: FAILED: %s\n' "$*" >&2
	exit 1
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bankrpc-demo.XXXXXX")
PIDS=()

# cleanup stops the servers this script started (by PID: SIGTERM, then SIGKILL
# after 5 s) and removes the temporary directory.
cleanup() {
	local pid i
	for pid in "${PIDS[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid" 2>/dev/null || true
			for ((i = 0; i < 50; i++)); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME ARGS... starts bank-server in the background, waits until it
# serves, and sets SERVER_PID and SERVER_ADDR (the address it serves on).
start_server() {
	local name=$1
	shift
	local out=$WORK/$name.out err=$WORK/$name.log i
	say "\$ bank-server $*"
	# Appending: the file is emptied after each look, and the server's next line
	# then starts at the beginning.
	bank-server "$@" >>"$out" 2>>"$err" &
	SERVER_PID=$!
	PIDS+=("$SERVER_PID")
	for ((i = 0; i < 150; i++)); do
		if grep -q 'serving over' "$out"; then
			sed 's/^/  /' "$out"
			SERVER_ADDR=$(sed -n 's/.*serving over [a-z]* at \([^ ;]*\).*/\1/p' "$out")
			: >"$out"
			return
		fi
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$err" >&2
	fail "bank-server $name did not start serving"
}

# stop_server PID NAME sends SIGTERM and checks that the server saved and exited 0.
stop_server() {
	local pid=$1 name=$2 status=0
	say "\$ kill -TERM $pid    # bank-server $name: stop taking calls, finish those in flight, save"
	kill -TERM "$pid"
	wait "$pid" || status=$?
	sed 's/^/  /' "$WORK/$name.out"
	: >"$WORK/$name.out"
	[[ $status -eq 0 ]] || fail "bank-server $name exited with status $status after SIGTERM (log: $(tail -n 5 "$WORK/$name.log"))"
}

# run WANT_STATUS WANT_OUTPUT bank-client ARGS... shows the command and its output, and
# checks both its exit status and what it printed on stdout.
run() {
	local want_status=$1 want=$2 out status=0
	shift 2
	say "\$ $*"
	out=$("$@" 2>"$WORK/client.err") || status=$?
	[[ -n $out ]] && say "$out"
	[[ -s $WORK/client.err ]] && sed 's/^/  (stderr) /' "$WORK/client.err"
	[[ $status -ne 130 ]] || exit 130 # interrupted, like this script
	[[ $status -eq $want_status ]] || fail "'$*' exited with status $status, the story expects $want_status"
	[[ $out == "$want" ]] || fail "'$*' printed '$out', the story expects '$want'"
	return 0
}

banner "bankrpc demo"
say "A typed client calls a generated service stub; the call travels as an encoded"
say "envelope over a pluggable transport and comes back as a typed reply."

banner "1. quickstart: one call over the in-memory transport"
need quickstart
bin/quickstart

need bank-server
need bank-client

banner "2. a bank over ZeroMQ, and two customers"
say "Everything lives in $WORK; the bank keeps its accounts in data/ there."
cd "$WORK"
start_server main --bank main --addr tcp://127.0.0.1:0 --data data/main
MAIN_PID=$SERVER_PID
MAIN_ADDR=$SERVER_ADDR
say
say "Port 0 let the server pick a free port. Every flag can also come from a"
say "BANKRPC_<FLAG> variable; the clients below find the bank through"
say "  export BANKRPC_ADDR=$MAIN_ADDR"
export BANKRPC_ADDR=$MAIN_ADDR
say
say "Alice is account 1, Bob account 2. An account opens on first use; each"
say "bank-client logs on, runs one command, prints the reply and logs off."
run 0 "balance 100" bank-client --id 1 deposit 100
run 0 "balance 50" bank-client --id 2 deposit 50
say
say "Alice asks for more than she has. The bank refuses; the exit status is 1:"
run 1 "withdraw refused: insufficient funds (balance 100, asked 500)" bank-client --id 1 withdraw 500
say
say "Alice sends 30 to Bob, then 10 to account 42, which does not exist (refused):"
run 0 "balance 70" bank-client --id 1 transfer 2 30
run 1 "transfer refused: no such receiver 42" bank-client --id 1 transfer 42 10
say
say "Both balances, the second as JSON:"
run 0 "balance 70" bank-client --id 1 balance
run 0 '{"balance":"80","creditLimit":"0"}' bank-client --id 2 --json balance
say
say "Without a command, bank-client reads commands from stdin: a prompt on a"
say "terminal, and no prompt when the commands come from a pipe:"
say "\$ printf 'deposit 5\\nwithdraw 15\\nbalance\\n' | bank-client --id 2"
out=$(printf 'deposit 5\nwithdraw 15\nbalance\n' | bank-client --id 2) || fail "the piped session failed"
say "$out"
[[ $out == $'balance 85\nbalance 70\nbalance 70' ]] || fail "the piped session printed '$out'"

banner "3. a restart keeps the balances"
stop_server "$MAIN_PID" main
say
say "No server now: a client gives up after --timeout with exit status 3."
run 3 "" bank-client --id 1 --timeout 1s balance
say
start_server main --bank main --addr "$MAIN_ADDR" --data data/main
MAIN_PID=$SERVER_PID
run 0 "balance 70" bank-client --id 1 balance
run 0 "balance 70" bank-client --id 2 balance

banner "4. a second bank on the same machine, at the same time"
say "Each bank has its own name, address and data directory. Account 1 of the"
say "bank \"savings\" is not account 1 of the bank \"main\"."
start_server savings --bank savings --addr tcp://127.0.0.1:0 --data data/savings
SAVINGS_PID=$SERVER_PID
SAVINGS_ADDR=$SERVER_ADDR
run 0 "balance 500" bank-client --addr "$SAVINGS_ADDR" --id 1 deposit 500
run 0 "balance 70" bank-client --id 1 balance
say
say "A bank serves one data directory at a time; a second server is refused:"
say "\$ bank-server --bank main --addr tcp://127.0.0.1:0 --data data/main"
status=0
bank-server --bank main --addr tcp://127.0.0.1:0 --data data/main >"$WORK/second.out" 2>"$WORK/second.err" || status=$?
grep -v 'level=' "$WORK/second.err" | sed 's/^/  (stderr) /'
[[ $status -eq 1 ]] || fail "a second bank-server on data/main exited with status $status, the story expects 1"
stop_server "$SAVINGS_PID" savings
stop_server "$MAIN_PID" main
unset BANKRPC_ADDR

banner "5. the same bank over RabbitMQ"
if ! timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672' 2>/dev/null; then
	say "Skipped: nothing answers on 127.0.0.1:5672. Start RabbitMQ with 'make broker'"
	say "and run 'make demo' again to see the same bank served over durable queues."
	banner "demo done"
	exit 0
fi
say "RabbitMQ answers on 127.0.0.1:5672. The data of the bank \"main\" is served now"
say "over durable queues: --transport amqp and the bank's name, no address to share."
export BANKRPC_TRANSPORT=amqp BANKRPC_BANK=main
say "  export BANKRPC_TRANSPORT=amqp BANKRPC_BANK=main"
start_server main --data data/main
MAIN_PID=$SERVER_PID
run 0 "balance 70" bank-client --id 1 balance
run 0 "balance 45" bank-client --id 2 transfer 1 25
run 0 "balance 95" bank-client --id 1 balance
run 1 "withdraw refused: insufficient funds (balance 95, asked 1000)" bank-client --id 1 withdraw 1000
stop_server "$MAIN_PID" main
say
say "Over RabbitMQ a request waits in the bank's queue while no server runs. Bob"
say "deposits while the bank is down; his client waits (up to --timeout) ..."
say "\$ bank-client --id 2 --timeout 20s deposit 5 &"
bank-client --id 2 --timeout 20s deposit 5 >"$WORK/waiting.out" 2>"$WORK/waiting.err" &
WAITING_PID=$!
PIDS+=("$WAITING_PID")
sleep 1
kill -0 "$WAITING_PID" 2>/dev/null || fail "the client did not wait for the bank: $(cat "$WORK/waiting.err")"
say "... and gets its reply once the bank is back:"
start_server main --data data/main
MAIN_PID=$SERVER_PID
status=0
wait "$WAITING_PID" || status=$?
say "$(cat "$WORK/waiting.out")    # the waiting client's reply"
[[ $status -eq 0 && $(cat "$WORK/waiting.out") == "balance 50" ]] ||
	fail "the waiting deposit ended with status $status: $(cat "$WORK/waiting.out" "$WORK/waiting.err")"
say "(A request carries its deadline: one that no bank takes in time is dropped, never"
say "applied late, and bank-client says how to repeat it safely.)"
run 0 "balance 95" bank-client --id 1 balance
run 0 "balance 50" bank-client --id 2 balance
stop_server "$MAIN_PID" main

banner "demo done"
