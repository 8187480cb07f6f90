package events

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/cpu"
)

// DefaultBuffer is how many records a Hub keeps for queries when HubConfig.Buffer is zero.
const DefaultBuffer = 10000

// DefaultSubscriberBuffer is how many live records a subscriber may fall behind by before it
// loses some, when HubConfig.SubscriberBuffer is zero.
const DefaultSubscriberBuffer = 1024

// DefaultAuditQueue is how many records may wait for the audit file's writer when
// HubConfig.AuditQueue is zero.
const DefaultAuditQueue = 8192

// ErrClosed is returned by Subscribe and Reopen once the Hub is closed.
var ErrClosed = errors.New("events: the hub is closed")

// HubConfig configures NewHub. The zero value works: a 10,000-record buffer, no audit file,
// metrics that are kept but not registered, and slog.Default for the few things worth a log
// line.
type HubConfig struct {
	// Buffer is how many of the newest records are kept for Query and Subscribe.
	Buffer int
	// SubscriberBuffer is how far a subscriber may fall behind before it loses records.
	SubscriberBuffer int
	// AuditPath, when set, is a file that gets every record as one JSON line. It is opened
	// O_APPEND|O_CREATE with mode 0600 (it names every host the sandboxes reached).
	AuditPath string
	// AuditQueue is how many records may wait for the audit writer before new ones are
	// dropped (and counted) rather than slow the data path down.
	AuditQueue int
	// RingDir, when set with RingKeep and RingKeepBytes above zero, is the directory of the
	// event ring (disk.go): every record is written there too, and a new Hub loads the newest
	// of them (at most Buffer), so that Query and Subscribe see them after a restart and Seq
	// goes on above them. A torn or corrupt tail found there is dropped with a log line.
	RingDir string
	// RingKeep and RingKeepBytes bound the ring in records and in bytes of its files.
	RingKeep      int
	RingKeepBytes int64
	// RingQueue is how many records may wait for the ring's writer before new ones are
	// dropped (and counted); DefaultAuditQueue when zero.
	RingQueue int
	// Registerer receives the metrics (see metrics.go); nil keeps them unregistered.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Hub is the Sink that the data path sends every decision to. It keeps the newest records in
// a ring buffer for Query, fans them out to subscribers, queues them for the event ring on
// disk and the audit file, and counts them in Prometheus metrics. Record never blocks on any
// consumer: a slow subscriber or a slow disk loses records, and the loss is counted.
//
// Record waits for no lock that other Records take (DESIGN §9): it reserves its Seq with one
// atomic add, stores the record in its own ring slot (whose lock only a reader of that slot
// shares), and counts it in Prometheus counters, which are atomic. The hand-out to
// subscribers and the audit queue, which must follow Seq order, is done by whichever Record
// finds nobody else doing it; the others leave it a mark and return (see fanout.go).
//
// Make one with NewHub; it is safe for concurrent use. Close it to flush the audit file.
type Hub struct {
	metrics *metrics
	audit   *auditLog // nil without an audit file
	disk    *diskRing // nil without an event ring
	// history is what the event ring held at start, oldest first, every Seq below first.
	// It is never written after NewHub; see past.
	history []Record
	subBuf  int
	first   uint64 // the Seq the first record got
	ring    []slot // the record with Seq s is in ring[s%len(ring)] while it is kept

	_   cpu.CacheLinePad // seq is written by every Record: alone on its cache line
	seq atomic.Uint64    // the newest Seq reserved
	_   cpu.CacheLinePad
	// stored is a Seq up to which every reserved record is in the ring (or was overwritten
	// there already). Readers move it forward (see newest); Record does not touch it.
	stored atomic.Uint64
	fan    fanOut // the hand-out to subscribers and the audit file (fanout.go)

	closeOnce sync.Once
	closeErr  error
}

var _ Sink = (*Hub)(nil)

// NewHub makes a Hub; it opens the audit file when there is one. Close it when done.
func NewHub(cfg HubConfig) (*Hub, error) {
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.SubscriberBuffer <= 0 {
		cfg.SubscriberBuffer = DefaultSubscriberBuffer
	}
	if cfg.AuditQueue <= 0 {
		cfg.AuditQueue = DefaultAuditQueue
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := newMetrics()
	h := &Hub{
		metrics: m,
		subBuf:  cfg.SubscriberBuffer,
		ring:    make([]slot, cfg.Buffer),
	}
	// Sequence numbers start at the start time in microseconds rather than at 1, so that a
	// client resuming a stream with a Seq from before a restart of egressd gets every record
	// of the new run instead of waiting for the counter to catch up with its old one. They stay
	// below 2^53 (exact in JavaScript) until the 2250s. Above the ring's newest, too, in case
	// the clock went back: a Seq is never given twice.
	seed := uint64(max(time.Now().UnixMicro(), 1))
	if cfg.RingDir != "" && cfg.RingKeep > 0 && cfg.RingKeepBytes > 0 {
		if cfg.RingQueue <= 0 {
			cfg.RingQueue = DefaultAuditQueue
		}
		d, loaded, last, err := openDisk(diskConfig{
			dir: cfg.RingDir, keep: cfg.RingKeep, keepBytes: cfg.RingKeepBytes, queue: cfg.RingQueue,
			load: cfg.Buffer, lost: m.droppedDisk, log: cfg.Logger,
		})
		if err != nil {
			return nil, err
		}
		h.disk, h.history = d, loaded
		seed = max(seed, last)
		m.ring.Store(d)
		cfg.Logger.Info("event ring", "dir", cfg.RingDir, "loaded", len(loaded), "records", d.records.Load(), "bytes", d.bytes.Load(),
			"keep", cfg.RingKeep, "keep_bytes", cfg.RingKeepBytes)
	}
	h.first = seed + 1
	h.seq.Store(seed)
	h.stored.Store(seed)
	h.fan.delivered = seed
	if h.disk != nil {
		h.fan.needed.Store(true) // the ring gets every record
	}
	if cfg.AuditPath != "" {
		var err error
		if h.audit, err = openAudit(cfg.AuditPath, cfg.AuditQueue, m.droppedAudit, cfg.Logger); err != nil {
			h.closeDisk()
			return nil, err
		}
		h.fan.needed.Store(true) // the audit file gets every record
	}
	if err := m.register(cfg.Registerer); err != nil {
		if h.audit != nil {
			_ = h.audit.close() // nothing was written
		}
		h.closeDisk()
		return nil, fmt.Errorf("events: registering metrics: %w", err)
	}
	return h, nil
}

// Record takes one record: it sets Seq, and Time when it is zero, and hands the record to
// every consumer without waiting for any of them.
func (h *Hub) Record(r Record) {
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	r.Seq = h.seq.Add(1)
	h.publish(&r)
}

// publish stores a record whose Seq is reserved and hands it on. Until it is stored, the
// records after it are held back from readers and consumers, which see records in Seq order.
func (h *Hub) publish(r *Record) {
	h.slot(r.Seq).store(r)
	// Read after the store: a subscriber that arrives meanwhile either is seen here, or
	// finds this record stored when it catches up (fanout.go).
	if h.fan.needed.Load() {
		h.fanOut(r)
	}
	h.metrics.observe(r)
}

// Reopen makes the audit writer close its file and open AuditPath again, for log rotation:
// call it on SIGHUP after logrotate has renamed the file. Records sent before the call go to
// the old file, later ones to the new one, and none is lost to the rotation. Without an audit
// file it does nothing.
func (h *Hub) Reopen() error {
	if h.audit == nil {
		return nil
	}
	// Every record sent before this call is in the audit queue once the barrier is passed;
	// the writer writes what is queued to the old file before it swaps.
	h.request(&request{kind: reqBarrier, upto: h.seq.Load()})
	return h.audit.reopen()
}

// Close ends every subscription, writes what is queued to the audit file and the event ring,
// syncs and closes them.
// Records sent after Close are still counted and kept for Query, but reach no file. Close is
// idempotent; it returns the audit file's and the event ring's errors, if any.
func (h *Hub) Close() error {
	h.closeOnce.Do(func() {
		// Once the request is carried out, every record sent before Close is queued and no
		// later one will be (the fan-out knows the hub is closed), so the writer can be told
		// that the queue is done.
		h.request(&request{kind: reqClose, upto: h.seq.Load()})
		if h.audit != nil {
			h.closeErr = h.audit.close()
		}
		if h.disk != nil {
			h.closeErr = errors.Join(h.closeErr, h.disk.close())
		}
	})
	return h.closeErr
}

// closeDisk closes the event ring of a Hub that NewHub gives up on.
func (h *Hub) closeDisk() {
	if h.disk != nil {
		_ = h.disk.close()
	}
}
