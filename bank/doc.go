// Package bank is the bank.v1.Bank service: accounts keyed by positive
// 32-bit ids, each with a balance in int64 minor units, kept durable in one
// directory. It is written once and served over any bankrpc transport; it
// imports the generated stubs and the transport runtime, never a backend.
//
// # Rules
//
// Open registers an account on first contact and logs its client on; Close
// logs it off, and the account and its money stay. Deposit, Withdraw and
// Transfer take strictly positive amounts; Withdraw and Transfer are refused
// with FAILED_PRECONDITION "insufficient funds (balance 120, asked 500)"
// when the balance is short; a transfer to an unknown account is NOT_FOUND
// "no such receiver 42", to oneself INVALID_ARGUMENT, and one that would
// overflow the receiver OUT_OF_RANGE. Any call on an account that was never
// opened is NOT_FOUND and tells the caller to call Open first. A transfer is
// atomic: no observer ever sees the money on both sides or on neither.
// Whether a client is logged on is durable like the rest, so a restarted
// bank still counts the clients that have not closed (WithOnIdle).
//
// Refusals carry canonical codes and messages naming the values involved, so
// that a command-line client can print them as they are.
//
// # At most once
//
// Every mutating call is applied at most once per call id
// (transport.CallIDFromContext): the bank records the call id with the
// change, in the same durable log record, and answers a repeat (a retry, an
// at-least-once redelivery) with the recorded result, refusals included,
// even after a restart. The last DefaultDedupRetention call ids of each
// account are remembered (WithDedupRetention). A call without a call id is
// applied without this protection.
//
// # Durability
//
// "Acknowledged" means durable: a call returns only once its log record,
// and every record before it, has been written and fsynced, so a kill -9 at
// any moment loses nothing acknowledged. Concurrent callers share fsyncs
// (group commit). Balance likewise answers only once the state it reports is
// durable. A failed log write or fsync stops the bank: every later call fails
// with UNAVAILABLE. Snapshots bound the log: one is written on Shutdown, on
// Snapshot, and in the background every DefaultSnapshotEvery records.
// FORMAT.md, next to this file, documents the files and the reasoning.
//
// # Memory
//
// Accounts live in one slice sorted by id, found by binary search: 16 bytes
// per account, plus 32 bytes per remembered call id in pointer-free slabs.
// Opening a new account inserts into the slice, which moves the accounts
// after it: cheap for ids opened in increasing order, O(n) otherwise.
package bank
