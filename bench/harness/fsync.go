package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"time"
)

// FsyncResult is the latency of one fdatasync(2) after appending a
// record-sized write to a file, as the bank's log writer does for each
// group commit, in the directory the durable bank uses, and the CPU time
// the thread spent on them (on a virtual disk the flush itself can take
// CPU, which a loaded server's handlers then do not get).
type FsyncResult struct {
	Samples []time.Duration // sorted
	CPU     time.Duration   // of the thread, over all the samples
}

func (f FsyncResult) P50() time.Duration { return quantile(f.Samples, 0.5) }
func (f FsyncResult) P99() time.Duration { return quantile(f.Samples, 0.99) }

// CPUPerSync is the thread's CPU time per append and fdatasync.
func (f FsyncResult) CPUPerSync() time.Duration {
	if len(f.Samples) == 0 {
		return 0
	}
	return f.CPU / time.Duration(len(f.Samples))
}

// measureFsync appends 64 bytes and fdatasyncs, n times, in a new file in
// dir (deleted afterwards), and adds the latencies to f.
func (f *FsyncResult) measure(dir string, n int) error {
	file, err := os.CreateTemp(dir, "fsync-")
	if err != nil {
		return err
	}
	defer os.Remove(file.Name())
	defer file.Close()
	rec := make([]byte, 64)
	// The thread's own CPU time, so that the other goroutines' is not in it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	defer func() { f.CPU += threadCPU() - cpu0 }()
	for range n {
		t0 := time.Now()
		if _, err := file.Write(rec); err != nil {
			return err
		}
		if err := syscall.Fdatasync(int(file.Fd())); err != nil {
			return fmt.Errorf("fdatasync %s: %w", filepath.Base(file.Name()), err)
		}
		f.Samples = append(f.Samples, time.Since(t0))
	}
	slices.Sort(f.Samples)
	return nil
}

// rusageThread is Linux's RUSAGE_THREAD, which package syscall does not name.
const rusageThread = 1

// threadCPU is the calling thread's user and system CPU time.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// quantile returns the q-quantile of sorted durations (0 for none).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}
