package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/bankrpc/bankrpc"
	"github.com/bankrpc/bankrpc/examples/internal/cli"
)

// promptText is printed before each command when stdin is a terminal.
const promptText = "bank> "

// prompt reads commands from in, one per line, and runs them until quit,
// the end of the input or ctx ending. Blank lines and lines starting with #
// are skipped. With interactive, it greets and prints a prompt before each
// line; otherwise it prints only the replies, one line per command.
//
// A refused or failed command does not end the session. The exit status is
// that of the last command that did not succeed (ExitUsage for a mistyped
// line), ExitOK when all did, and ExitInterrupted when ctx ended.
func (s *session) prompt(ctx context.Context, in io.Reader, interactive bool, welcome string) int {
	// The reader runs apart so that an interruption ends the session even
	// while a read blocks; in a program, the process exit ends the read.
	lines := make(chan string)
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-stop:
				return
			}
		}
		readErr <- sc.Err()
	}()

	if interactive {
		fmt.Fprint(s.out, welcome)
	}
	status := cli.ExitOK
	for {
		if interactive {
			fmt.Fprint(s.out, promptText)
		}
		var line string
		select {
		case <-ctx.Done():
			if interactive {
				fmt.Fprintln(s.out)
			}
			return cli.ExitInterrupted
		case err := <-readErr:
			if interactive {
				fmt.Fprintln(s.out)
			}
			if err != nil {
				fmt.Fprintf(s.errOut, "reading commands: %v\n", err)
				return cli.ExitUsage
			}
			return status
		case line = <-lines:
		}
		words := strings.Fields(line)
		if len(words) == 0 || strings.HasPrefix(words[0], "#") {
			continue
		}
		c, err := parseCommand(words)
		if err != nil {
			s.usageError(err)
			status = cli.ExitUsage
			continue
		}
		switch c.name {
		case cmdQuit:
			return status
		case cmdHelp:
			s.help()
			continue
		}
		if st := s.exec(ctx, c, s.newCallID()); st != cli.ExitOK {
			if st == cli.ExitInterrupted {
				return st
			}
			status = st
		}
	}
}

// usageError reports a mistyped line: on errOut, or as a JSON error object
// in --json mode, so that a program reading the replies gets one object per
// command.
func (s *session) usageError(err error) {
	if s.json {
		s.printError(bankrpc.InvalidArgument, err.Error())
		return
	}
	fmt.Fprintln(s.errOut, err)
}

// help prints the commands: on out, or on errOut in --json mode, where out
// carries only JSON objects.
func (s *session) help() {
	w := s.out
	if s.json {
		w = s.errOut
	}
	fmt.Fprint(w, helpText)
}
