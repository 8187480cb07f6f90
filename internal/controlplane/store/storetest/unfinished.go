package storetest

import (
	"testing"

	"github.com/egressd/egressd/internal/controlplane/store"
)

// testNoSessionOnAnUnfinishedVM: a VM being deleted takes no new session and no new policy,
// and a VM whose creator is still storing its policy (creating) takes no session: a session
// on either would be held to its own policy alone, without its VM's (DESIGN §2.4). Both are
// ErrNotFound, and take no revision. A pending, ready or failed VM has its policy stored,
// and takes sessions.
func testNoSessionOnAnUnfinishedVM(t *testing.T, s store.Store) {
	ctx := t.Context()
	for id, n := range map[string]store.Network{
		"vm-creating": {Mode: "netns", Node: "gw-1", State: store.NetworkCreating},
		"vm-ready":    readyNetwork("gw-1"),
		"vm-pending":  {Mode: "netns", Node: "gw-1", State: store.NetworkPending},
		"vm-failed":   {Mode: "netns", Node: "gw-1", State: store.NetworkFailed, Error: "no"},
	} {
		if _, err := s.CreateVM(ctx, store.VM{Tenant: tenantA, ID: id, Network: n}); err != nil {
			t.Fatalf("CreateVM(%s): %v", id, err)
		}
	}
	mustPolicy(t, s, tenantA, store.ScopeVM, "vm-ready", fullPolicy(1))
	if _, err := s.RetireVM(ctx, tenantA, "vm-ready"); err != nil {
		t.Fatalf("RetireVM: %v", err)
	}
	before := mustRevision(t, s)
	for _, id := range []string{"vm-ready", "vm-creating"} {
		_, err := s.CreateSession(ctx, store.Session{Tenant: tenantA, ID: "se-" + id, VMID: id, TokenHash: hash("t")})
		wantErr(t, "CreateSession on "+id, err, store.ErrNotFound)
	}
	_, err := s.PutPolicy(ctx, store.PolicyRecord{Tenant: tenantA, Scope: store.ScopeVM, ID: "vm-ready", Policy: fullPolicy(2)})
	wantErr(t, "PutPolicy of a VM being deleted", err, store.ErrNotFound)
	if rev := mustRevision(t, s); rev != before {
		t.Errorf("Revision after the refused writes = %d, want %d", rev, before)
	}
	if list, err := s.ListSessions(ctx, tenantA, ""); err != nil || len(list) != 0 {
		t.Errorf("ListSessions = %+v, %v; want none", list, err)
	}
	// The creator stores the policy of a creating VM, and then it takes sessions.
	mustPolicy(t, s, tenantA, store.ScopeVM, "vm-creating", fullPolicy(3))
	for _, id := range []string{"vm-pending", "vm-failed"} {
		mustSession(t, s, tenantA, id, "se-"+id)
	}
}
