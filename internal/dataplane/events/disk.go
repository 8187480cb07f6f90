package events

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The event ring keeps the newest records in a directory so that a restart does not forget
// them: segment files of frames (frame.go), each named by the Seq of its first record in 20
// digits (so that names sort as Seqs do) with the suffix ".seg". The last one is appended
// to; once it is full a new one is started, and whole segments are removed, oldest first,
// as a new record would take the ring over either bound. A bound is split among
// ringSegments segments, so that the ring holds between (ringSegments-1)/ringSegments of a
// bound and all of it once it has filled.
//
// Like the audit log, the ring is written by a goroutine of its own from a bounded queue:
// a slow or full disk loses records (counted) rather than slow the data path down.

const (
	ringSegments = 8
	segSuffix    = ".seg"
	// syncEvery is how often written records are fsynced: a crash of the process loses
	// nothing written, a crash of the machine at most this much.
	syncEvery = time.Second
)

type diskConfig struct {
	dir       string
	keep      int   // records
	keepBytes int64 // bytes of frames
	queue     int
	load      int // how many of the newest records openDisk returns
	lost      prometheus.Counter
	log       *slog.Logger
}

type segment struct {
	first   uint64 // the Seq it is named by
	records int
	bytes   int64
	sealed  bool // its tail was dropped or it was written by an older run's bounds: append to a new one
}

func (s *segment) path(dir string) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", s.first, segSuffix))
}

type diskRing struct {
	dir                  string
	keep                 int
	keepBytes            int64
	segRecords, segBytes int64
	queue                chan Record
	done                 chan struct{}
	log                  *slog.Logger
	dropLog

	// What the ring holds, for the metrics; written by the writer goroutine.
	records, bytes atomic.Int64

	// Owned by the writer goroutine (by openDisk before it starts).
	lock         *os.File
	segs         []segment // oldest first; the last is the one written to, when f is open
	f            *os.File
	w            *bufio.Writer
	buf          []byte
	flushed      int64 // bytes of the last segment known to be in its file
	pending      int   // records in w
	pendingBytes int64
	dirty        bool // flushed but not synced
	err          error
}

// openDisk opens (creating it if need be) the ring in c.dir, drops a torn or corrupt tail
// of any segment with a log line, removes what is beyond the bounds, and starts the writer.
// It returns the newest c.load records and the newest Seq the ring holds (0 when empty).
func openDisk(c diskConfig) (*diskRing, []Record, uint64, error) {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return nil, nil, 0, fmt.Errorf("events: event ring: %w", err)
	}
	lock, err := lockDir(c.dir)
	if err != nil {
		return nil, nil, 0, err
	}
	d := &diskRing{
		dir: c.dir, keep: c.keep, keepBytes: c.keepBytes,
		segRecords: max(int64(c.keep)/ringSegments, 1),
		segBytes:   max(c.keepBytes/ringSegments, 1),
		queue:      make(chan Record, c.queue),
		done:       make(chan struct{}),
		log:        c.log,
		dropLog:    dropLog{path: c.dir, log: c.log, lost: c.lost},
		lock:       lock,
	}
	loaded, last, err := d.load(c.load)
	if err != nil {
		lock.Close()
		return nil, nil, 0, err
	}
	go d.run()
	return d, loaded, last, nil
}

// load reads every segment, oldest first, and opens the last one for appending if it has room.
func (d *diskRing) load(want int) ([]Record, uint64, error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, 0, fmt.Errorf("events: event ring: %w", err)
	}
	var perSeg [][]Record
	var last uint64
	for _, e := range entries { // ReadDir sorts by name: by Seq
		if strings.HasSuffix(e.Name(), tmpSuffix) { // a rewrite (fit) that a crash cut short
			_ = os.Remove(filepath.Join(d.dir, e.Name()))
			continue
		}
		name, ok := strings.CutSuffix(e.Name(), segSuffix)
		first, err := strconv.ParseUint(name, 10, 64)
		if !ok || len(name) != 20 || err != nil || !e.Type().IsRegular() {
			continue
		}
		s := segment{first: first}
		recs, err := d.readSegment(&s, last)
		if err != nil {
			return nil, 0, err
		}
		if s.records == 0 {
			d.remove(&s)
			continue
		}
		last = recs[len(recs)-1].Seq
		d.segs = append(d.segs, s)
		perSeg = append(perSeg, recs)
	}
	if perSeg, err = d.fit(perSeg); err != nil {
		return nil, 0, err
	}
	var loaded []Record
	for i := len(perSeg) - 1; i >= 0 && len(loaded) < want; i-- {
		recs := perSeg[i]
		loaded = append(recs[max(0, len(recs)-(want-len(loaded))):], loaded...)
	}
	d.account()
	if n := len(d.segs); n > 0 {
		s := &d.segs[n-1]
		if !s.sealed && int64(s.records) < d.segRecords && s.bytes < d.segBytes {
			f, err := os.OpenFile(s.path(d.dir), os.O_WRONLY|os.O_APPEND, 0o600)
			if err != nil {
				return nil, 0, fmt.Errorf("events: event ring: %w", err)
			}
			d.use(f)
			d.flushed = s.bytes
		}
	}
	return loaded, last, nil
}

// readSegment reads s's records, which must all come after Seq after. A torn or corrupt
// tail is cut off the file (with a log line) and seals s, since what follows in it could
// not be read either.
func (d *diskRing) readSegment(s *segment, after uint64) ([]Record, error) {
	path := s.path(d.dir)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("events: event ring: %w", err)
	}
	defer f.Close()
	rd := bufio.NewReaderSize(f, 64<<10)
	var recs []Record
	var buf []byte
	for {
		var r Record
		var n int
		n, buf, err = readFrame(rd, buf, &r)
		if err == nil && r.Seq <= after {
			err = fmt.Errorf("%w: seq %d after %d", errCorrupt, r.Seq, after)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return recs, nil
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, errCorrupt) {
				return nil, fmt.Errorf("events: reading the event ring: %w", err)
			}
			d.log.Warn("events: dropping a torn or corrupt tail of the event ring", "file", path, "offset", s.bytes, "err", err, "kept", s.records)
			s.sealed = true
			if err := os.Truncate(path, s.bytes); err != nil {
				d.log.Warn("events: cutting the event ring's corrupt tail", "file", path, "err", err)
			}
			return recs, nil
		}
		recs = append(recs, r)
		after = r.Seq
		s.records++
		s.bytes += int64(n)
	}
}

func (d *diskRing) total() (n int64) {
	for _, s := range d.segs {
		n += int64(s.records)
	}
	return n
}

func (d *diskRing) totalBytes() (n int64) {
	for _, s := range d.segs {
		n += s.bytes
	}
	return n
}

func (d *diskRing) account() {
	d.records.Store(d.total())
	d.bytes.Store(d.totalBytes())
}

func (d *diskRing) remove(s *segment) {
	if err := os.Remove(s.path(d.dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("events: removing a segment of the event ring", "err", err)
	}
}

func (d *diskRing) use(f *os.File) {
	d.f = f
	if d.w == nil {
		d.w = bufio.NewWriterSize(f, 64<<10)
	} else {
		d.w.Reset(f)
	}
}

func (d *diskRing) run() {
	defer close(d.done)
	tick := time.NewTicker(syncEvery)
	defer tick.Stop()
	for {
		select {
		case r, ok := <-d.queue:
			if !ok {
				d.err = d.finish()
				return
			}
			d.write(&r)
			if len(d.queue) == 0 {
				d.flush()
			}
		case <-tick.C:
			if d.dirty {
				d.sync()
			}
		}
	}
}

// write appends r, starting a new segment when the last is full and removing the oldest
// ones as far as the bounds need.
func (d *diskRing) write(r *Record) {
	frame, err := appendFrame(d.buf[:0], r)
	d.buf = frame
	size := int64(len(frame))
	if err != nil || size > d.segBytes {
		d.dropped(1, "a record is too large for the event ring's segments; it is not kept", "size", size, "err", err)
		return
	}
	if d.f == nil || int64(d.segs[len(d.segs)-1].records) >= d.segRecords || d.segs[len(d.segs)-1].bytes+size > d.segBytes {
		if err := d.rotate(r.Seq); err != nil {
			d.dropped(1, "starting a segment of the event ring failed; records are being dropped", "err", err)
			return
		}
	}
	// A segment's bounds are within the ring's, so this never reaches the last segment.
	for len(d.segs) > 1 && (d.total()+1 > int64(d.keep) || d.totalBytes()+size > d.keepBytes) {
		d.remove(&d.segs[0])
		d.segs = d.segs[1:]
	}
	cur := &d.segs[len(d.segs)-1]
	cur.records++
	cur.bytes += size
	d.pending++
	d.pendingBytes += size
	if _, err := d.w.Write(frame); err != nil {
		d.fail(err)
	}
	d.account()
}

// flush writes the buffered records to the file.
func (d *diskRing) flush() {
	if d.pending == 0 {
		return
	}
	if err := d.w.Flush(); err != nil {
		d.fail(err)
		return
	}
	d.flushed += d.pendingBytes
	d.pending, d.pendingBytes = 0, 0
	d.dirty = true
}

// fail drops the buffered records after a failed write, and cuts the file back to what was
// written before them, so that a half-written frame does not end the segment for the reader.
func (d *diskRing) fail(err error) {
	lost := d.pending
	cur := &d.segs[len(d.segs)-1]
	cur.records -= d.pending
	cur.bytes -= d.pendingBytes
	d.pending, d.pendingBytes = 0, 0
	d.w.Reset(d.f)
	if terr := d.f.Truncate(d.flushed); terr != nil {
		// The file may end in a torn frame now: write on in a new segment.
		cur.sealed = true
		_ = d.f.Close()
		d.f = nil
	}
	d.account()
	d.dropped(lost, "writing the event ring failed; records are being dropped", "err", err)
}

func (d *diskRing) sync() {
	if d.f == nil {
		return
	}
	if err := d.f.Sync(); err != nil {
		d.log.Warn("events: syncing the event ring", "err", err)
	}
	d.dirty = false
}

// rotate closes the segment being written and starts one named first.
func (d *diskRing) rotate(first uint64) error {
	if d.f != nil {
		d.flush()
		d.sync()
		if err := d.f.Close(); err != nil {
			d.log.Warn("events: closing a segment of the event ring", "err", err)
		}
		d.f = nil
	}
	s := segment{first: first}
	f, err := os.OpenFile(s.path(d.dir), os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("events: event ring: %w", err)
	}
	syncDir(d.dir)
	d.use(f)
	d.flushed = 0
	d.segs = append(d.segs, s)
	return nil
}

// syncDir makes a new segment's name durable; failing that only risks the segment.
func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		_ = f.Sync()
		_ = f.Close()
	}
}

func (d *diskRing) finish() error {
	var err error
	if d.f != nil {
		d.flush()
		err = errors.Join(d.f.Sync(), d.f.Close())
	}
	err = errors.Join(err, d.lock.Close())
	if err != nil {
		return fmt.Errorf("events: closing the event ring: %w", err)
	}
	return nil
}

// close tells the writer that no more records come, and waits for it to write them all.
func (d *diskRing) close() error {
	close(d.queue)
	<-d.done
	return d.err
}
