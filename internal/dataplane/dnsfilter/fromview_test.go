package dnsfilter

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/policy"
)

// TestFromView: the adapter finds a netns VM by its address (IPv4-mapped too) with its
// policy, and knows no other address; the handler follows a policy change of the store.
func TestFromView(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	addr := netip.MustParseAddr("100.96.0.6") // only a store entry: nothing is sent to it
	if _, err := st.CreateVM(ctx, store.VM{Tenant: "t", ID: "net", Network: store.Network{Mode: "netns", Address: addr.String(), Gateway: "100.96.0.5"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutPolicy(ctx, store.PolicyRecord{Tenant: "t", Scope: store.ScopeVM, ID: "net",
		Policy: policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"www.example.test"}}.WithDefaults()}); err != nil {
		t.Fatal(err)
	}
	env, err := policy.NewEnv(classifier, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := view.New(st, view.Config{Env: env, Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	vms := FromView(v)
	for _, a := range []string{"100.96.0.6", "::ffff:100.96.0.6"} {
		tenant, id, set, ok := vms.VMByAddr(netip.MustParseAddr(a))
		if !ok || tenant != "t" || id != "net" || set == nil {
			t.Fatalf("%s: %q %q %v %v", a, tenant, id, set, ok)
		}
		if d := set.DecideQuery(policy.Query{Name: "www.example.test", Type: dns.TypeA}); !d.Allow || d.Layer != policy.LayerVM {
			t.Errorf("%s: %+v", a, d)
		}
	}
	if _, _, _, ok := vms.VMByAddr(netip.MustParseAddr("100.96.0.7")); ok {
		t.Error("an address of no VM found one")
	}

	s := &Server{VMs: vms}
	m := query("evil.test", dns.TypeA, false)
	if r, rec := s.handle(m, addr, policy.UDP); r.Rcode != dns.RcodeRefused || rec.VMID != "net" || rec.Layer != "vm" {
		t.Fatalf("%s %+v", dns.RcodeToString[r.Rcode], rec)
	}
	if _, err := st.PutPolicy(ctx, store.PolicyRecord{Tenant: "t", Scope: store.ScopeVM, ID: "net",
		Policy: policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"evil.test"}, DeniedDomains: []string{"evil.test"}}.WithDefaults()}); err != nil {
		t.Fatal(err)
	}
	v.Kick()
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		_, rec := s.handle(m, addr, policy.UDP)
		if rec.Reason == policy.ReasonDeniedDomain {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the policy change never reached the filter: %+v", rec)
		}
	}
}
