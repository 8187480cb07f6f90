package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/egressd/egressd/client"
)

// Writes are enforced when answered (DESIGN §3): a change to a policy, a session or a VM is
// answered only once this node's gateway decides on it, so that the next connection obeys
// it. The store hands every write a revision; the gateway's view reports which revision it
// has applied.

// Enforcer is this node's gateway as the API waits on it: *view.View is one. A node without a
// gateway (--role api) has none, and answers a write as soon as it is durable.
type Enforcer interface {
	// WaitRevision returns nil once every store change up to rev is enforced, or an error
	// when ctx ends first.
	WaitRevision(ctx context.Context, rev int64) error
}

// Fleet is the fleet's nodes, as ?wait=fleet reads them.
type Fleet interface {
	Nodes(ctx context.Context) ([]NodeState, error)
}

// Announcer tells the fleet's gateway nodes that this node waits for node ("" for every
// one) to enforce revision rev: they heartbeat as soon as they do, rather than at their next
// beat, so that the wait ends within milliseconds. *postgres.Store is one. Announcing is an
// optimisation: a wait whose announcement is lost ends at the nodes' next heartbeats.
type Announcer interface {
	Wanted(ctx context.Context, rev int64, node string) error
}

// announce tells the fleet what this node waits for, if it can.
func (s *Server) announce(ctx context.Context, rev int64, node string) {
	if s.announcer == nil {
		return
	}
	if err := s.announcer.Wanted(ctx, rev, node); err != nil {
		s.log.Debug("announcing a wait to the fleet failed; the nodes report at their next heartbeat", "err", err)
	}
}

// NodeState is one node of the fleet as its last heartbeat reported it.
type NodeState struct {
	ID string
	// Roles are the node's --role values; a node runs a gateway (and counts for wait=fleet)
	// when they hold "gateway" or "all".
	Roles    []string
	Revision int64 // the store revision the node's view has applied
	Up       bool  // it has heartbeated recently (DESIGN §5)
}

// DefaultWaitTimeout bounds how long a write waits to be enforced, locally and with
// wait=fleet (DESIGN §3).
const DefaultWaitTimeout = 5 * time.Second

// fleetPoll is how often wait=fleet reads the nodes: their revisions arrive with their
// heartbeats (every second, and as soon as a node enforces a new revision), not as an event
// that this node could wait on. Waiting writes share the reads (StoreFleet).
const fleetPoll = 20 * time.Millisecond

// waitMode is a write's ?wait.
type waitMode int

const (
	waitLocal waitMode = iota // the default: this node's gateway enforces it
	waitFleet                 // every up gateway node of the fleet enforces it
)

// parseWait reads ?wait of a write, before anything is written.
func parseWait(r *http.Request) (waitMode, error) {
	vals, ok := r.URL.Query()["wait"]
	if !ok {
		return waitLocal, nil
	}
	if len(vals) == 1 && vals[0] == "fleet" {
		return waitFleet, nil
	}
	return waitLocal, badRequest("wait", "wait=%q is not known: use wait=fleet to wait until every up gateway node enforces the change, or leave it out to wait for this node", vals[len(vals)-1])
}

// enforced waits until the write that took revision rev is enforced by this node's gateway
// (if it runs one) and, with waitFleet, by every up gateway node, which it then reports
// (nil otherwise). It waits at most waitTimeout in all. A write this node has not enforced
// by then is a 503 (the change is stored: it takes effect when the view catches up); a
// fleet that has not is a 200 that names the nodes that lag, since every node's view does
// catch up, and the write is durable and enforced here.
func (s *Server) enforced(ctx context.Context, mode waitMode, rev int64) (*client.Enforcement, error) {
	ctx, cancel := context.WithTimeout(ctx, s.waitTimeout)
	defer cancel()
	if s.enforcer != nil {
		if err := s.enforcer.WaitRevision(ctx, rev); err != nil {
			return nil, &notEnforced{rev: rev, why: fmt.Sprintf("this node's gateway has not applied it within %s (%v): "+
				"its view of the store is behind, see GET /readyz", s.waitTimeout, err),
				after: "It takes effect when the view catches up; until then connections may still be decided on " +
					"the previous state. Repeat the request to wait again"}
		}
	}
	if mode != waitFleet {
		return nil, nil
	}
	return s.fleetEnforced(ctx, rev)
}

// fleetEnforced waits until every up gateway node has applied rev, or ctx ends, and says
// which have and which lag.
func (s *Server) fleetEnforced(ctx context.Context, rev int64) (*client.Enforcement, error) {
	if s.fleet == nil {
		// One node is the whole fleet: the local wait was the fleet's.
		return s.tally(nil, rev), nil
	}
	s.announce(ctx, rev, "")
	t := time.NewTicker(fleetPoll)
	defer t.Stop()
	var last *client.Enforcement
	var lastErr error
	for {
		nodes, err := s.fleet.Nodes(ctx)
		if err == nil {
			if last = s.tally(nodes, rev); len(last.Lagging) == 0 {
				return last, nil
			}
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if last == nil {
				return nil, &notEnforced{rev: rev, why: fmt.Sprintf("the fleet's nodes could not be read to see which gateways enforce it (%v)", lastErr),
					after: "Repeat the request to wait again"}
			}
			return last, nil
		case <-t.C:
		}
	}
}

// notEnforced is a write that is stored but that could not be shown to be enforced in
// time: a 503, since the client cannot rely on it yet.
type notEnforced struct {
	rev   int64
	why   string // what did not happen in time
	after string // what happens next, and what to do
}

func (e *notEnforced) Error() string {
	if e.rev == 0 { // not known
		return fmt.Sprintf("the change is stored, but %s. %s", e.why, e.after)
	}
	return fmt.Sprintf("the change is stored (revision %d), but %s. %s", e.rev, e.why, e.after)
}

func (e *notEnforced) apiError() *apiError {
	return errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "", "%s", e.Error())
}

// tally sorts the up gateway nodes into those that have applied rev and those that lag.
// This node counts as enforcing once its own wait is over: its heartbeat may be a second old.
func (s *Server) tally(nodes []NodeState, rev int64) *client.Enforcement {
	out := &client.Enforcement{EnforcedBy: []string{}}
	if s.enforcer != nil {
		out.EnforcedBy = append(out.EnforcedBy, s.nodeID)
	}
	for _, n := range nodes {
		if !n.Up || !runsGateway(n.Roles) || (s.enforcer != nil && n.ID == s.nodeID) {
			continue
		}
		if n.Revision >= rev {
			out.EnforcedBy = append(out.EnforcedBy, n.ID)
		} else {
			out.Lagging = append(out.Lagging, n.ID)
		}
	}
	slices.Sort(out.EnforcedBy)
	slices.Sort(out.Lagging)
	return out
}

func runsGateway(roles []string) bool {
	return slices.Contains(roles, "gateway") || slices.Contains(roles, "all")
}

// enforcedNewest is enforced for the writes of a request whose revisions it does not know:
// the store's newest revision is at least theirs. A revision that cannot be read is a
// notEnforced (503): the writes are stored, but nothing can be waited for.
func (s *Server) enforcedNewest(ctx context.Context, mode waitMode) (*client.Enforcement, error) {
	if s.enforcer == nil && mode != waitFleet {
		return nil, nil // nothing to wait for: do not ask the store for what is not needed
	}
	rev, err := s.store.Revision(ctx)
	if err != nil {
		return nil, &notEnforced{why: fmt.Sprintf("the store's revision could not be read to wait for the gateways (%v)", err),
			after: "It takes effect as the gateways' views catch up"}
	}
	return s.enforced(ctx, mode, rev)
}

// answerDeleted answers a delete once it is enforced: 204, or with wait=fleet 200 and
// which nodes enforce it.
func (s *Server) answerDeleted(w http.ResponseWriter, r *http.Request, mode waitMode) error {
	enf, err := s.enforcedNewest(r.Context(), mode)
	if err != nil {
		return err
	}
	if enf == nil {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	writeJSON(w, http.StatusOK, enf)
	return nil
}

// createdButNotEnforced is the answer to a creation that could not be shown to be enforced
// in time, once undo has removed it again: a client that gets it retries, and is not left
// holding an object it cannot rely on (a session whose one-time proxy token it never saw).
func (s *Server) createdButNotEnforced(ctx context.Context, what string, err error, undo func(context.Context) error) error {
	var ne *notEnforced
	if !errors.As(err, &ne) {
		return err
	}
	// The request's context may be what ended; the undo must still run.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.waitTimeout)
	defer cancel()
	if uerr := undo(ctx); uerr != nil {
		s.log.Error("removing a "+what+" that could not be shown to be enforced", "err", uerr)
		return errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "",
			"the %s was stored, but %s, and removing it again failed (%v): delete it and try again", what, ne.why, uerr)
	}
	return errorf(http.StatusServiceUnavailable, client.CodeUnavailable, "",
		"the %s was not created: %s. Try again", what, ne.why)
}
