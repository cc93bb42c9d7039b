package bank

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const lockFileName = "LOCK"

// lockDir takes an exclusive flock(2) on dir/LOCK and writes the process id
// into it, for the error a second Open gets. flock locks belong to the open
// file, so a second Open in the same process is refused too, and the kernel
// releases the lock when the process dies, however it dies.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("bank: open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid := readPID(f)
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &LockedError{Dir: dir, PID: pid}
		}
		return nil, fmt.Errorf("bank: lock %s: %w", path, err)
	}
	// Write over the old owner's PID, then cut the file to the new one: a
	// second Open reading it meanwhile finds a PID, never an empty file.
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if _, err := f.WriteAt(pid, 0); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("bank: write lock file: %w", err)
	}
	if err := f.Truncate(int64(len(pid))); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("bank: write lock file: %w", err)
	}
	return f, nil
}

// readPID returns the process id on the first line of the lock file, or 0.
// Lines after the first are what remains of a longer PID that lockDir is
// writing over.
func readPID(f *os.File) int {
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 32))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
