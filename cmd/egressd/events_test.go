package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/testkit/egressdtest"
)

func TestEventsKeepFlags(t *testing.T) {
	for _, tc := range []struct {
		name      string
		env       map[string]string
		args      []string
		keep      int
		keepBytes int64
		err       string
	}{
		{name: "defaults", keep: events.DefaultBuffer, keepBytes: 64 << 20},
		{name: "flags", args: []string{"--events-keep", "500", "--events-keep-bytes", "2MiB"}, keep: 500, keepBytes: 2 << 20},
		{name: "plain bytes", args: []string{"--events-keep-bytes", "3145728"}, keep: events.DefaultBuffer, keepBytes: 3 << 20},
		{name: "twins", env: map[string]string{"EGRESSD_EVENTS_KEEP": "7", "EGRESSD_EVENTS_KEEP_BYTES": "1GiB"}, keep: 7, keepBytes: 1 << 30},
		{name: "a flag beats its twin", env: map[string]string{"EGRESSD_EVENTS_KEEP": "7"}, args: []string{"--events-keep", "9"}, keep: 9, keepBytes: 64 << 20},
		{name: "off", args: []string{"--events-keep", "0", "--events-keep-bytes", "0"}, keep: 0, keepBytes: 0},
		{name: "negative", args: []string{"--events-keep", "-1"}, err: "--events-keep -1"},
		{name: "too many", args: []string{"--events-keep", "1000001"}, err: "1000000 records"},
		{name: "too few bytes", args: []string{"--events-keep-bytes", "100KiB"}, err: "at least 1MiB"},
		{name: "not a size", args: []string{"--events-keep-bytes", "12XB"}, err: "is not a size"},
		{name: "negative size", args: []string{"--events-keep-bytes", "-5MiB"}, err: "is not a size"},
		{name: "overflowing size", args: []string{"--events-keep-bytes", "99999999999TiB"}, err: "is not a size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg, err := parseFlags(append([]string{"--node-id", "n"}, tc.args...))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.eventsKeep != tc.keep || cfg.eventsKeepBytes != tc.keepBytes {
				t.Errorf("keep %d, %d bytes; want %d, %d", cfg.eventsKeep, cfg.eventsKeepBytes, tc.keep, tc.keepBytes)
			}
		})
	}
}

func TestHubConfigKeepsTheRingWhereDecisionsAreTaken(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		ring   bool
		buffer int
	}{
		{nil, true, events.DefaultBuffer},
		{[]string{"--role", "gateway", "--events-keep", "50000"}, true, 50000},
		{[]string{"--role", "api"}, false, 0},
		{[]string{"--events-keep", "0"}, false, 0},
		{[]string{"--events-keep-bytes", "0"}, false, 0},
	} {
		cfg, err := parseFlags(append([]string{"--node-id", "n", "--data-dir", "/d"}, tc.args...))
		if err != nil {
			t.Fatal(err)
		}
		hc := hubConfig(cfg, prometheus.NewRegistry(), nil)
		if (hc.RingDir != "") != tc.ring || tc.ring && (hc.RingDir != "/d/events" || hc.Buffer != tc.buffer || hc.RingKeep != cfg.eventsKeep) {
			t.Errorf("%v: ring %q, buffer %d, keep %d", tc.args, hc.RingDir, hc.Buffer, hc.RingKeep)
		}
	}
}

// denyThrough asks egressd's proxy, as session s, for https://host/, which no policy allows.
func denyThrough(t *testing.T, s *client.Session, host string) {
	t.Helper()
	u, err := url.Parse(s.ProxyURL)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u)}}
	if resp, err := hc.Get("https://" + host + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("%s was reached", host)
	}
}

// waitEvents polls the events API until it lists want records of the VM (10 s at most).
func waitEvents(t *testing.T, c *client.Client, vm string, want int) []client.Event {
	t.Helper()
	var list []client.Event
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var err error
		if list, err = c.Events(context.Background(), client.EventsFilter{VMID: vm, Limit: 1000}); err != nil {
			t.Fatal(err)
		}
		if len(list) >= want {
			return list
		}
	}
	t.Fatalf("%d events of %s, want %d", len(list), vm, want)
	return nil
}

func eventIDs(list []client.Event) []string {
	out := make([]string, len(list))
	for i, e := range list {
		out[i] = strconv.FormatUint(e.Seq, 10) + " " + e.Host
	}
	return out
}

// TestEventsKeptAcrossRestarts: the events API lists the same records, same ids, after a
// graceful restart and after a crash, and a follower resuming with Last-Event-ID gets the
// rest of them, then new ones with higher ids.
func TestEventsKeptAcrossRestarts(t *testing.T) {
	in := egressdtest.Start(t, "--events-keep", "1000")
	c, err := client.New(in.URL, in.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.CreateVM(ctx, client.CreateVMRequest{VMID: "ring-vm"}); err != nil {
		t.Fatal(err)
	}
	s, err := c.CreateSession(ctx, client.CreateSessionRequest{VMID: "ring-vm"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		denyThrough(t, s, fmt.Sprintf("d%d.ring.test", i))
	}
	before := waitEvents(t, c, "ring-vm", 5)

	in.Restart()
	after := waitEvents(t, c, "ring-vm", len(before))
	if !slices.Equal(eventIDs(after), eventIDs(before)) {
		t.Fatalf("after a restart:\n%v\nbefore:\n%v", eventIDs(after), eventIDs(before))
	}

	// A crash: what the API showed was on its way to disk; wait until it is there.
	denyThrough(t, s, "crash.ring.test")
	before = waitEvents(t, c, "ring-vm", len(before)+1)
	ring := filepath.Join(in.DataDir, "events")
	for deadline := time.Now().Add(10 * time.Second); !ringHas(t, ring, "crash.ring.test"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the record never reached the ring's files")
		}
	}
	in.Kill()
	in.Restart()
	after = waitEvents(t, c, "ring-vm", len(before))
	if !slices.Equal(eventIDs(after), eventIDs(before)) {
		t.Fatalf("after a crash:\n%v\nbefore:\n%v", eventIDs(after), eventIDs(before))
	}

	// Resuming after the third record gets the rest, then a new one.
	req, _ := http.NewRequest(http.MethodGet, in.URL+"/v1/egress/events?follow=true&vm_id=ring-vm", nil)
	req.Header.Set("Authorization", "Bearer "+in.AdminKey)
	req.Header.Set("Last-Event-ID", strconv.FormatUint(before[2].Seq, 10))
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(sctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var ids []uint64
	next := func() uint64 {
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
				id, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return id
			}
		}
		t.Fatalf("the stream ended: %v", sc.Err())
		return 0
	}
	for range before[3:] {
		ids = append(ids, next())
	}
	for i, e := range before[3:] {
		if ids[i] != e.Seq {
			t.Fatalf("resumed stream ids %v, want those of %v", ids, eventIDs(before[3:]))
		}
	}
	denyThrough(t, s, "new.ring.test")
	if id := next(); id <= before[len(before)-1].Seq {
		t.Fatalf("a new record's id %d is not above %d, the newest before the restart", id, before[len(before)-1].Seq)
	}
}

// ringHas reports whether a segment file of the ring in dir holds s.
func ringHas(t *testing.T, dir, s string) bool {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(s)) {
			return true
		}
	}
	return false
}
