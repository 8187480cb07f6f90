package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/egressd/egressd/policy"
)

// Suggestion is the answer of GET /v1/egress/session/{id}/suggestion and
// /v1/egress/vm/{id}/suggestion (DESIGN §2.9): the smallest change to that layer's policy
// that would have allowed the denials and would-be denials it caused, read from the
// recorded decisions. Apply it by setting Policy (SetSessionPolicy, SetVMPolicy) when
// Changed is true.
type Suggestion struct {
	Scope string `json:"scope"` // "session" or "vm"
	ID    string `json:"id"`
	// VMID is a session's VM (empty for a VM's suggestion), whose own suggestion takes the
	// denials of its layer.
	VMID string `json:"vm_id,omitempty"`
	// PolicySet says whether the layer has a policy. Revision is its revision (0 when none
	// is set): the suggestion starts from that policy, or from the operator's default policy
	// when none is set and the default is what applied.
	PolicySet bool  `json:"policy_set"`
	Revision  int64 `json:"revision"`
	// Decisions counts the denials and would-be denials read (this layer's and others').
	// Truncated says that a read was full (MaxSuggestionRecords denied records, or as many
	// allowed ones, among which the would-be denials are), so some may be missed: ask
	// again with a later since to see the rest.
	Decisions int  `json:"decisions"`
	Truncated bool `json:"truncated"`
	// The change: flags to turn on ("allow_http", "allow_https"), entries to add to
	// allowed_domains and to allowed_tcp; each with the number of decisions it covers.
	Flags          []SuggestedEntry `json:"flags"`
	AllowedDomains []SuggestedEntry `json:"allowed_domains"`
	AllowedTCP     []SuggestedEntry `json:"allowed_tcp"`
	// NotAllowable are the denials no entry of those fields can lift (hard denials, denied_domains,
	// IP literals, private addresses...), grouped, each with what would.
	NotAllowable []NotAllowable `json:"not_allowable"`
	// OtherLayers counts the denials that another layer caused: that layer's own
	// suggestion fixes them.
	OtherLayers []LayerCount `json:"other_layers"`
	// AlreadyAllowed counts the denials that the layer's current policy would allow now
	// (it changed since they were recorded), and those of a layer whose policy was cleared.
	AlreadyAllowed int `json:"already_allowed"`
	// Notes say what a reader could miss, e.g. that a flag opens a port to more hosts than were denied.
	Notes []string `json:"notes"`
	// Changed says whether Policy differs from the layer's policy. Policy is the merged
	// policy: the layer's policy (or the default) with the change, normalised; nil when no
	// change can be suggested for this layer (it has no policy and another layer is set).
	Changed bool           `json:"changed"`
	Policy  *policy.Policy `json:"policy"`
}

// SuggestedEntry is one thing to add: a flag name, an allowed_domains entry or an
// allowed_tcp entry. Names lists, for a wildcard that collapses siblings ("*.example.com"),
// the names that were denied under it.
type SuggestedEntry struct {
	Entry  string   `json:"entry"`
	Covers int      `json:"covers"`
	Names  []string `json:"names,omitempty"`
}

// NotAllowable is a group of denials that the suggestion cannot lift, with the same reason
// and destination: Explanation says why, and what a person could do instead.
type NotAllowable struct {
	Reason      policy.Reason `json:"reason"`
	Layer       string        `json:"layer,omitempty"`
	Kind        string        `json:"kind"`
	Host        string        `json:"host,omitempty"`
	IP          string        `json:"ip,omitempty"`
	Port        int           `json:"port,omitempty"`
	Transport   string        `json:"transport,omitempty"`
	Rule        string        `json:"rule,omitempty"`
	Covers      int           `json:"covers"`
	Explanation string        `json:"explanation"`
}

// LayerCount is a number of decisions per layer.
type LayerCount struct {
	Layer  string `json:"layer"`
	Covers int    `json:"covers"`
}

// MaxSuggestionRecords bounds the decisions of each kind (denials, would-be denials) that one
// suggestion reads.
const MaxSuggestionRecords = 10000

// SuggestionOptions narrow the decisions a suggestion reads. The zero value reads the newest
// ones the events buffer holds.
type SuggestionOptions struct {
	// Since keeps the decisions at or after this time; SinceSeq those after this seq (an
	// event's seq). Set at most one.
	Since    time.Time
	SinceSeq uint64
}

func (o SuggestionOptions) query() url.Values {
	q := url.Values{}
	switch {
	case o.SinceSeq > 0:
		q.Set("since", strconv.FormatUint(o.SinceSeq, 10))
	case !o.Since.IsZero():
		q.Set("since", o.Since.UTC().Format(time.RFC3339Nano))
	}
	return q
}

// SessionSuggestion asks what to add to a session's policy so that the denials it caused
// would have been allowed (GET /v1/egress/session/{session_id}/suggestion).
func (c *Client) SessionSuggestion(ctx context.Context, sessionID string, opts SuggestionOptions) (*Suggestion, error) {
	return c.suggestion(ctx, "session", ScopeSession, sessionID, opts)
}

// VMSuggestion asks the same of a VM's policy (GET /v1/egress/vm/{vm_id}/suggestion), from
// the decisions of every session of the VM.
func (c *Client) VMSuggestion(ctx context.Context, vmID string, opts SuggestionOptions) (*Suggestion, error) {
	return c.suggestion(ctx, "VM", ScopeVM, vmID, opts)
}

func (c *Client) suggestion(ctx context.Context, kind, scope, id string, opts SuggestionOptions) (*Suggestion, error) {
	path, err := pathFor(kind, "/v1/egress/"+scope+"/", id, "/suggestion")
	if err != nil {
		return nil, err
	}
	var out Suggestion
	if err := c.do(ctx, http.MethodGet, path, opts.query(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
