package api

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/controlplane/console"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/dialer"
	"github.com/egressd/egressd/policy"
)

// Planner judges a destination as the gateway would before it dials: judge the name,
// resolve it with the gateway's resolver, judge every address. *dialer.Dialer is the one the
// gateway uses; the check endpoint answers "resolve": true from its Plan, so that /check
// and the data path cannot disagree.
type Planner interface {
	Plan(ctx context.Context, set *policy.Effective, c policy.Conn) (dialer.Plan, error)
}

// Config is what the server needs. Only Store is required.
type Config struct {
	Store store.Store
	// Env is the setting every effective policy is built in: the address classes, the
	// preset, the default policy. It must be the gateway's own (nil: the built-in one).
	Env *policy.Env
	// ProxyAddr is the explicit proxy's host:port, used to build sessions' proxy_url.
	ProxyAddr string
	// SOCKSAddr is the SOCKS5 listener's host:port, used to build sessions' socks_url; empty
	// (the listener off) means no socks_url.
	SOCKSAddr string
	// Changes wakes the waits for a node's work on a VM's network (placement.go) when the
	// store changes; when nil they read the store every quarter second.
	Changes Changes
	// NetworkWait bounds those waits (DefaultNetworkWait when 0).
	NetworkWait time.Duration
	// Planner answers check requests with "resolve": true; nil means a zero
	// dialer.Dialer, which resolves the system's way. Pass the gateway's dialer.
	Planner Planner
	// RateLimit is the number of requests per second allowed per API key (0: unlimited);
	// bursts of twice that are allowed.
	RateLimit float64
	Logger    *slog.Logger
	// Registry receives the API's metrics and is served on /metrics (a new one when nil).
	Registry *prometheus.Registry
	// Events serves GET /v1/egress/events (an *events.Hub); when nil that endpoint answers
	// 503. Call CloseStreams on shutdown: see events.go.
	Events EventSource
	// Ready, when set, is asked by /readyz besides the store's Ping: in a process that runs
	// the gateway, whether its view of the store is current. An error makes /readyz 503.
	Ready func(ctx context.Context) error
	// Enforcer is this node's gateway (its view): a write is answered once it enforces the
	// write (enforce.go). When nil (--role api), a write is answered once it is durable.
	Enforcer Enforcer
	// Fleet lists the fleet's nodes for ?wait=fleet; when nil, this node is the whole fleet.
	Fleet Fleet
	// Announcer, when set, tells the fleet's gateway nodes what a write waits for, so that
	// they report it at once (the PostgreSQL store: enforce.go).
	Announcer Announcer
	// WaitTimeout bounds the wait for a write to be enforced (DefaultWaitTimeout when 0).
	WaitTimeout time.Duration
	// Status is what GET /v1/status says of this node (status.go); its NodeID also names
	// this node in "enforced_by" (the host name when empty).
	Status StatusConfig
	// Sealer seals secrets' values for the store (the keyring); without it, creating or
	// rotating a secret answers 503.
	Sealer Sealer
	// CA is the interception CA, served at GET /v1/ca.pem (503 when nil).
	CA CA
}

// Server is the control-plane HTTP API.
type Server struct {
	store     store.Store
	env       *policy.Env
	proxyAddr string
	socksAddr string
	changes   Changes
	planner   Planner
	log       *slog.Logger
	limits    *limiter
	mux       *http.ServeMux
	metrics   *metrics
	events    *eventStreams
	ready     func(ctx context.Context) error

	enforcer    Enforcer
	fleet       Fleet
	announcer   Announcer
	nodeID      string
	waitTimeout time.Duration
	networkWait time.Duration
	statusCfg   StatusConfig
	sealer      Sealer
	ca          CA
}

// New builds the server; it does not listen.
func New(cfg Config) *Server {
	s := &Server{
		store:     cfg.Store,
		env:       cfg.Env,
		proxyAddr: cfg.ProxyAddr,
		socksAddr: cfg.SOCKSAddr,
		changes:   cfg.Changes,
		planner:   cfg.Planner,
		log:       cfg.Logger,
		limits:    newLimiter(cfg.RateLimit),
		mux:       http.NewServeMux(),
		events:    newEventStreams(cfg.Events),
		ready:     cfg.Ready,

		enforcer:    cfg.Enforcer,
		fleet:       cfg.Fleet,
		announcer:   cfg.Announcer,
		nodeID:      cfg.Status.NodeID,
		waitTimeout: cfg.WaitTimeout,
		networkWait: cfg.NetworkWait,
		statusCfg:   cfg.Status,
		sealer:      cfg.Sealer,
		ca:          cfg.CA,
	}
	if s.nodeID == "" {
		s.nodeID, _ = os.Hostname()
	}
	if s.waitTimeout <= 0 {
		s.waitTimeout = DefaultWaitTimeout
	}
	if s.networkWait <= 0 {
		s.networkWait = DefaultNetworkWait
	}
	if s.planner == nil {
		s.planner = &dialer.Dialer{}
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s.metrics = newMetrics(reg)
	s.routes(reg)
	return s
}

// handlerFunc is a handler that returns its error for writeError to answer.
type handlerFunc func(w http.ResponseWriter, r *http.Request, k store.APIKey) error

func (s *Server) routes(reg *prometheus.Registry) {
	authed := func(pattern string, admin bool, h handlerFunc) {
		s.mux.Handle(pattern, s.instrument(pattern, s.authenticate(admin, h)))
	}
	authed("POST /v1/vms", false, s.createVM)
	authed("GET /v1/vms", false, s.listVMs)
	authed("GET /v1/vms/{vm_id}", false, s.getVM)
	authed("DELETE /v1/vms/{vm_id}", false, s.deleteVM)

	authed("POST /v1/sessions", false, s.createSession)
	authed("GET /v1/sessions", false, s.listSessions)
	authed("GET /v1/sessions/{session_id}", false, s.getSession)
	authed("DELETE /v1/sessions/{session_id}", false, s.deleteSession)

	authed("POST /v1/egress/session/{id}", false, s.putPolicy(store.ScopeSession))
	authed("GET /v1/egress/session/{id}", false, s.getPolicy(store.ScopeSession))
	authed("DELETE /v1/egress/session/{id}", false, s.deletePolicy(store.ScopeSession))
	authed("POST /v1/egress/vm/{id}", false, s.putPolicy(store.ScopeVM))
	authed("GET /v1/egress/vm/{id}", false, s.getPolicy(store.ScopeVM))
	authed("DELETE /v1/egress/vm/{id}", false, s.deletePolicy(store.ScopeVM))
	authed("GET /v1/egress/session/{id}/effective", false, s.effective)
	for _, scope := range []store.Scope{store.ScopeSession, store.ScopeVM} {
		base := "/v1/egress/" + string(scope) + "/{id}/grants"
		authed("POST "+base, false, s.createGrant(scope))
		authed("GET "+base, false, s.listGrants(scope))
		authed("DELETE "+base+"/{grant_id}", false, s.deleteGrant(scope))
	}
	authed("POST /v1/egress/session/{id}/check", false, s.check)
	authed("GET /v1/egress/package-managers", false, s.packageManagers)
	authed("GET /v1/egress/events", false, s.listEvents)
	authed("GET /v1/egress/session/{id}/suggestion", false, s.suggestion(store.ScopeSession))
	authed("GET /v1/egress/vm/{id}/suggestion", false, s.suggestion(store.ScopeVM))

	authed("POST /v1/api-keys", true, s.createKey)
	authed("GET /v1/api-keys", true, s.listKeys)
	authed("DELETE /v1/api-keys/{id}", true, s.deleteKey)
	authed("POST /v1/secrets", false, s.createSecret)
	authed("GET /v1/secrets", false, s.listSecrets)
	authed("GET /v1/secrets/{name}", false, s.getSecret)
	authed("PUT /v1/secrets/{name}", false, s.updateSecret)
	authed("DELETE /v1/secrets/{name}", false, s.deleteSecret)
	s.mux.Handle("GET /v1/ca.pem", s.instrument("GET /v1/ca.pem", http.HandlerFunc(s.caPEM)))

	authed("GET /v1/nodes", true, s.listNodes)
	authed("GET /v1/status", false, s.status)

	// The console (DESIGN §7): static files; it calls the API above with the key the reader
	// gives it, so it needs no authentication of its own. Mounted for every method, so that
	// the console's own 405 (with its CSP) answers a POST, not the API's JSON error.
	s.mux.Handle(console.Prefix, s.instrument(console.Prefix, console.Handler()))

	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// Anything else: 404 or 405 in the API's error shape, not net/http's text.
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, errorf(http.StatusNotFound, client.CodeNotFound, "", "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
}

// ServeHTTP makes the server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// ServeMux answers a known path with the wrong method by itself, in plain text; find
	// that case first so that it gets the API's error shape.
	if _, pattern := s.mux.Handler(r); pattern == "" || pattern == "/" {
		if r2 := r.Clone(r.Context()); s.pathKnown(r2) {
			s.writeError(w, r, errorf(http.StatusMethodNotAllowed, client.CodeMethodNotAllowed, "", "%s is not allowed on %s", r.Method, r.URL.Path))
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// pathKnown reports whether some method is routed for r's path.
func (s *Server) pathKnown(r *http.Request) bool {
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		r.Method = m
		if _, p := s.mux.Handler(r); p != "" && p != "/" {
			return true
		}
	}
	return false
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": "store: " + err.Error()})
		return
	}
	if s.ready != nil {
		if err := s.ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// statusWriter records the status code for metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap gives http.ResponseController the connection's writer, for flushing and deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		s.metrics.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		s.metrics.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}
