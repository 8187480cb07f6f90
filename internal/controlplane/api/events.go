package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/events"
)

// EventSource is where the events endpoint reads decision records: *events.Hub.
type EventSource interface {
	Query(events.Filter) []events.Record
	Subscribe(ctx context.Context, f events.Filter) (*events.Subscription, error)
}

const (
	// heartbeatEvery is how often an idle stream gets a comment line.
	heartbeatEvery = 15 * time.Second
	// streamWriteWait is how long a follower may take to accept one event before the stream
	// is ended: a client that stops reading must not pin a handler forever.
	streamWriteWait = 30 * time.Second
	// maxStreamsPerTenant bounds the open follow=true streams of one tenant: each holds a
	// subscriber's buffer, and the rate limit bounds only how fast they are opened.
	maxStreamsPerTenant = 32
)

// eventList is the answer of GET /v1/egress/events without follow.
type eventList struct {
	Events []events.Record `json:"events"`
}

// eventStreams is the state of the endpoint: its source and the open streams.
type eventStreams struct {
	src       EventSource
	heartbeat time.Duration
	writeWait time.Duration

	done      chan struct{} // closed by CloseStreams
	closeOnce sync.Once

	mu   sync.Mutex
	open map[string]int // tenant -> open streams
}

func newEventStreams(src EventSource) *eventStreams {
	return &eventStreams{
		src:       src,
		heartbeat: heartbeatEvery,
		writeWait: streamWriteWait,
		done:      make(chan struct{}),
		open:      make(map[string]int),
	}
}

// CloseStreams ends every follow=true stream of the events endpoint, and answers new ones
// with 503. http.Server.Shutdown waits for requests to end, which a stream never does by
// itself: register this with RegisterOnShutdown.
func (s *Server) CloseStreams() {
	s.events.closeOnce.Do(func() { close(s.events.done) })
}

// listEvents answers GET /v1/egress/events: the decision records of the caller's tenant, as
// a list or, with follow=true, as a stream of Server-Sent Events.
//
// Filters: vm_id, session_id, decision (allow or deny), kind (connect, request, dns, close),
// since (an RFC 3339 time, or a seq: records after it) and limit (0 to 10000, default 100).
// Every other parameter is a 400 that names it, as an unknown JSON field is: a misspelt
// filter must not silently show everything. The tenant is the API key's, never a parameter,
// so that filtering on another tenant's session_id finds nothing.
//
// A list holds, oldest first, the first limit records after since, or without since the
// newest limit records. A stream starts with the buffered records that match (the newest
// limit of them; after since, every buffered one unless limit is given; after Last-Event-ID
// every buffered one, whatever limit says), then sends each new one as it comes:
//
//	id: <seq>
//	event: decision
//	data: <the record as JSON>
//
// with a comment line every 15 s so that proxies keep the connection and either side notices
// a dead one. A reconnecting EventSource sends Last-Event-ID and gets what it missed, as far as
// the buffer still holds it. A follower that reads too slowly loses records rather than hold
// the gateway up: the loss shows as a gap in seq and as a comment.
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request, k store.APIKey) error {
	if s.events.src == nil {
		return errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "", "events are not enabled")
	}
	q, err := parseEventsQuery(r)
	if err != nil {
		return err
	}
	q.filter.Tenant = k.Tenant
	if !q.follow {
		list := s.events.src.Query(q.filter)
		if list == nil {
			list = []events.Record{}
		}
		writeJSON(w, http.StatusOK, eventList{Events: list})
		return nil
	}
	return s.streamEvents(w, r, q.filter)
}

// eventsQuery is a parsed request.
type eventsQuery struct {
	filter events.Filter
	follow bool
}

// eventParams are the query parameters the endpoint knows.
var eventParams = []string{"vm_id", "session_id", "decision", "kind", "since", "limit", "follow"}

func parseEventsQuery(r *http.Request) (eventsQuery, error) {
	var q eventsQuery
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return q, badRequest("", "malformed query string: %v", err)
	}
	for _, name := range slices.Sorted(maps.Keys(vals)) {
		if !slices.Contains(eventParams, name) {
			return q, badRequest(name, "unknown parameter %q; the parameters are %s", name, strings.Join(eventParams, ", "))
		}
		if n := len(vals[name]); n > 1 {
			return q, badRequest(name, "%s is given %d times; give it once", name, n)
		}
	}
	f := &q.filter
	f.VMID = vals.Get("vm_id")
	f.SessionID = vals.Get("session_id")
	switch f.Decision = vals.Get("decision"); f.Decision {
	case "", events.Allow, events.Deny:
	default:
		return q, badRequest("decision", "decision must be allow or deny, not %q", f.Decision)
	}
	if f.Kind = vals.Get("kind"); f.Kind != "" && !slices.Contains(events.Kinds, f.Kind) {
		return q, badRequest("kind", "kind must be one of %s, not %q", strings.Join(events.Kinds, ", "), f.Kind)
	}
	if s := vals.Get("since"); s != "" {
		if f.Since, f.AfterSeq, err = parseSince(s); err != nil {
			return q, err
		}
	}
	if s := vals.Get("follow"); s != "" {
		if q.follow, err = strconv.ParseBool(s); err != nil {
			return q, badRequest("follow", "follow must be true or false, not %q", s)
		}
	}
	if s := vals.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > events.MaxLimit {
			return q, badRequest("limit", "limit must be a whole number from 0 to %d, not %q", events.MaxLimit, s)
		}
		f.Limit = n
		if n == 0 {
			f.Limit = -1 // none: a stream then sends only new records
		}
	} else if q.follow && (f.AfterSeq > 0 || !f.Since.IsZero()) {
		// A stream from a start point gets everything after it that is still buffered.
		f.Limit = events.MaxLimit
	}
	// An EventSource that reconnects sends the id of the last event it got, with the URL it
	// first used: resume right after that event, with everything still buffered since, whatever
	// since and limit said for the first connection. (A list has no use for the header.)
	if s := r.Header.Get("Last-Event-ID"); s != "" && q.follow {
		id, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return q, badRequest("Last-Event-ID", "Last-Event-ID must be the id of an event of this stream (a seq), not %q", s)
		}
		f.AfterSeq = max(f.AfterSeq, id)
		f.Limit = events.MaxLimit
	}
	return q, nil
}

// parseSince reads since: a seq (records after it) or an RFC 3339 time (records at or after it).
func parseSince(s string) (time.Time, uint64, error) {
	if seq, err := strconv.ParseUint(s, 10, 64); err == nil {
		return time.Time{}, seq, nil
	}
	// The '+' of a time zone offset arrives as a space when the client did not escape it; an
	// RFC 3339 time has no space, so putting it back is safe.
	t, err := time.Parse(time.RFC3339Nano, strings.Replace(s, " ", "+", 1))
	if err != nil {
		return time.Time{}, 0, badRequest("since", "since must be an RFC 3339 time such as 2025-01-02T15:04:05Z, or the seq of a record, not %q", s)
	}
	return t, 0, nil
}

// acquire counts a new stream of tenant, unless it has too many open.
func (e *eventStreams) acquire(tenant string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.open[tenant] >= maxStreamsPerTenant {
		return false
	}
	e.open[tenant]++
	return true
}

func (e *eventStreams) release(tenant string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.open[tenant]--; e.open[tenant] <= 0 {
		delete(e.open, tenant)
	}
}

// streamEvents serves follow=true. Once the 200 is sent an error can no longer be answered,
// so a failed write just ends the stream: the client is gone or not reading.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, f events.Filter) error {
	e := s.events
	select {
	case <-e.done:
		return errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "", "egressd is shutting down; reconnect later")
	default:
	}
	if !e.acquire(f.Tenant) {
		return errorf(http.StatusTooManyRequests, client.CodeRateLimited, "",
			"this tenant has %d event streams open already; close one first", maxStreamsPerTenant)
	}
	defer e.release(f.Tenant)

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel() // ends the subscription
	sub, err := e.src.Subscribe(ctx, f)
	if errors.Is(err, events.ErrClosed) {
		return errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "", "egressd is shutting down; reconnect later")
	} else if err != nil {
		return fmt.Errorf("subscribing to events: %w", err)
	}

	// The server's ReadTimeout does not cut a stream (net/http lifts the read deadline once
	// the request is read), and a WriteTimeout would not either: each write sets its own.
	rc := http.NewResponseController(w)
	// Clear the last write's deadline for whatever the connection serves next.
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: pass each event on as it comes
	w.WriteHeader(http.StatusOK)

	out := &sseWriter{w: w, rc: rc, wait: e.writeWait}
	err = out.run(ctx, e, sub)
	if err != nil && ctx.Err() == nil {
		s.log.Debug("event stream ended", "tenant", f.Tenant, "err", err)
	}
	return nil
}

// sseWriter writes one stream.
type sseWriter struct {
	w        io.Writer
	rc       *http.ResponseController
	wait     time.Duration
	buf      []byte
	reported uint64 // drops already told to the client
}

func (o *sseWriter) run(ctx context.Context, e *eventStreams, sub *events.Subscription) error {
	// Send the headers now, so that the client knows the stream is open before any event.
	if err := o.flush(); err != nil {
		return err
	}
	for i := range sub.Backlog {
		if err := o.event(&sub.Backlog[i]); err != nil {
			return err
		}
	}
	if err := o.flush(); err != nil {
		return err
	}
	tick := time.NewTicker(e.heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-e.done:
			return nil
		case r, ok := <-sub.Records:
			if !ok {
				return nil // the Hub closed
			}
			if err := o.drops(sub); err != nil {
				return err
			}
			if err := o.event(&r); err != nil {
				return err
			}
		case <-tick.C:
			if err := o.drops(sub); err != nil {
				return err
			}
			if err := o.comment("keepalive"); err != nil {
				return err
			}
		}
		if err := o.flush(); err != nil {
			return err
		}
	}
}

// event writes one record as an SSE event. Compact JSON has no newline, so data is one line.
func (o *sseWriter) event(r *events.Record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding record %d: %w", r.Seq, err)
	}
	o.buf = append(o.buf[:0], "id: "...)
	o.buf = strconv.AppendUint(o.buf, r.Seq, 10)
	o.buf = append(o.buf, "\nevent: decision\ndata: "...)
	o.buf = append(o.buf, data...)
	o.buf = append(o.buf, "\n\n"...)
	return o.write(o.buf)
}

func (o *sseWriter) comment(text string) error {
	return o.write([]byte(": " + text + "\n\n"))
}

// drops tells the client, as a comment, how many records it lost since it was last told.
func (o *sseWriter) drops(sub *events.Subscription) error {
	d := sub.Dropped()
	if d == o.reported {
		return nil
	}
	lost := d - o.reported
	o.reported = d
	return o.comment(fmt.Sprintf("%d records dropped: this stream fell behind (see the gap in id)", lost))
}

func (o *sseWriter) write(p []byte) error {
	o.deadline()
	_, err := o.w.Write(p)
	return err
}

func (o *sseWriter) flush() error {
	o.deadline()
	return o.rc.Flush()
}

// deadline bounds the next write. A writer that cannot take deadlines (ErrNotSupported)
// still streams; it only loses the protection against a client that stops reading.
func (o *sseWriter) deadline() {
	_ = o.rc.SetWriteDeadline(time.Now().Add(o.wait))
}
