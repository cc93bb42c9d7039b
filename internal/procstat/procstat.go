// Package procstat reads a Linux process's resident set size and thread
// count from /proc, for the tests and benchmarks that measure a server's
// memory from outside it.
package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Status is what Read takes from /proc/PID/status.
type Status struct {
	RSS     int64 // bytes resident (VmRSS)
	Threads int
}

// Read returns the status of process pid, or an error when /proc has none
// (the process is gone, or this is not Linux).
func Read(pid int) (Status, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Status{}, err
	}
	return parse(string(b)), nil
}

// RSS returns the resident set size of process pid in bytes, 0 when it
// cannot be read.
func RSS(pid int) int64 {
	st, _ := Read(pid)
	return st.RSS
}

func parse(status string) Status {
	var st Status
	for line := range strings.Lines(status) {
		k, v, _ := strings.Cut(line, ":")
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fs[0], 10, 64)
		switch k {
		case "VmRSS":
			st.RSS = n << 10 // kB
		case "Threads":
			st.Threads = int(n)
		}
	}
	return st
}
