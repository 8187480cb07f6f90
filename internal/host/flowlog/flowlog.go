package flowlog

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/internal/host/firewall"
)

// Flow is one connection that went through the gateway, reported when it ends (a TCP
// connection's move to TIME_WAIT or CLOSE, else conntrack's DESTROY), or when it opens
// (NEW) to Reader.OnOpen, with no End and no bytes.
type Flow struct {
	Src, Dst netip.Addr // as the sandbox sent it: Src the sandbox, Dst the address it dialled
	SrcPort  uint16
	Port     uint16 // the destination port
	Proto    uint8  // IP protocol number: 6 TCP, 17 UDP, 1 ICMP
	// Marked: admitted by the sandbox's allowed_tcp set (ct mark firewall.MarkTCP). The
	// other flows are reported only with Reader.Sandboxes set.
	Marked bool
	// Fast: a fast-path flow that egressd verified (ct mark firewall.MarkFast, or
	// firewall.MarkFastWait while its server had not yet acknowledged the ClientHello; a verified
	// flow cut by a tightening keeps it beside MarkFastDeny; one refused after its
	// verification loses it, and its close was recorded then).
	Fast       bool
	Start, End time.Time
	BytesOut   uint64 // from the sandbox, IP headers included
	BytesIn    uint64 // to the sandbox
	PacketsOut uint64
	PacketsIn  uint64
}

// Attempt is the first packet of a flow that the firewall denied (Prefix "deny") or, for
// a monitor sandbox, let through but would have denied (Prefix "monitor").
type Attempt struct {
	Src, Dst netip.Addr
	Proto    uint8  // IP protocol number
	SrcPort  uint16 // TCP and UDP
	Port     uint16 // the destination port, TCP and UDP; 0 otherwise
	ICMPType uint8  // ICMP
	ICMPCode uint8
	Prefix   string // the log rule's prefix: firewall.PrefixDeny or firewall.PrefixMonitor
	At       time.Time
}

// Reader reads conntrack events and NFLOG packets of one network namespace. The zero
// value reads the caller's namespace with the firewall's defaults. Set the fields before
// Run; a Reader runs once at a time.
type Reader struct {
	// NetNSFd is an open fd of the network namespace to read (0: the caller's). It must
	// stay open while Run runs.
	NetNSFd int
	// Group is the NFLOG group of the firewall's log rules (0: firewall.DefaultLogGroup).
	Group uint16
	// Sandboxes, if set, also reports forwarded flows from this range that carry no mark
	// (allowed_cidrs, monitor). Flows DNATed to the gateway itself (DNS, web through the
	// transparent proxy) are never reported: the proxy and the DNS filter record those.
	Sandboxes netip.Prefix
	// OnOpen, if set, is called with each reported flow when it opens (no End, no bytes).
	OnOpen func(Flow)
	// Repeat is how long the same attempt (same source and destination address and port,
	// same protocol) is reported once: a denied SYN is retransmitted, a UDP client sends
	// again, and each is the first packet of a flow the kernel never confirmed, so each is
	// logged. 0 means 10 s; a negative value reports every packet logged.
	Repeat time.Duration
	// Ready, if set, is called once Run's sockets are subscribed (what the kernel reports
	// from then on is read), before any other callback.
	Ready func()
	// Queue is how many records wait for a slow consumer before new ones are dropped
	// (0: 4096), per source.
	Queue int

	flowsDropped, attemptsDropped atomic.Uint64
	kernelLost, malformed         atomic.Uint64
	repeats                       atomic.Uint64
}

// Stats counts what was lost.
type Stats struct {
	FlowsDropped    uint64 // flows (open and close records) the consumer was too slow for
	AttemptsDropped uint64 // attempts the consumer was too slow for
	KernelLost      uint64 // times a socket overflowed (ENOBUFS): the kernel dropped an unknown number
	Malformed       uint64 // messages that could not be read
	Repeats         uint64 // attempts not reported because the same one was, within Repeat
}

// Stats returns the counts so far.
func (r *Reader) Stats() Stats {
	return Stats{r.flowsDropped.Load(), r.attemptsDropped.Load(), r.kernelLost.Load(), r.malformed.Load(), r.repeats.Load()}
}

func (r *Reader) group() uint16 {
	if r.Group == 0 {
		return firewall.DefaultLogGroup
	}
	return r.Group
}

func (r *Reader) queue() int {
	if r.Queue <= 0 {
		return 4096
	}
	return r.Queue
}

// record is one item of the queue between a socket reader and the consumer.
type record struct {
	flow    *Flow
	open    bool
	attempt *Attempt
}

// Run reads until ctx ends, then returns nil; it returns an error if a socket cannot be
// opened or configured (the NFLOG group held by another socket, no CAP_NET_ADMIN) or
// fails while reading. flows gets closed flows, attempts the denied attempts; a nil one
// turns its source off. The callbacks (and OnOpen) are called from one goroutine.
func (r *Reader) Run(ctx context.Context, flows func(Flow), attempts func(Attempt)) error {
	if flows == nil && r.OnOpen == nil && attempts == nil {
		<-ctx.Done()
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var ct *ctSource
	var nl *nflogSource
	var err error
	if flows != nil || r.OnOpen != nil {
		if ct, err = r.openConntrack(); err != nil {
			return err
		}
		defer ct.close()
	}
	if attempts != nil {
		if nl, err = r.openNFLOG(); err != nil {
			return err
		}
		defer nl.close()
	}

	if r.Ready != nil {
		r.Ready()
	}
	q := make(chan record, r.queue())
	aq := make(chan record, r.queue())
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	if ct != nil {
		wg.Add(1)
		go func() { defer wg.Done(); errc <- ct.read(ctx, q) }()
	}
	if nl != nil {
		wg.Add(1)
		go func() { defer wg.Done(); errc <- nl.read(ctx, aq) }()
	}
	// Closing the sockets is what ends a blocked Receive.
	go func() {
		<-ctx.Done()
		if ct != nil {
			ct.close()
		}
		if nl != nil {
			nl.close()
		}
	}()

	var runErr error
	for done := false; !done; {
		select {
		case rec := <-q:
			switch {
			case rec.open && r.OnOpen != nil:
				r.OnOpen(*rec.flow)
			case !rec.open && flows != nil:
				flows(*rec.flow)
			}
		case rec := <-aq:
			attempts(*rec.attempt)
		case err := <-errc:
			if err != nil && ctx.Err() == nil {
				runErr = err
			}
			done = true
		case <-ctx.Done():
			done = true
		}
	}
	cancel()
	wg.Wait()
	return runErr
}

// offer queues rec for the consumer, or drops it (counted) if the queue is full: a socket
// reader never waits for the consumer.
func offer(q chan<- record, rec record, dropped *atomic.Uint64) {
	select {
	case q <- rec:
	default:
		dropped.Add(1)
	}
}

// closed reports whether err is the end of a socket that Run closed.
func closed(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, context.Canceled)
}

func wrap(what string, err error) error { return fmt.Errorf("flowlog: %s: %w", what, err) }
