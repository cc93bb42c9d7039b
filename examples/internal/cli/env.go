package cli

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// EnvPrefix starts the name of the environment variable every flag falls
// back to: --client-name is read from BANKRPC_CLIENT_NAME.
const EnvPrefix = "BANKRPC_"

// EnvName returns the environment variable read for the flag called name:
// BANKRPC_ followed by the name in upper case, dashes turned to underscores.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse parses args into fs, then gives every flag not on the command line
// the value of its environment variable (see EnvName) when lookup finds one:
// flags win over the environment, the environment over the defaults. It
// returns the names of the flags set either way, so that a caller can tell a
// default from a choice. It returns flag.ErrHelp for -h or --help, and a
// *UsageError for anything else wrong; an invalid environment value names
// its variable.
//
// fs must use flag.ContinueOnError; give it an output of io.Discard so that
// the caller alone decides where errors and usage go. lookup is usually
// os.LookupEnv.
func Parse(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) (set map[string]bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, flag.ErrHelp
		}
		return nil, Usagef("%v", err)
	}
	set = make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		v, ok := lookup(EnvName(f.Name))
		if !ok {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = Usagef("%s=%q: invalid value for --%s: %v", EnvName(f.Name), v, f.Name, serr)
			return
		}
		set[f.Name] = true
	})
	if err != nil {
		return nil, err
	}
	return set, nil
}

// PrintDefaults writes fs's flags to fs.Output() the way flag.PrintDefaults
// does, each followed by the environment variable it falls back to.
func PrintDefaults(fs *flag.FlagSet) {
	w := fs.Output()
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintln(w, line)
		fmt.Fprintf(w, "    \t%s", strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "\n    \tenv %s\n", EnvName(f.Name))
	})
}
