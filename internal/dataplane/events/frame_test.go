package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func sample(seq uint64) Record {
	return Record{
		Seq: seq, Time: time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC), Kind: KindRequest, Tenant: "a",
		VMID: "vm", SessionID: "s", Decision: Deny, Reason: "secret_not_for_host", Host: "x.test",
		Port: 443, Method: "GET", Path: "/v1/", Status: 403, Secrets: []string{"api_key"},
	}
}

func frame(t testing.TB, r Record) []byte {
	t.Helper()
	b, err := appendFrame(nil, &r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFrameRoundTrip(t *testing.T) {
	want := sample(42)
	b := append(frame(t, want), frame(t, sample(43))...)
	rd := bytes.NewReader(b)
	var got Record
	n, _, err := readFrame(rd, nil, &got)
	if err != nil || n != len(frame(t, want)) {
		t.Fatalf("readFrame: %d, %v", n, err)
	}
	if !reflect.DeepEqual(jsonOf(t, got), jsonOf(t, want)) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, _, err := readFrame(rd, nil, &got); err != nil || got.Seq != 43 {
		t.Errorf("second frame: seq %d, %v", got.Seq, err)
	}
	if _, _, err := readFrame(rd, nil, &got); err != io.EOF {
		t.Errorf("at the end: %v, want io.EOF", err)
	}
}

// TestEveryBitFlipIsCaught: CRC-32C over the length and the payload catches any one flipped
// bit, wherever it is in the frame.
func TestEveryBitFlipIsCaught(t *testing.T) {
	good := frame(t, sample(42))
	for i := range len(good) * 8 {
		b := slices.Clone(good)
		b[i/8] ^= 1 << (i % 8)
		var r Record
		if _, _, err := readFrame(bytes.NewReader(b), nil, &r); err == nil {
			t.Fatalf("bit %d flipped: read as %+v", i, r)
		}
	}
}

func jsonOf(t testing.TB, r Record) string {
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func FuzzReadFrame(f *testing.F) {
	good := frame(f, sample(7))
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(good[:3])
	f.Add(append(slices.Clone(good), good...))
	f.Add([]byte{})
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Record
		n, _, err := readFrame(bytes.NewReader(data), nil, &r)
		if err != nil {
			switch {
			case n != 0:
				t.Fatalf("size %d with error %v", n, err)
			case errors.Is(err, io.EOF):
				if len(data) != 0 {
					t.Fatalf("io.EOF with %d bytes", len(data))
				}
			case !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, errCorrupt):
				t.Fatalf("an error of no known kind: %v", err)
			}
			return
		}
		if n > len(data) || n <= frameHeader || r.Seq == 0 {
			t.Fatalf("size %d of %d bytes, seq %d", n, len(data), r.Seq)
		}
		// What was read writes and reads back the same.
		var again Record
		if _, _, err := readFrame(bytes.NewReader(frame(t, r)), nil, &again); err != nil || jsonOf(t, again) != jsonOf(t, r) {
			t.Fatalf("round trip: %v\n%s\n%s", err, jsonOf(t, again), jsonOf(t, r))
		}
	})
}

func openTestDisk(t testing.TB, dir string, log *slog.Logger) (*diskRing, []Record, uint64) {
	t.Helper()
	d, loaded, last, err := openDisk(diskConfig{dir: dir, keep: 1000, keepBytes: 1 << 20, queue: 10, load: 1000,
		lost: prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}), log: log})
	if err != nil {
		t.Fatalf("openDisk: %v", err)
	}
	return d, loaded, last
}

// FuzzRingLoad: whatever a segment file holds, the ring opens, loads records in Seq order,
// and leaves the file so that the next open finds nothing to drop.
func FuzzRingLoad(f *testing.F) {
	good := append(frame(f, sample(7)), frame(f, sample(9))...)
	f.Add(good)
	f.Add(good[:len(good)-4])
	f.Add(append(frame(f, sample(9)), frame(f, sample(7))...)) // out of order
	f.Add([]byte("not a ring at all"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d.seg", 1)), data, 0o600); err != nil {
			t.Fatal(err)
		}
		d, loaded, last := openTestDisk(t, dir, quietLog)
		if err := d.close(); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(loaded); i++ {
			if loaded[i].Seq <= loaded[i-1].Seq {
				t.Fatalf("loaded out of order: %d after %d", loaded[i].Seq, loaded[i-1].Seq)
			}
		}
		if len(loaded) > 0 && last != loaded[len(loaded)-1].Seq {
			t.Fatalf("last %d, newest loaded %d", last, loaded[len(loaded)-1].Seq)
		}
		var logBuf bytes.Buffer
		d, again, _ := openTestDisk(t, dir, slog.New(slog.NewTextHandler(&logBuf, nil)))
		defer d.close()
		if logBuf.Len() > 0 || len(again) != len(loaded) {
			t.Fatalf("the second open: %d records (first %d), log %s", len(again), len(loaded), logBuf.String())
		}
	})
}

// TestSeqAboveTheRingWhenTheClockWentBack: a Seq is never given twice, even when the clock
// is behind the ring's newest record (it was set back, or the ring came from elsewhere).
func TestSeqAboveTheRingWhenTheClockWentBack(t *testing.T) {
	dir := t.TempDir()
	future := uint64(time.Now().Add(24*time.Hour).UnixMicro()) + 1e12
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d.seg", future)), frame(t, sample(future)), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := NewHub(HubConfig{RingDir: dir, RingKeep: 10, RingKeepBytes: 1 << 20, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	h.Record(sample(0))
	got := h.Query(Filter{Tenant: "a"})
	if len(got) != 2 || got[0].Seq != future || got[1].Seq != future+1 {
		t.Fatalf("seqs %v, want %d then %d", []uint64{got[0].Seq, got[len(got)-1].Seq}, future, future+1)
	}
}

// TestRecordCarriesNoSecretValues guards the event ring (and the audit file, and the events
// API), which store records as they are: a record names secrets, it never holds one. A new
// field must be added here deliberately, once it is known to carry no secret's value, no
// header value and no query string.
func TestRecordCarriesNoSecretValues(t *testing.T) {
	reviewed := []string{
		"Seq", "Time", "Kind", "Tenant", "VMID", "SessionID", "Decision", "WouldDeny", "Reason",
		"Message", "Rule", "Layer", "Mode", "Transport", "Host", "IP", "Port", "QType", "BytesUp",
		"BytesDown", "DurationMS", "CloseReason", "DialMS", "Method", "Path", "Status", "Secrets",
		"Via", // "fast_path" or empty: set by the gateway, never from a request
	}
	typ := reflect.TypeFor[Record]()
	var fields []string
	for i := range typ.NumField() {
		fields = append(fields, typ.Field(i).Name)
	}
	if !slices.Equal(fields, reviewed) {
		t.Fatalf("Record's fields are %v; reviewed for secret values are %v", fields, reviewed)
	}
	if f, _ := typ.FieldByName("Secrets"); f.Type != reflect.TypeFor[[]string]() {
		t.Errorf("Secrets is %v: names only, a []string", f.Type)
	}
}

// TestRingWriteFailureIsCountedAndRecovers drives the writer by hand (no goroutine) onto a
// file where every write fails (/dev/full): the records are counted as lost, the ring's
// accounting goes back, and the next write starts a segment that works.
func TestRingWriteFailureIsCountedAndRecovers(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip("no /dev/full")
	}
	dir := t.TempDir()
	lost := prometheus.NewCounter(prometheus.CounterOpts{Name: "lost"})
	d := &diskRing{dir: dir, keep: 100, keepBytes: 1 << 20, segRecords: 10, segBytes: 1 << 17, log: quietLog,
		dropLog: dropLog{path: dir, log: quietLog, lost: lost}}
	d.segs = []segment{{first: 1}}
	d.use(full)
	for seq := uint64(1); seq <= 3; seq++ {
		r := sample(seq)
		d.write(&r)
	}
	d.flush()
	var m dto.Metric
	if err := lost.Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 3 {
		t.Fatalf("%v records counted lost, want 3", got)
	}
	if d.records.Load() != 0 || d.bytes.Load() != 0 {
		t.Fatalf("the ring counts %d records, %d bytes after they were lost", d.records.Load(), d.bytes.Load())
	}
	r := sample(4)
	d.write(&r)
	d.flush()
	if d.f == full || d.records.Load() != 1 {
		t.Fatalf("no new segment after the failure: %d records", d.records.Load())
	}
	if err := d.f.Close(); err != nil {
		t.Fatal(err)
	}
	d2, loaded, _ := openTestDisk(t, dir, quietLog)
	defer d2.close()
	if len(loaded) != 1 || loaded[0].Seq != 4 {
		t.Fatalf("loaded %d records", len(loaded))
	}
}
