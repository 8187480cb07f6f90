package events_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/internal/dataplane/events"
)

// readAudit decodes every line of an audit file strictly: each must be one valid record.
func readAudit(t *testing.T, path string) []events.Record {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Record
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		var r events.Record
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("%s line %d is not a record: %v\n%s", path, n, err, sc.Bytes())
		}
		out = append(out, r)
	}
	return out
}

func TestAuditFileHasEveryRecordAfterClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	h := newHub(t, events.HubConfig{AuditPath: path, AuditQueue: 100000})
	const n = 5000
	for i := 0; i < n; i++ {
		r := deny("a", "s", "x.test")
		if i%2 == 1 {
			r.Tenant = "b" // the audit file is the operator's: every tenant is in it
		}
		h.Record(r)
	}
	want := h.Query(events.Filter{Tenant: "a", Limit: 1, AfterSeq: 1})
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("audit file mode %v, want 0600", perm)
	}
	got := readAudit(t, path)
	if len(got) != n {
		t.Fatalf("%d lines, want %d", len(got), n)
	}
	for i := 1; i < n; i++ {
		if got[i].Seq != got[i-1].Seq+1 {
			t.Fatalf("line %d has seq %d after %d: the file is in seq order", i+1, got[i].Seq, got[i-1].Seq)
		}
	}
	first := got[0]
	if first.Seq != want[0].Seq || !first.Time.Equal(want[0].Time) || first.Host != "x.test" || first.Reason != want[0].Reason {
		t.Errorf("first line %+v, want %+v", first, want[0])
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestAuditFileAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	for run := 0; run < 2; run++ {
		h := newHub(t, events.HubConfig{AuditPath: path})
		h.Record(deny("a", "s", "x.test"))
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got := readAudit(t, path); len(got) != 2 {
		t.Errorf("%d lines after two runs, want 2: the file is appended to", len(got))
	}
}

func TestAuditReopenForLogrotate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	h := newHub(t, events.HubConfig{AuditPath: path})
	h.Record(deny("a", "s", "before.test"))
	if err := os.Rename(path, path+".1"); err != nil { // what logrotate does
		t.Fatal(err)
	}
	if err := h.Reopen(); err != nil {
		t.Fatal(err)
	}
	h.Record(deny("a", "s", "after.test"))
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readAudit(t, path+".1"); len(got) != 1 || got[0].Host != "before.test" {
		t.Errorf("rotated file: %+v", got)
	}
	if got := readAudit(t, path); len(got) != 1 || got[0].Host != "after.test" {
		t.Errorf("new file: %+v", got)
	}
	if err := h.Reopen(); err != events.ErrClosed {
		t.Errorf("Reopen after Close: %v, want ErrClosed", err)
	}
}

func TestAuditPathErrors(t *testing.T) {
	_, err := events.NewHub(events.HubConfig{AuditPath: filepath.Join(t.TempDir(), "no", "such", "dir", "a.jsonl"), Logger: quiet})
	if err == nil {
		t.Fatal("NewHub with an audit path in a missing directory succeeded")
	}
}

// TestStuckAuditFileDoesNotBlock writes the audit log into a pipe that nobody reads, as a hung
// disk would behave: Record must go on, dropping and counting what the queue cannot hold.
func TestStuckAuditFileDoesNotBlock(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs mkfifo and a pipe that fills (Linux)")
	}
	path := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	// Opened for reading first (without blocking), so that the Hub's open does not wait.
	rd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	reg := prometheus.NewRegistry()
	h := newHub(t, events.HubConfig{AuditPath: path, AuditQueue: 16, Registerer: reg})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// ~2 MB of lines: more than the pipe (64 KiB), the writer's buffer and the queue hold.
		recordN(h, "a", "s", 10000)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Record blocked on a stuck audit file")
	}
	dropped := gather(t, reg, events.MetricEventsDropped, "sink", events.SinkAudit)
	if dropped == 0 {
		t.Error("no audit drops counted")
	}
	// Drain the pipe so that Close can finish; what was queued gets written.
	go io.Copy(io.Discard, rd)
	if err := h.Close(); err != nil {
		t.Logf("Close: %v (a FIFO cannot be synced)", err)
	}
}

// TestAuditWriteErrorsAreCounted writes to /dev/full, where every write fails with ENOSPC.
func TestAuditWriteErrorsAreCounted(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	reg := prometheus.NewRegistry()
	h := newHub(t, events.HubConfig{AuditPath: "/dev/full", Registerer: reg})
	recordN(h, "a", "s", 10)
	if err := h.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
	if got := gather(t, reg, events.MetricEventsDropped, "sink", events.SinkAudit); got != 10 {
		t.Errorf("audit drops %v, want 10", got)
	}
}
