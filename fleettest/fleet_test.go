package fleettest

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/store/postgres/pgtest"
	"github.com/egressd/egressd/policy"
)

// Two fake public servers, on loopback addresses inside --public-cidrs. They listen on free
// ports, and policies allow them by address (allowed_cidrs opens every port), so the tests
// need neither root nor DNS.
const (
	webA       = "127.0.0.30"
	webB       = "127.0.0.31"
	publicLab  = "127.0.0.0/26"
	patience   = 20 * time.Second // for what must happen eventually (an outage to be noticed)
	propagated = time.Second      // issue 5: a write on one node is enforced on another within this
)

// site is one fake public web server.
type site struct{ URL string }

func startSite(t testing.TB, ip string) site {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from", ip)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return site{URL: "http://" + ln.Addr().String() + "/"}
}

// only is a policy that allows exactly one server, on every port.
func only(ip string) policy.Policy {
	return policy.Policy{AllowedCIDRs: []string{ip + "/32"}}
}

// session is a session's proxy credentials, usable at any node's proxy.
type session struct {
	id   string
	user *url.Userinfo
}

func newSession(t testing.TB, api *client.Client, vm string) session {
	t.Helper()
	s, err := api.CreateSession(ctx(t), client.CreateSessionRequest{VMID: vm})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(s.ProxyURL)
	if err != nil {
		t.Fatal(err)
	}
	return session{id: s.SessionID, user: u.User}
}

// status fetches target through the proxy at proxyAddr as session s: 200 when the proxy
// allows it, 403 when it denies it, 407 when it does not know the credentials, 0 when the
// proxy did not answer.
func (s session) status(proxyAddr, target string) int {
	proxy := &url.URL{Scheme: "http", Host: proxyAddr, User: s.user}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxy), DisableKeepAlives: true}}
	resp, err := hc.Get(target)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// enforces reports whether the proxy at proxyAddr lets s reach allowed and not denied.
func (s session) enforces(proxyAddr string, allowed, denied site) bool {
	return s.status(proxyAddr, allowed.URL) == http.StatusOK && s.status(proxyAddr, denied.URL) == http.StatusForbidden
}

// checkEnforces fails the test unless the node lets s reach allowed and not denied.
func checkEnforces(t *testing.T, n *node, s session, allowed, denied site, when string) {
	t.Helper()
	if a, d := s.status(n.ProxyAddr, allowed.URL), s.status(n.ProxyAddr, denied.URL); a != http.StatusOK || d != http.StatusForbidden {
		t.Errorf("%s: node %s answers %d for the allowed server and %d for the denied one, want 200 and 403", when, n.name, a, d)
	}
}

func setPolicy(t testing.TB, api *client.Client, sessionID string, p policy.Policy) {
	t.Helper()
	if _, err := api.SetSessionPolicy(ctx(t), sessionID, p); err != nil {
		t.Fatal(err)
	}
}

func readyz(n *node) int {
	code, _ := n.get("/readyz")
	return code
}

// TestFleet: node A (--role all) and node B (--role gateway) share one PostgreSQL database.
// A policy set through A's API is enforced by B's proxy within a second. With the database
// gone (for both nodes) both keep enforcing the last policies and report not ready; a third
// process (--role api) changes policies meanwhile, and once the database is back both nodes
// enforce them, new session included.
func TestFleet(t *testing.T) {
	db := pgtest.NewDatabase(t)
	one, two := startSite(t, webA), startSite(t, webB)
	pgA, pgB := startForwarder(t, hostOf(t, db)), startForwarder(t, hostOf(t, db))
	a := startNode(t, "a", "--store", via(t, db, pgA), "--role", "all", "--public-cidrs", publicLab)
	b := startNode(t, "b", "--store", via(t, db, pgB), "--role", "gateway", "--public-cidrs", publicLab)
	api, err := client.New(a.URL, a.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.CreateVM(ctx(t), client.CreateVMRequest{VMID: "vm-1"}); err != nil {
		t.Fatal(err)
	}
	s := newSession(t, api, "vm-1")

	// The session was created through A; B learns of its credentials, and of its
	// default policy (deny all).
	waitFor(t, patience, "B to know the session", func() bool { return s.status(b.ProxyAddr, one.URL) == http.StatusForbidden })

	setPolicy(t, api, s.id, only(webA))
	took := waitFor(t, patience, "B to enforce the policy set through A", func() bool { return s.enforces(b.ProxyAddr, one, two) })
	t.Logf("a policy set through node A was enforced by node B %v after A's answer", took.Round(time.Microsecond))
	if took > propagated {
		t.Errorf("node B enforced the policy %v after node A answered, want within %v", took, propagated)
	}
	// A applies its own write through a kick that does not wait for the sync, and under load
	// that can take longer than B's; what matters is that it gets there.
	waitFor(t, patience, "A to enforce its own write", func() bool { return s.enforces(a.ProxyAddr, one, two) })
	for _, n := range []*node{a, b} {
		if code := readyz(n); code != http.StatusOK {
			t.Errorf("node %s /readyz = %d before the outage, want 200", n.name, code)
		}
	}

	// The database goes away for both nodes.
	pgA.Down()
	pgB.Down()
	for _, n := range []*node{a, b} {
		waitFor(t, patience, "node "+n.name+" to report not ready", func() bool { return readyz(n) == http.StatusServiceUnavailable })
		checkEnforces(t, n, s, one, two, "during the outage")
	}

	// A third process, which still reaches the database, changes things meanwhile: the
	// session's policy is flipped, and a new session is opened.
	c := startNode(t, "c", "--store", db, "--role", "api")
	thirdAPI, err := client.New(c.URL, a.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	setPolicy(t, thirdAPI, s.id, only(webB))
	s2 := newSession(t, thirdAPI, "vm-1")
	setPolicy(t, thirdAPI, s2.id, only(webB))
	time.Sleep(time.Second) // several of the nodes' polls
	for _, n := range []*node{a, b} {
		checkEnforces(t, n, s, one, two, "after changes made elsewhere during the outage")
		if code := s2.status(n.ProxyAddr, two.URL); code != http.StatusProxyAuthRequired {
			t.Errorf("node %s knew of a session created during its outage: %d, want 407", n.name, code)
		}
	}

	// The database comes back: both nodes catch up on what they missed.
	pgA.Up()
	pgB.Up()
	for _, n := range []*node{a, b} {
		waitFor(t, patience, "node "+n.name+" to enforce the changes made during its outage", func() bool {
			return s.enforces(n.ProxyAddr, two, one) && s2.enforces(n.ProxyAddr, two, one)
		})
		waitFor(t, patience, "node "+n.name+" to report ready", func() bool { return readyz(n) == http.StatusOK })
	}
}
