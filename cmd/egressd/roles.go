package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/dataplane/view"
)

// role is what one egressd process serves (--role). A fleet scales the two halves apart: API
// replicas behind a load balancer, and a gateway on every sandbox host, all on one
// PostgreSQL store (docs/fleet.md).
type role string

const (
	roleAll     role = "all"     // the API and the data plane: one machine, or a sandbox host
	roleAPI     role = "api"     // the HTTP API only: no proxy, no transparent gateway
	roleGateway role = "gateway" // the data plane only, with /healthz, /readyz and /metrics
)

func parseRole(s string) (role, error) {
	switch r := role(s); r {
	case roleAll, roleAPI, roleGateway:
		return r, nil
	}
	return roleAll, fmt.Errorf("%q is not a role: use all, api or gateway", s)
}

// servesAPI reports whether the process answers /v1 requests.
func (r role) servesAPI() bool { return r != roleGateway }

// servesGateway reports whether the process runs the data plane (and so the view).
func (r role) servesGateway() bool { return r != roleAPI }

// roles names what this process serves, for GET /v1/status: "api", "gateway", and
// "transparent" when the gateway runs the transparent part too.
func (c *config) roles() []string {
	var out []string
	if c.role.servesAPI() {
		out = append(out, "api")
	}
	if c.role.servesGateway() {
		out = append(out, "gateway")
		if c.transparent {
			out = append(out, "transparent")
		}
	}
	return out
}

// checkRole refuses combinations that cannot work, rather than running a node that
// silently does nothing useful.
func checkRole(cfg *config) error {
	switch {
	case cfg.role == roleAPI && cfg.transparent:
		return errors.New("--transparent runs the data plane, which --role api does not: use --role all or gateway")
	case cfg.role != roleAll && cfg.storeURL == "":
		// The embedded store belongs to one process: an API-only or gateway-only process
		// on it would have no other half to work with.
		return fmt.Errorf("--role %s splits a fleet whose nodes share a PostgreSQL --store; with the embedded store use --role all", cfg.role)
	}
	return nil
}

// opsOnly serves the operational endpoints of h and nothing else: a gateway-only node
// answers health checks, scrapes, GET /v1/status (which needs a key, and counts the
// connections through this node) and the public GET /v1/ca.pem on --api-listen, but holds
// no API to change anything.
func opsOnly(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	for _, pattern := range []string{"GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/status", "GET /v1/ca.pem"} {
		mux.Handle(pattern, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, "{\"error\": {\"code\": %q, \"message\": %q}}\n", client.CodeNotFound,
			"this egressd runs --role gateway and serves no API; send API requests to a node with --role api or all")
	})
	return mux
}

// viewReady is the readiness of a process that runs the gateway: its view must have
// reached the store at its last sync, and the firewall (with --transparent) must hold what
// the view asks for. A stale view, or a firewall whose last apply failed, still enforces
// the last policies it knew, but a change may not be enforced here yet, so the node must
// not claim to be ready.
func viewReady(v *view.View, firewall func() error) func(context.Context) error {
	return func(context.Context) error {
		if !v.Ready() {
			return errors.New("gateway: the last sync with the store failed; enforcing the last known policies")
		}
		return firewall()
	}
}
