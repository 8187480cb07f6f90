package storetest

import (
	"context"
	"testing"

	"github.com/egressd/egressd/internal/controlplane/store"
)

// testAllSessions: the gateway's listings span tenants, oldest first, and drops ended sessions.
func testAllSessions(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustVM(t, s, tenantA, "vm")
	mustVM(t, s, tenantB, "vm")
	mustSession(t, s, tenantA, "vm", "sa1")
	mustSession(t, s, tenantB, "vm", "sb1")
	mustSession(t, s, tenantA, "vm", "sa2")
	if err := s.DeleteSession(ctx, tenantA, "sa1"); err != nil {
		t.Fatal(err)
	}
	all, err := s.AllSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, se := range all {
		got = append(got, se.Tenant+"/"+se.ID)
	}
	if want := []string{tenantB + "/sb1", tenantA + "/sa2"}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("AllSessions = %v, want %v", got, want)
	}
	vms, err := s.AllVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 2 || vms[0].Tenant != tenantA || vms[1].Tenant != tenantB {
		t.Errorf("AllVMs = %+v, want both tenants' VMs, oldest first", vms)
	}
}

// testChangeLog: every mutation is logged with its revision, so a follower that applies the
// changes after the revision it has seen misses nothing.
func testChangeLog(t *testing.T, s store.Store) {
	ctx := context.Background()
	start := mustRevision(t, s)
	mustVM(t, s, tenantA, "vm")
	mustSession(t, s, tenantA, "vm", "s1")
	rec := mustPolicy(t, s, tenantA, store.ScopeVM, "vm", fullPolicy(1))
	mustPolicy(t, s, tenantA, store.ScopeSession, "s1", fullPolicy(2))
	if err := s.DeleteVM(ctx, tenantA, "vm"); err != nil {
		t.Fatal(err)
	}
	changes, err := s.ChangesSince(ctx, start, store.MaxChanges)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	last := start
	for _, c := range changes {
		if c.Revision <= last {
			t.Errorf("revisions not increasing: %d after %d", c.Revision, last)
		}
		last = c.Revision
		if c.Tenant != tenantA {
			t.Errorf("change %+v has the wrong tenant", c)
		}
		seen[c.Kind+" "+c.Op+" "+c.ID] = true
		if c.Kind == store.KindVMPolicy && c.Op == store.OpCreate && c.Revision != rec.Revision {
			t.Errorf("the VM policy was logged at %d, stored at %d", c.Revision, rec.Revision)
		}
	}
	for _, want := range []string{
		"vm create vm", "session create s1", "vm_policy create vm", "session_policy create s1",
		"session_policy delete s1", "session delete s1", "vm_policy delete vm", "vm delete vm",
	} {
		if !seen[want] {
			t.Errorf("the log lacks %q: %+v", want, changes)
		}
	}
	if rev := mustRevision(t, s); rev != last {
		t.Errorf("Revision() = %d, the last change is %d", rev, last)
	}
	// Paging: asking after the last one returns nothing.
	if more, err := s.ChangesSince(ctx, last, 10); err != nil || len(more) != 0 {
		t.Errorf("ChangesSince(last) = %v, %v", more, err)
	}
}
