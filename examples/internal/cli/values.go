package cli

import (
	"math"
	"strconv"
)

// ParseAmount parses an amount of money: a positive whole number of minor
// units (cents), written in decimal digits only, from 1 to math.MaxInt64.
// Signs, decimal points, exponents and anything else are refused with a
// message saying what is accepted.
func ParseAmount(s string) (int64, error) {
	n, err := parsePositive("amount", s, math.MaxInt64, "a positive whole number of minor units (cents)")
	return int64(n), err
}

// ParseAccountID parses an account id: a positive 32-bit integer, from 1 to
// math.MaxInt32, in decimal digits only.
func ParseAccountID(what, s string) (int32, error) {
	n, err := parsePositive(what, s, math.MaxInt32, "a positive 32-bit integer")
	return int32(n), err
}

// parsePositive parses digits only into a value from 1 to limit.
func parsePositive(what, s string, limit uint64, accepted string) (uint64, error) {
	if s == "" {
		return 0, Usagef("%s is missing: give %s, from 1 to %d", what, accepted, limit)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, Usagef("%s %q is not accepted: give %s, from 1 to %d, in digits only (no sign, point or exponent)", what, s, accepted, limit)
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > limit {
		return 0, Usagef("%s %s is too large: give %s, from 1 to %d", what, s, accepted, limit)
	}
	if n == 0 {
		return 0, Usagef("%s must be positive, got %s: give %s, from 1 to %d", what, s, accepted, limit)
	}
	return n, nil
}

// maxBankName bounds a bank name: it names a directory and, with prefixes,
// AMQP queues (whose names are limited to 255 bytes).
const maxBankName = 64

// CheckBankName checks a bank name: 1 to 64 letters, digits, '.', '_' or
// '-', not starting with '.' or '-'. The name becomes a directory (./data/NAME)
// and part of AMQP queue names, so nothing else is allowed.
func CheckBankName(name string) error {
	const accepted = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter, digit or '_'"
	if name == "" || len(name) > maxBankName {
		return Usagef("bank name %q is not accepted: give %s", name, accepted)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' ||
			i > 0 && (c == '.' || c == '-')
		if !ok {
			return Usagef("bank name %q is not accepted: give %s", name, accepted)
		}
	}
	return nil
}
