// Package cli holds what the bank-server and bank-client programs share on
// the command line: flags that fall back to BANKRPC_<FLAG> environment
// variables, the exit statuses, the validation of account ids, amounts and
// bank names, and the slog logger chosen by --log-format and --log-level.
//
// It is internal to examples/: a library never talks to a terminal.
package cli
