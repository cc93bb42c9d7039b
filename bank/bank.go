package bank

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/bankrpc/bankrpc"
	bankv1 "github.com/bankrpc/bankrpc/gen/bank/v1"
)

// DefaultSnapshotEvery is how many log records accumulate before the bank
// writes a snapshot on its own, unless WithSnapshotEvery says otherwise.
const DefaultSnapshotEvery = 1 << 20

type options struct {
	logger        *slog.Logger
	retention     time.Duration
	maxSessions   int
	creditLimit   int64
	admins        []string
	repairTail    bool
	onIdle        func()
	onFailure     func(error)
	snapshotEvery int
	openLog       func(path string) (logFile, error)
	logSyncers    int // fsyncs of the log at once (logSyncers; tests compare with 1)
	syncDir       func(dir string) error
	// clock is the wall clock the bank's time advances with (FORMAT.md,
	// "Time"); tests replace it.
	clock func() time.Time
	// maxAccounts is how many accounts the bank may hold: maxAccounts
	// unless a test sets fewer. A bank must keep its limit across
	// restarts: replay checks that every Open refused for want of room is
	// refused again.
	maxAccounts int
}

// Option configures Open.
type Option func(*options)

// WithLogger sets where the bank reports what an operator should know: a
// torn record truncated at start, a failed log write or fsync, snapshots
// written. The default discards these reports.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithSessionRetention sets how long the bank remembers a client session
// after its last recorded call (default DefaultSessionRetention, 7 days),
// counted in bank time: time while the bank runs (FORMAT.md, "Time"). A
// retry with the call id of a call whose outcome is unknown is answered
// from the record within that time; after it, such a retry is refused with
// ABORTED, never applied.
func WithSessionRetention(d time.Duration) Option {
	return func(o *options) { o.retention = d }
}

// WithMaxSessions sets how many client sessions the bank remembers at once
// (default DefaultMaxSessions). A call that would start a session beyond it
// is refused with RESOURCE_EXHAUSTED, not applied, until sessions expire:
// the bank never forgets a session early, as that would leave its calls
// open to being applied twice.
func WithMaxSessions(n int) Option {
	return func(o *options) { o.maxSessions = n }
}

// WithCreditLimit sets the credit limit an account gets when it is created
// (default 0: no credit). Accounts keep the limit they were created with;
// SetCreditLimit changes one account's.
func WithCreditLimit(limit int64) Option {
	return func(o *options) { o.creditLimit = limit }
}

// WithAdmins names the authenticated caller identities (transport.Peer's
// Identity: a CURVE public key on ZeroMQ, the broker-validated user-id on
// AMQP) that may call the administrators' methods (SetCreditLimit). A
// caller in the same process (a direct method call, or the inproc
// transport) may always call them; any other caller gets PERMISSION_DENIED.
func WithAdmins(identities ...string) Option {
	return func(o *options) { o.admins = append(o.admins, identities...) }
}

// WithRepairLogTail lets Open cut off damaged bytes at the end of the
// newest log file: bytes after the last valid record that are not the
// remains of an interrupted append and that no valid record follows.
// Without it Open refuses such a directory with a *CorruptError whose
// TailBytes is set. Either way Open keeps a copy of whatever it cuts off
// (FORMAT.md, "Start").
func WithRepairLogTail() Option {
	return func(o *options) { o.repairTail = true }
}

// WithOnIdle sets fn to be called whenever the number of logged-on clients
// drops from above zero to zero, once per such transition, after the Close
// that caused it is durable. fn runs on a goroutine of its own, so it may
// call Shutdown (the seed's exit-when-idle).
func WithOnIdle(fn func()) Option {
	return func(o *options) { o.onIdle = fn }
}

// WithOnFailure sets fn to be called once, on a goroutine of its own, when
// a log write or fsync fails (a full disk): from then on the bank applies no
// change until it is opened again. A server reports itself NOT_SERVING from
// it.
func WithOnFailure(fn func(error)) Option {
	return func(o *options) { o.onFailure = fn }
}

// WithSnapshotEvery sets how many log records accumulate before the bank
// writes a snapshot and compacts the log on its own, in the background
// (default DefaultSnapshotEvery). Zero turns automatic snapshots off: the
// log then grows until Snapshot or Shutdown.
func WithSnapshotEvery(records int) Option {
	return func(o *options) { o.snapshotEvery = records }
}

// Bank is the bank.v1.Bank service, with its accounts kept durable in one
// directory (FORMAT.md describes the files).
//
// A Bank is safe for concurrent use: calls run concurrently, each mutating
// call is applied under one mutex in the order of the log, and the writer
// goroutine makes records durable in batches (group commit). A call returns
// only once the record of its change, and of every change it could depend
// on, is durable. Shutdown is idempotent and may be called from any
// goroutine; calls made after it fail with Unavailable. Until Shutdown, a
// Bank holds its directory's lock and runs two goroutines (the log writer
// and the snapshotter).
type Bank struct {
	bankv1.UnimplementedBankServer

	dir  string
	opts options
	lock *os.File

	mu       sync.Mutex // guards the fields below, up to calls
	st       state
	clock    bankClock
	lsn      uint64   // sequence number of the last record
	gen      uint64   // log generation new records go to
	logged   int      // records logged since the last snapshot
	snapDue  int      // logged count at which an automatic snapshot is due
	pending  *batch   // records waiting for the writer, nil when none
	inflight []*batch // batches written or being written, not yet acknowledged, in log order
	failed   error    // the log write or fsync that failed; sticky
	closed   bool     // Shutdown has begun

	calls       sync.WaitGroup // calls in flight; Add only under mu while !closed
	wake        chan struct{}  // tells the writer there is a pending batch
	snapReq     chan struct{}  // asks the snapshotter for a snapshot
	stop        chan struct{}  // closed to stop the writer and the snapshotter
	writerDone  chan struct{}
	snapperDone chan struct{}
	snapMu      sync.Mutex // one snapshot at a time

	shutdownOnce sync.Once
	shutdownErr  error
}

var _ bankv1.BankServer = (*Bank)(nil)

// batch is the group of records one fsync makes durable.
type batch struct {
	segs   []segment // usually one; two when a snapshot began a log generation meanwhile
	n      int       // records
	idle   int       // Close calls in the batch that logged the last client off
	synced bool      // its fsync returned; guarded by Bank.mu
	done   chan struct{}
	err    error // set before done is closed
}

// segment is encoded records of one log generation.
type segment struct {
	gen uint64
	buf []byte
}

// Open opens (creating if needed) the bank stored in dir, takes an exclusive
// lock on it (a second Open of the same dir, in this or another process,
// fails with a *LockedError saying which process holds it), loads the
// snapshot and replays the log. A torn last record is truncated, keeping a
// copy, and reported through the logger; any other damage makes Open fail
// with a *CorruptError naming the file and offset, files that cannot hold
// every change (a snapshot missing) with an *IncompleteError, and a file in
// a format version this build does not read with a *VersionError.
func Open(dir string, opts ...Option) (*Bank, error) {
	o := options{
		logger:        slog.New(slog.DiscardHandler),
		retention:     DefaultSessionRetention,
		maxSessions:   DefaultMaxSessions,
		snapshotEvery: DefaultSnapshotEvery,
		openLog:       openOSLogFile,
		logSyncers:    logSyncers,
		syncDir:       syncDir,
		maxAccounts:   maxAccounts,
		clock:         time.Now,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.retention <= 0 {
		return nil, fmt.Errorf("bank: session retention must be positive, got %v", o.retention)
	}
	if o.maxSessions < 1 {
		return nil, fmt.Errorf("bank: the session limit must be at least 1, got %d", o.maxSessions)
	}
	if o.creditLimit < 0 {
		return nil, fmt.Errorf("bank: the default credit limit must not be negative, got %d", o.creditLimit)
	}
	if o.snapshotEvery < 0 {
		return nil, fmt.Errorf("bank: snapshot interval must not be negative, got %d", o.snapshotEvery)
	}
	if err := makeDir(dir, o.syncDir); err != nil {
		return nil, fmt.Errorf("bank: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	b := &Bank{
		dir:         dir,
		opts:        o,
		lock:        lock,
		snapDue:     o.snapshotEvery,
		wake:        make(chan struct{}, 1),
		snapReq:     make(chan struct{}, 1),
		stop:        make(chan struct{}),
		writerDone:  make(chan struct{}),
		snapperDone: make(chan struct{}),
	}
	if err := b.load(); err != nil {
		_ = lock.Close()
		return nil, err
	}
	go b.runWriter(&logWriter{dir: dir, open: o.openLog, syncDir: o.syncDir, syncers: o.logSyncers, gen: b.gen})
	go b.runSnapshotter()
	return b, nil
}

// makeDir creates dir and any missing parents, like os.MkdirAll, and makes
// their creation durable: it fsyncs the parent of each directory it created,
// outermost first. Otherwise a crash could lose the new directory, with
// the log records acknowledged in it.
func makeDir(dir string, syncDir func(string) error) error {
	var created []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || !errors.Is(err, fs.ErrNotExist) {
			break
		}
		created = append(created, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range slices.Backward(created) {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return fmt.Errorf("sync directory %s: %w", filepath.Dir(d), err)
		}
	}
	return nil
}

// load reads the snapshot and replays the log files that follow it.
func (b *Bank) load() error {
	began := time.Now()
	start := b.opts.clock()
	if err := os.Remove(filepath.Join(b.dir, snapshotTempName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("bank: %w", err)
	}
	st, meta, found, err := b.readSnapshot()
	if err != nil {
		return err
	}
	gens, err := logGenerations(b.dir)
	if err != nil {
		return err
	}
	var live []uint64
	for _, g := range gens {
		if g >= meta.nextGen {
			live = append(live, g)
			continue
		}
		// Included in the snapshot: left behind by a crash after the
		// snapshot was written.
		path := filepath.Join(b.dir, logFileName(g))
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("bank: remove log file included in the snapshot: %w", err)
		}
		b.opts.logger.Info("bank: removed a log file the snapshot includes", "file", path)
	}
	if err := b.checkComplete(found, meta, live); err != nil {
		return err
	}
	st.limit = b.opts.maxAccounts
	p := &replayer{s: &st, lsn: meta.lastLSN, horizon: b.opts.retention, v1Time: start.UnixNano()}
	b.gen = meta.nextGen
	for i, g := range live {
		path := filepath.Join(b.dir, logFileName(g))
		r, err := replayLog(path, p, i == len(live)-1)
		if err != nil {
			return err
		}
		b.logged += r.records
		b.gen = g
		if err := b.cutTail(path, r, start); err != nil {
			return err
		}
	}
	base := max(meta.time, p.maxTime)
	if base == 0 {
		base = start.UnixNano() // a new bank, or one written by a build without bank time
	}
	if st.legacy.len() > 0 && st.legacy.since == 0 {
		st.legacy.since = base
	}
	b.st, b.lsn = st, p.lsn
	b.clock = bankClock{now: b.opts.clock, start: start, base: base}
	b.opts.logger.Info("bank: opened", "dir", b.dir, "accounts", len(st.accounts), "sessions", st.sessions.len(), "records_replayed", b.logged, "duration", time.Since(began))
	return nil
}

// checkComplete refuses to start from files that cannot hold every change:
// a log that continues a snapshot which is missing, or a snapshot whose
// log file is missing. Every snapshot is written after the first log file
// of the generation it starts exists (FORMAT.md, "Snapshots and
// compaction"), so each case means a file was lost.
func (b *Bank) checkComplete(found bool, meta snapshotMeta, live []uint64) error {
	snap := filepath.Join(b.dir, snapshotFileName)
	switch {
	case !found && len(live) > 0 && live[0] > 1:
		return &IncompleteError{
			Missing: snap,
			Reason: fmt.Sprintf("the log starts at %s, which continues a snapshot: the changes before it were in the snapshot",
				filepath.Join(b.dir, logFileName(live[0]))),
			Remedy: "restore the snapshot from a backup; to start an empty bank instead, move every log.* file out of " + b.dir,
		}
	case found && meta.version == snapshotVersion && (len(live) == 0 || live[0] != meta.nextGen):
		return &IncompleteError{
			Missing: filepath.Join(b.dir, logFileName(meta.nextGen)),
			Reason:  fmt.Sprintf("%s says the log continues in it, so the changes after the snapshot cannot be complete", snap),
			Remedy:  "restore the log files from a backup; if you know that nothing was logged after the snapshot, create the missing file empty",
		}
	}
	return nil
}

// cutTail truncates what replaying the log file at path found after its
// last valid record, keeping a copy: a torn tail always, a damaged one only
// with WithRepairLogTail.
func (b *Bank) cutTail(path string, r replayed, now time.Time) error {
	switch r.tail {
	case tailTorn:
		copyPath, n, err := cutFile(path, r.valid, now, b.opts.syncDir)
		if err != nil {
			return fmt.Errorf("bank: truncate torn record: %w", err)
		}
		b.opts.logger.Warn("bank: truncated a torn record at the end of the log (a write cut short by a crash: not acknowledged, unless the disk damaged it)",
			"file", path, "offset", r.valid, "bytes", n, "copy", copyPath)
	case tailDamaged:
		if !b.opts.repairTail {
			fi, err := os.Stat(path)
			if err != nil {
				return fmt.Errorf("bank: %w", err)
			}
			return &CorruptError{File: path, Offset: r.valid, Err: r.tailErr, TailBytes: fi.Size() - r.valid}
		}
		copyPath, n, err := cutFile(path, r.valid, now, b.opts.syncDir)
		if err != nil {
			return fmt.Errorf("bank: cut the damaged end of %s: %w", path, err)
		}
		b.opts.logger.Warn("bank: cut damaged bytes off the end of the log, as asked (WithRepairLogTail): whatever they held is lost; a copy is kept",
			"file", path, "offset", r.valid, "bytes", n, "reason", r.tailErr.Error(), "copy", copyPath)
	}
	return nil
}

// readSnapshot reads the snapshot, if there is one (found).
func (b *Bank) readSnapshot() (st state, meta snapshotMeta, found bool, err error) {
	path := filepath.Join(b.dir, snapshotFileName)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return newState(), snapshotMeta{nextGen: 1}, false, nil
	}
	if err != nil {
		return state{}, snapshotMeta{}, false, fmt.Errorf("bank: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return state{}, snapshotMeta{}, false, fmt.Errorf("bank: %w", err)
	}
	st, meta, err = decodeSnapshot(f, fi.Size())
	var cerr *CorruptError
	switch {
	case errors.As(err, &cerr):
		cerr.File = path
		return state{}, snapshotMeta{}, false, cerr
	case err != nil:
		return state{}, snapshotMeta{}, false, fmt.Errorf("bank: snapshot %s: %w", path, err)
	}
	return st, meta, true, nil
}

// bankClock is the bank's time (FORMAT.md, "Time"): it goes on from the
// latest time the files record, at the pace of the wall clock, and never
// goes back. It stands still while the bank is down.
type bankClock struct {
	now   func() time.Time
	start time.Time // the wall clock when the bank opened
	base  int64     // the bank time then, in nanoseconds
	last  int64     // the latest time read
}

// read returns the bank time now. The bank's mutex guards it.
func (c *bankClock) read() int64 {
	t := c.base + int64(c.now().Sub(c.start))
	if t < c.last {
		t = c.last
	}
	c.last = t
	return t
}

func truncateFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// enterLocked registers a call in flight, or says why the bank takes none.
func (b *Bank) enterLocked() error {
	switch {
	case b.closed:
		return errShutDown
	case b.failed != nil:
		return stoppedError(b.failed)
	}
	b.calls.Add(1)
	return nil
}

// call applies req at most once per call id and returns its result, which
// may be a refusal (see result.err). The error is non-nil only when the
// bank did not decide: an invalid request, a call id of another form or
// reused for another request, a call whose outcome the bank cannot tell
// (ABORTED), a shut-down or stopped bank, or ctx ending. When ctx ends
// while the change is being made durable, the call returns at once, but the
// change was made: it becomes durable with its batch unless the log fails
// (which stops the bank), and a retry with the same call id returns the
// recorded result. A call without a call id (c.id == "") is applied without
// that protection.
func (b *Bank) call(ctx context.Context, c callRef, req request) (result, error) {
	if err := req.validate(); err != nil {
		return result{}, err
	}
	if len(c.id) > maxCallIDLen {
		return result{}, bankrpc.Errorf(bankrpc.InvalidArgument, "call id is %d bytes long; the bank records call ids of up to %d bytes", len(c.id), maxCallIDLen)
	}
	if err := ctx.Err(); err != nil {
		return result{}, bankrpc.FromContextError(err)
	}

	b.mu.Lock()
	if err := b.enterLocked(); err != nil {
		b.mu.Unlock()
		return result{}, err
	}
	defer b.calls.Done()
	now := b.clock.read()
	if c.id != "" {
		if e, ok := b.st.legacy.lookup(req.account, c.id, now, b.opts.retention); ok {
			return b.repeatLocked(ctx, c.id, e.matches(req), e.op, req.account, e.result())
		}
		if c.session == "" {
			b.mu.Unlock()
			return result{}, bankrpc.Errorf(bankrpc.InvalidArgument, "call id %q is not of the form <session>-<sequence number> (PROTOCOL.md 2.1), "+
				"under which the bank records calls: a call id of another form cannot be proven applied or not, so the bank does not apply it", c.id)
		}
		switch v, rep, mark := b.st.sessions.check(c, now, b.opts.retention, b.opts.maxSessions); v {
		case verdictRepeat:
			return b.repeatLocked(ctx, c.id, rep.matches(req), rep.op, rep.account, rep.result())
		case verdictForgotten:
			b.mu.Unlock()
			return result{}, forgottenError(c, mark)
		case verdictUnknownSession:
			b.mu.Unlock()
			return result{}, unknownSessionError(c, b.opts.retention)
		case verdictFull:
			b.mu.Unlock()
			return result{}, bankrpc.Errorf(bankrpc.ResourceExhausted, "call %q would start a client session, and the bank already remembers %d, its limit: nothing was applied; try again later", c.id, b.opts.maxSessions)
		}
	}
	online := b.st.online
	res := b.st.apply(req)
	b.st.remember(c, req, res, now, b.opts.retention)
	b.lsn++
	bt := b.appendLocked(&record{lsn: b.lsn, req: req, res: res, callID: c.id, fu: c.fu, time: now})
	if online > 0 && b.st.online == 0 {
		bt.idle++
	}
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	if err := b.await(ctx, bt); err != nil {
		return result{}, err
	}
	return res, nil
}

// repeatLocked answers a call whose call id is recorded, with the recorded
// result res once it is durable, which it is when everything logged so far
// is; or, when the call's request does not match the recorded one (op on
// account), refuses it. It unlocks the bank's mutex.
func (b *Bank) repeatLocked(ctx context.Context, id string, matches bool, recorded op, account int32, res result) (result, error) {
	bt := b.latestLocked()
	b.mu.Unlock()
	if !matches {
		return result{}, bankrpc.Errorf(bankrpc.InvalidArgument, "call id %q was already used on account %d for another request (%s)", id, account, recorded)
	}
	if err := b.await(ctx, bt); err != nil {
		return result{}, err
	}
	return res, nil
}

// balance returns the balance and the credit limit of account id once every
// change they may include is durable.
func (b *Bank) balance(ctx context.Context, id int32) (bal, limit int64, err error) {
	if id <= 0 {
		return 0, 0, bankrpc.Errorf(bankrpc.InvalidArgument, "account id must be positive, got %d", id)
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, bankrpc.FromContextError(err)
	}
	b.mu.Lock()
	if err := b.enterLocked(); err != nil {
		b.mu.Unlock()
		return 0, 0, err
	}
	defer b.calls.Done()
	i, ok := findAccount(b.st.accounts, id)
	if !ok {
		b.mu.Unlock()
		return 0, 0, result{code: bankrpc.NotFound}.err(request{account: id}, b.opts.maxAccounts)
	}
	a := b.st.accounts[i]
	bt := b.latestLocked()
	b.mu.Unlock()
	if err := b.await(ctx, bt); err != nil {
		return 0, 0, err
	}
	return a.balance, a.limit, nil
}

// appendLocked adds r to the pending batch and returns the batch.
func (b *Bank) appendLocked(r *record) *batch {
	bt := b.pending
	if bt == nil {
		bt = &batch{done: make(chan struct{})}
		b.pending = bt
	}
	if n := len(bt.segs); n == 0 || bt.segs[n-1].gen != b.gen {
		bt.segs = append(bt.segs, segment{gen: b.gen, buf: make([]byte, 0, 1024)})
	}
	s := &bt.segs[len(bt.segs)-1]
	s.buf = appendRecord(s.buf, r)
	bt.n++
	b.logged++
	return bt
}

// latestLocked returns the batch holding the newest record not yet durable,
// or nil when every record is durable. Batches complete in order, so once
// it is durable, so is every record logged before it.
func (b *Bank) latestLocked() *batch {
	if b.pending != nil {
		return b.pending
	}
	if n := len(b.inflight); n > 0 {
		return b.inflight[n-1]
	}
	return nil
}

// await waits until bt is durable.
func (b *Bank) await(ctx context.Context, bt *batch) error {
	if bt == nil {
		return nil
	}
	select {
	case <-bt.done:
		if bt.err != nil {
			return stoppedError(bt.err)
		}
		return nil
	case <-ctx.Done():
		return bankrpc.FromContextError(ctx.Err())
	}
}

// runWriter runs the log's writers (group commit): w.syncers goroutines
// that each take every pending record, write them with one write and make
// them durable with one fsync, then acknowledge their callers once every
// earlier batch is acknowledged too; until stop is closed and nothing is
// pending. While one batch is being fsynced the next is written and
// fsynced alongside: the fsyncs overlap, the acknowledgements keep the
// order of the log.
func (b *Bank) runWriter(w *logWriter) {
	defer close(b.writerDone)
	var wg sync.WaitGroup
	for range w.syncers {
		wg.Go(func() {
			last := 0
			for {
				select {
				case <-b.wake:
					b.gather(last)
					last = b.commit(w)
				case <-b.stop:
					for b.commit(w) > 0 {
					}
					return
				}
			}
		})
	}
	wg.Wait()
	if err := w.close(); err != nil {
		b.opts.logger.Error("bank: close log", "error", err)
	}
}

// gatherWait bounds how long a writer waits for a batch to fill: well
// under one fsync, which is what the wait saves.
const gatherWait = 50 * time.Microsecond

// gather waits, briefly, until the pending batch holds as many records as
// the writer's last one did. The callers a batch's fsync released come back
// with their next calls a few microseconds apart; without the wait the
// writer would take the first alone, and the rest would wait a whole fsync
// for it. A lone caller (last batch of one) never waits.
func (b *Bank) gather(want int) {
	deadline := time.Now().Add(gatherWait)
	for {
		b.mu.Lock()
		n := 0
		if b.pending != nil {
			n = b.pending.n
		}
		b.mu.Unlock()
		if n >= want || time.Now().After(deadline) {
			return
		}
		runtime.Gosched()
	}
}

// commit writes the pending batch, if there is one, makes it durable and
// acknowledges what it can (see complete); it returns the batch's number of
// records. The order in which commits take batches is the order of the
// log: taking one and writing it happen under the writer's mutex. After a
// failure it writes nothing more.
func (b *Bank) commit(w *logWriter) int {
	w.mu.Lock()
	b.mu.Lock()
	bt := b.pending
	if bt != nil {
		b.pending = nil
		b.inflight = append(b.inflight, bt)
	}
	err := b.failed
	b.mu.Unlock()
	if bt == nil {
		w.mu.Unlock()
		return 0
	}
	var h syncHandle
	if err == nil {
		h, err = w.writeLocked(bt)
	}
	w.mu.Unlock()
	if err == nil {
		err = h.sync()
	}
	b.complete(bt, err)
	return bt.n
}

// complete records that bt's fsync returned err, and acknowledges, in log
// order, every batch whose fsync returned and that no unacknowledged batch
// precedes. After a failure, no batch not yet acknowledged ever is: each
// gets the failure, even one whose own fsync succeeded, and the bank
// acknowledges nothing more.
func (b *Bank) complete(bt *batch, err error) {
	b.mu.Lock()
	bt.synced = true
	if err != nil && b.failed == nil {
		b.opts.logger.Error("bank: log write failed; the bank acknowledges no further changes", "error", err)
		b.failed = err
		if fn := b.opts.onFailure; fn != nil {
			go fn(err)
		}
	}
	n := 0
	for n < len(b.inflight) && b.inflight[n].synced {
		b.inflight[n].err = b.failed
		n++
	}
	done := slices.Clone(b.inflight[:n])
	b.inflight = slices.Delete(b.inflight, 0, n)
	due := b.snapshotDueLocked()
	b.mu.Unlock()
	idle := 0
	for _, d := range done {
		if d.err == nil {
			idle += d.idle
		}
		close(d.done)
	}
	if due {
		select {
		case b.snapReq <- struct{}{}:
		default:
		}
	}
	if fn := b.opts.onIdle; idle > 0 && fn != nil {
		go func(n int) {
			for range n {
				fn()
			}
		}(idle)
	}
}

func (b *Bank) snapshotDueLocked() bool {
	return b.failed == nil && b.opts.snapshotEvery > 0 && b.logged >= b.snapDue
}

// runSnapshotter writes the snapshots the writer asks for.
func (b *Bank) runSnapshotter() {
	defer close(b.snapperDone)
	for {
		select {
		case <-b.stop:
			return
		case <-b.snapReq:
			b.mu.Lock()
			due := b.snapshotDueLocked()
			b.mu.Unlock()
			if !due {
				continue
			}
			if err := b.snapshot(); err != nil {
				b.opts.logger.Error("bank: automatic snapshot failed; the log keeps every change", "error", err)
			}
		}
	}
}

// Snapshot writes a snapshot of the bank now and compacts the log: the log
// files it includes are deleted. It holds the bank's mutex while it encodes
// the accounts (30-50 ms per million), then writes the file while calls
// go on. It does nothing when nothing was logged since the last snapshot.
func (b *Bank) Snapshot() error {
	b.mu.Lock()
	err := b.enterLocked()
	b.mu.Unlock()
	if err != nil {
		return err
	}
	defer b.calls.Done()
	return b.snapshot()
}

// snapshot writes the snapshot: the state as of the last record logged, the
// records after it going to a new log generation. Writing it to a temporary
// file, fsyncing, renaming and fsyncing the directory makes it replace the
// old one atomically; only then are the log files it includes deleted. A
// crash at any point leaves a snapshot and log files that together hold
// every change.
func (b *Bank) snapshot() error {
	b.snapMu.Lock()
	defer b.snapMu.Unlock()
	start := time.Now()
	b.mu.Lock()
	if b.failed != nil {
		err := b.failed
		b.mu.Unlock()
		return stoppedError(err)
	}
	if b.logged == 0 {
		b.mu.Unlock()
		return nil
	}
	size := snapshotSize(&b.st)
	b.mu.Unlock()
	buf := snapshotBuffer(size + size/64 + 64<<10)

	// Create the file first: an attempt that cannot even begin costs
	// neither an encoding under the mutex nor a new log generation.
	tmp := filepath.Join(b.dir, snapshotTempName)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return b.snapshotFailed(err)
	}
	b.mu.Lock()
	if b.failed != nil {
		err := b.failed
		b.mu.Unlock()
		_ = f.Close()
		_ = os.Remove(tmp)
		return stoppedError(err)
	}
	now := b.clock.read()
	b.st.sessions.expire(now, b.opts.retention)
	b.st.legacy.expire(now, b.opts.retention)
	meta := snapshotMeta{lastLSN: b.lsn, nextGen: b.gen + 1, time: now}
	data := encodeSnapshot(buf, &b.st, meta)
	covered := b.logged
	accounts, sessions := len(b.st.accounts), b.st.sessions.len()
	b.gen = meta.nextGen
	b.mu.Unlock()

	// The log file of the new generation exists before the snapshot does,
	// and stays until a newer snapshot includes it: so a log file always
	// shows that there is a snapshot, and a snapshot which log file must
	// follow it (checkComplete).
	if err := b.createLogFile(meta.nextGen); err != nil {
		_ = f.Close()
		_ = os.Remove(tmp)
		return b.snapshotFailed(err)
	}
	if err := b.writeSnapshotFile(f, data); err != nil {
		return b.snapshotFailed(err)
	}
	b.mu.Lock()
	b.logged -= covered
	b.snapDue = b.opts.snapshotEvery
	b.mu.Unlock()
	gens, err := logGenerations(b.dir)
	if err != nil {
		return err
	}
	for _, g := range gens {
		if g < meta.nextGen {
			if err := os.Remove(filepath.Join(b.dir, logFileName(g))); err != nil {
				return fmt.Errorf("bank: compact the log: %w", err)
			}
		}
	}
	b.opts.logger.Info("bank: snapshot written", "accounts", accounts, "sessions", sessions, "records_included", covered, "bytes", len(data), "duration", time.Since(start))
	return nil
}

// snapshotBuffer returns a buffer of n bytes for a snapshot, its pages
// already touched: the encoding, which holds the bank's mutex, then neither
// allocates nor faults pages in.
func snapshotBuffer(n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 4096 {
		b[i] = 0
	}
	return b
}

// createLogFile creates the (empty) log file of generation gen, if the
// writer has not yet, and makes its directory entry durable.
func (b *Bank) createLogFile(gen uint64) error {
	f, err := os.OpenFile(filepath.Join(b.dir, logFileName(gen)), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return b.opts.syncDir(b.dir)
}

// snapshotFailed puts the next automatic snapshot off until snapshotEvery
// more records are logged, and returns err. A failure that persists (a full
// disk, a broken directory) then costs one attempt, one report and at most
// one new log generation per snapshotEvery records, not one per batch.
func (b *Bank) snapshotFailed(err error) error {
	b.mu.Lock()
	b.snapDue = b.logged + b.opts.snapshotEvery
	b.mu.Unlock()
	return fmt.Errorf("bank: write snapshot: %w", err)
}

// writeSnapshotFile writes data to f, the temporary file, makes it durable
// and renames it over the snapshot. On failure it removes the temporary file.
func (b *Bank) writeSnapshotFile(f *os.File, data []byte) (err error) {
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(b.dir, snapshotFileName)); err != nil {
		return err
	}
	return b.opts.syncDir(b.dir)
}

// Shutdown shuts the bank down cleanly: it stops taking calls (later ones
// fail with Unavailable "bank: shut down"), waits for the calls in flight,
// writes a snapshot, compacts the log and releases the directory. It is
// idempotent: later calls return the first one's result. After a log
// failure it writes no snapshot and returns that failure.
func (b *Bank) Shutdown() error {
	b.shutdownOnce.Do(func() { b.shutdownErr = b.shutdown() })
	return b.shutdownErr
}

func (b *Bank) shutdown() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.calls.Wait()
	close(b.stop)
	<-b.snapperDone
	<-b.writerDone

	b.mu.Lock()
	failed := b.failed
	b.mu.Unlock()
	var err error
	if failed != nil {
		err = fmt.Errorf("bank: shut down without a snapshot, because the log failed: %w", failed)
	} else {
		err = b.snapshot()
	}
	if cerr := b.lock.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("bank: release lock: %w", cerr)
	}
	return err
}

// Online returns the number of clients logged on right now: accounts opened
// and not closed since. It includes changes not yet durable.
func (b *Bank) Online() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st.online
}

// Accounts returns a copy of all accounts, sorted by id: a consistent view
// (no transfer is half done in it), including changes not yet durable.
func (b *Bank) Accounts() []Account {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Account, len(b.st.accounts))
	for i := range b.st.accounts {
		a := &b.st.accounts[i]
		out[i] = Account{ID: a.id, Balance: a.balance, Online: a.online, CreditLimit: a.limit}
	}
	return out
}
