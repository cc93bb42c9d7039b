#!/usr/bin/env bash
# The cluster node-loss scenario of `make chaos` (cmd/bankrpc-chaos): a private
# three-node RabbitMQ cluster (scripts/rabbitmq-node.sh cluster-start), the bank
# over quorum queues, 16 clients transferring among 100 accounts, kill -9 of the
# node leading the bank's queue, kill -9 of the node everyone is connected to,
# then a graceful stop of another (docs/cluster.md). Prints the figures and a
# verdict; exit 0 when every run is OK, non-zero otherwise.
#
#   chaos-cluster.sh [RUNS]     default 1 run
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec go run ./examples/cluster/nodeloss -runs "${1:-1}"
