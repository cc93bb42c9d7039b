// Package bank is the bank.v1.Bank service: accounts keyed by positive
// 32-bit ids, each with a balance in int64 minor units, kept durable in one
// directory. It is written once and served over any bankrpc transport; it
// imports the generated stubs and the transport runtime, never a backend.
//
// # Rules
//
// Open registers an account on first contact and logs its client on; Close
// logs it off, and the account and its money stay. Deposit, Withdraw and
// Transfer take strictly positive amounts. An account may have a credit
// limit (the bank's default for new accounts, WithCreditLimit; one
// account's, SetCreditLimit, an administrators' method): Withdraw and
// Transfer take what the balance lacks from credit, down to minus the limit,
// and say how much; beyond it they are refused with FAILED_PRECONDITION
// "insufficient funds (balance 120, asked 500)"; a transfer to an unknown
// account is NOT_FOUND
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
// Every mutating call is applied at most once per call id, with no silent
// window. Call ids belong to client sessions ("<session>-<seq>", as a
// bankrpc.Conn makes them), and each request says which of its session's
// replies the client still lacks (bankrpc.CallSessionFromContext). The bank
// records each call under its session, in the same durable log record as
// the change, and answers a repeat (a retry, an at-least-once redelivery)
// with the recorded result, refusals included, even after a restart. It
// forgets the replies the client no longer needs, and whole sessions after
// the retention horizon without a call (WithSessionRetention, default 7
// days of the bank running). A call it can no longer prove unapplied is
// refused with ABORTED, "outcome unknown", and never applied; a call id of
// another form is refused with INVALID_ARGUMENT. FORMAT.md has the rules
// and why they hold.
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
// Open never hides a loss: it refuses files that cannot hold every change
// (a snapshot missing, *IncompleteError) and damage it cannot explain as a
// write cut short by a crash (*CorruptError; bytes after the last record
// are cut off only with WithRepairLogTail), and it keeps a copy of whatever
// it cuts off. FORMAT.md, next to this file, documents the files and the
// reasoning.
//
// # Memory
//
// Accounts live in one slice sorted by id, found by binary search: 24 bytes
// per account. Opening a new account inserts into the slice, which moves the
// accounts after it: cheap for ids opened in increasing order, O(n)
// otherwise. Sessions take about 118 bytes each (a million one-shot clients
// within the horizon: 118 MB), in pointer-free chunks; a session keeps at
// most 1024 replies, and WithMaxSessions bounds their number.
package bank
