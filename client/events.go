package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Kinds of Event.
const (
	EventConnect = "connect" // a tunnel or connection was decided
	EventRequest = "request" // one plain-HTTP request was decided
	EventDNS     = "dns"     // a DNS query was decided
	EventClose   = "close"   // an allowed connection ended: bytes each way and duration
)

// Event is one decision of the gateway, or one closed connection (Kind "close"), as
// GET /v1/egress/events answers it. Seq increases from one event to the next; a gap in it
// means records that this view did not get (another tenant's, filtered out, or lost by a
// follower that fell behind).
type Event struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Tenant    string    `json:"tenant"`
	VMID      string    `json:"vm_id,omitempty"`
	SessionID string    `json:"session_id,omitempty"`
	Decision  string    `json:"decision"` // "allow" or "deny"
	// WouldDeny: a monitor-mode policy let it through but would have denied it.
	WouldDeny bool   `json:"would_deny,omitempty"`
	Reason    string `json:"reason,omitempty"` // a code of docs/reasons.md
	Message   string `json:"message,omitempty"`
	Rule      string `json:"rule,omitempty"`
	Layer     string `json:"layer,omitempty"`
	Mode      string `json:"mode,omitempty"`      // "enforce" or "monitor"
	Transport string `json:"transport,omitempty"` // "tcp", "udp", "icmp"
	Host      string `json:"host,omitempty"`
	IP        string `json:"ip,omitempty"`
	Port      int    `json:"port,omitempty"`
	QType     string `json:"qtype,omitempty"` // DNS only
	// Close events: bytes from the sandbox to the destination and back, how long the
	// connection lived and why it ended ("eof", "policy", "session ended", "idle", "error").
	BytesUp     int64   `json:"bytes_up,omitempty"`
	BytesDown   int64   `json:"bytes_down,omitempty"`
	DurationMS  float64 `json:"duration_ms,omitempty"`
	CloseReason string  `json:"close_reason,omitempty"`
	// DialMS is how long dialling the destination took (allowed connect events).
	DialMS float64 `json:"dial_ms,omitempty"`
	// Request events of an intercepted connection: the method, the decided path (never the
	// query), the status sent, and the names of the secrets applied (never a value).
	Method  string   `json:"method,omitempty"`
	Path    string   `json:"path,omitempty"`
	Status  int      `json:"status,omitempty"`
	Secrets []string `json:"secrets,omitempty"`
	// Via is "fast_path" for a connection the kernel forwards after the gateway verified
	// its ClientHello from its packets (--fast-path); empty for the proxies'.
	Via string `json:"via,omitempty"`
}

// EventList is the answer of GET /v1/egress/events.
type EventList struct {
	Events []Event `json:"events"`
}

// EventsFilter selects events; every field left empty matches everything. Events are always
// those of the API key's tenant.
type EventsFilter struct {
	VMID      string
	SessionID string
	Decision  string // "allow" or "deny"
	Kind      string // one of the Event kinds
	// Since starts at a time (events at or after it); AfterSeq starts after an event's Seq.
	// Set one at most.
	Since    time.Time
	AfterSeq uint64
	// Limit is how many events at most: 0 means the server's default (100), and at most
	// 10,000. Without a start point they are the newest ones, with one the first after it.
	// For FollowEvents it bounds the buffered events sent before the live ones, and a negative
	// Limit sends none.
	Limit int
}

func (f EventsFilter) query() (url.Values, error) {
	q := url.Values{}
	set := func(name, v string) {
		if v != "" {
			q.Set(name, v)
		}
	}
	set("vm_id", f.VMID)
	set("session_id", f.SessionID)
	set("decision", f.Decision)
	set("kind", f.Kind)
	switch {
	case !f.Since.IsZero() && f.AfterSeq > 0:
		return nil, errors.New("client: EventsFilter: set Since or AfterSeq, not both")
	case !f.Since.IsZero():
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	case f.AfterSeq > 0:
		q.Set("since", strconv.FormatUint(f.AfterSeq, 10))
	}
	switch {
	case f.Limit > 0:
		q.Set("limit", strconv.Itoa(f.Limit))
	case f.Limit < 0:
		q.Set("limit", "0")
	}
	return q, nil
}

// Events returns the buffered events that f selects, oldest first (GET /v1/egress/events).
// egressd keeps a bounded number of recent events; its audit log, where the operator set one,
// has them all.
func (c *Client) Events(ctx context.Context, f EventsFilter) ([]Event, error) {
	q, err := f.query()
	if err != nil {
		return nil, err
	}
	var list EventList
	if err := c.do(ctx, http.MethodGet, "/v1/egress/events", q, nil, &list); err != nil {
		return nil, err
	}
	return list.Events, nil
}

// Reconnecting a followed stream: the first wait before an attempt, doubled at each attempt
// up to the longest; how long a stream must have lived, if it delivered nothing, to count as
// healthy (so that a new loss starts afresh); and how long it may stay silent (egressd sends
// a comment every 15 s) before it is taken for dead.
var (
	followBackoffMin = 250 * time.Millisecond
	followBackoffMax = 5 * time.Second
	followHealthy    = 10 * time.Second
	followIdle       = 45 * time.Second
)

// DefaultFollowGiveUp is how long FollowEvents keeps reconnecting a lost stream: long enough
// for egressd to restart (its drain takes up to 10 s by default), short enough that a follower
// of an egressd that is gone for good ends.
const DefaultFollowGiveUp = time.Minute

// Reconnect is one step in the recovery of a lost stream, for a progress message
// (OnReconnect).
type Reconnect struct {
	// Resumed is false before an attempt, and true once a new stream is open.
	Resumed bool
	// Attempt counts the attempts since the stream was lost, from 1.
	Attempt int
	// Wait is how long until this attempt (when not Resumed).
	Wait time.Duration
	// Err is why the stream, or the last attempt, failed; nil when egressd ended the stream
	// (as it does when it shuts down).
	Err error
	// LastEventID is the id of the last event delivered, which the new stream resumes after
	// ("" when none had come).
	LastEventID string
}

// A FollowOption tunes how FollowEvents reconnects.
type FollowOption func(*followConfig)

type followConfig struct {
	giveUp      time.Duration
	onReconnect func(Reconnect)
}

// GiveUpAfter bounds how long FollowEvents keeps trying to reconnect a lost stream (default
// DefaultFollowGiveUp); a stream counts as lost until a new one delivers an event or stays
// open for 10 s.
func GiveUpAfter(d time.Duration) FollowOption {
	return func(c *followConfig) {
		if d > 0 {
			c.giveUp = d
		}
	}
}

// OnReconnect has FollowEvents call fn before each reconnect attempt and once a new stream is
// open, so that a program can say what is happening (egressctl writes it on stderr). fn runs on
// FollowEvents's goroutine and must not block.
func OnReconnect(fn func(Reconnect)) FollowOption {
	return func(c *followConfig) { c.onReconnect = fn }
}

// FollowEvents calls fn with each event that f selects: first the buffered ones (see
// EventsFilter.Limit), then new ones as they come (GET /v1/egress/events?follow=true, a
// Server-Sent Events stream). It returns when ctx is done (ctx.Err()) or fn returns an error
// (that error).
//
// If the stream breaks or egressd ends it (on shutdown, or a restart), FollowEvents reconnects
// with a growing wait (250 ms, doubling up to 5 s) and resumes after the last event it
// delivered (Last-Event-ID), as a browser's EventSource would: no event is delivered twice,
// and those that egressd recorded meanwhile and still buffers come first. It gives up, with
// the last error, when the stream stays lost for GiveUpAfter (a minute by default). An API
// error (a bad filter, a bad key) is returned at once as an *Error.
//
// A Client whose http.Client has a Timeout cuts the stream at that timeout; bound a follow
// with ctx instead.
func (c *Client) FollowEvents(ctx context.Context, f EventsFilter, fn func(Event) error, opts ...FollowOption) error {
	cfg := followConfig{giveUp: DefaultFollowGiveUp, onReconnect: func(Reconnect) {}}
	for _, opt := range opts {
		opt(&cfg)
	}
	q, err := f.query()
	if err != nil {
		return err
	}
	q.Set("follow", "true")
	st, err := c.openStream(ctx, q, "")
	if err != nil {
		return err
	}
	r := reconnector{c: c, cfg: cfg, q: q}
	for {
		opened, before := time.Now(), r.lastID
		err := c.readStream(ctx, st, &r.lastID, fn)
		var stop *stopError
		switch {
		case errors.As(err, &stop):
			return stop.err
		case ctx.Err() != nil:
			return ctx.Err()
		}
		if r.lastID != before || time.Since(opened) >= followHealthy {
			r.lostAt = time.Time{} // the stream was healthy: this is a new loss
		}
		if st, err = r.reconnect(ctx, err); err != nil {
			return err
		}
	}
}

// reconnector reopens a followed stream after a loss.
type reconnector struct {
	c      *Client
	cfg    followConfig
	q      url.Values
	lastID string
	lostAt time.Time // when the stream was lost; zero while it is healthy
}

// reconnect opens the stream again after it ended with cause (nil for a clean end). A stream
// that keeps ending at once, having delivered nothing, stays lost and spends the time that
// GiveUpAfter allows, as failed connections do.
func (r *reconnector) reconnect(ctx context.Context, cause error) (*stream, error) {
	if r.lostAt.IsZero() {
		r.lostAt = time.Now()
	}
	// Resume after the last event delivered; the start point and limit of the filter were for
	// the first connection only (Last-Event-ID supersedes them).
	if r.lastID != "" {
		r.q.Del("since")
		r.q.Del("limit")
	}
	for attempt := 1; ; attempt++ {
		wait := min(followBackoffMin<<min(attempt-1, 16), followBackoffMax)
		if time.Since(r.lostAt)+wait > r.cfg.giveUp {
			break
		}
		r.cfg.onReconnect(Reconnect{Attempt: attempt, Wait: wait, Err: cause, LastEventID: r.lastID})
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		st, err := r.c.openStream(ctx, r.q, r.lastID)
		if err == nil {
			r.cfg.onReconnect(Reconnect{Resumed: true, Attempt: attempt, LastEventID: r.lastID})
			return st, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		cause = err
		if e, ok := asError(err); ok && e.Status >= 400 && e.Status < 500 && e.Status != http.StatusTooManyRequests {
			return nil, err // retrying cannot fix a bad filter or a revoked key
		}
	}
	if cause == nil {
		cause = errors.New("egressd ended the stream")
	}
	return nil, fmt.Errorf("client: following events: the stream was lost and reconnecting failed for %s: %w",
		time.Since(r.lostAt).Round(time.Second), cause)
}

// stream is one open connection of a followed stream.
type stream struct {
	resp   *http.Response
	cancel context.CancelFunc // ends the request, and so any read that waits
}

// openStream sends the request of a stream and checks that the answer is one.
func (c *Client) openStream(ctx context.Context, q url.Values, lastID string) (_ *stream, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		if err != nil {
			cancel()
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/egress/events?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("User-Agent", c.userAgent)
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer drainAndClose(resp.Body)
		return nil, readError(resp)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		drainAndClose(resp.Body)
		return nil, fmt.Errorf("client: GET /v1/egress/events answered %d with Content-Type %q, not an event stream",
			resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return &stream{resp: resp, cancel: cancel}, nil
}

// stopError carries out of readStream an error that ends the follow (fn's, or an event that
// cannot be decoded, which a reconnect would only get again), to tell it from a broken stream.
type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }

// maxEventLine bounds one line of the stream; a record is well under 4 KiB.
const maxEventLine = 1 << 20

// readStream reads Server-Sent Events from st until the stream ends, calling fn with each
// decision event and keeping *lastID up to date. It returns nil when the server ended the
// stream, the read error when it broke, and a *stopError when following must end.
func (c *Client) readStream(ctx context.Context, st *stream, lastID *string, fn func(Event) error) error {
	defer st.resp.Body.Close()
	defer st.cancel()
	// A stream that stays silent past followIdle is dead (egressd sends comments every 15 s
	// even when there is nothing to say): end its request, so that the read fails and the
	// caller reconnects.
	idle := time.AfterFunc(followIdle, st.cancel)
	defer idle.Stop()

	sc := bufio.NewScanner(st.resp.Body)
	sc.Buffer(make([]byte, 0, 16<<10), maxEventLine)
	var id, event string
	var data strings.Builder
	for sc.Scan() {
		idle.Reset(followIdle)
		line := sc.Text()
		if line == "" { // the end of an event: dispatch it
			if data.Len() > 0 && event == "decision" {
				var ev Event
				if err := json.Unmarshal([]byte(data.String()), &ev); err != nil {
					return &stopError{fmt.Errorf("client: decoding event %s: %w", id, err)}
				}
				if err := fn(ev); err != nil {
					return &stopError{err}
				}
				if id != "" {
					*lastID = id
				}
			}
			id, event = "", ""
			data.Reset()
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // a comment: a heartbeat, or a note about dropped records
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "id":
			id = value
		case "event":
			event = value
		case "data":
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(value)
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("client: reading the event stream: %w", err)
	}
	return nil
}
