package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// config is every flag of egressd. Each flag has an environment twin: --api-listen is
// EGRESSD_API_LISTEN. A flag on the command line wins over its twin.
type config struct {
	apiListen       string
	proxyListen     string
	socksListen     string
	dataDir         string
	storeURL        string
	role            role
	defaultPolicy   string
	packageManagers string
	publicCIDRs     prefixList
	hardDenyCIDRs   prefixList
	dnsUpstream     string
	auditLog        string
	eventsKeep      int   // records of the event ring in <data-dir>/events; 0: off
	eventsKeepBytes int64 // bytes of it; 0: off
	sandboxCIDR     netip.Prefix
	transparent     bool
	transparentPort uint16
	fastPath        bool
	dnsPort         uint16
	rateLimit       float64
	maxTunnels      int
	logLevel        string
	logFormat       string
	nodeID          string
	nodeLabels      labelFlag
	drainTimeout    time.Duration
	version         bool
	// Interception (DESIGN §2.7; secrets.go).
	secretsKeyFile string
	caCertFile     string
	caKeyFile      string
	upstreamCAFile string
}

// Bounds of --events-keep and --events-keep-bytes: every kept record is loaded into memory
// at start, and a ring's segment (an eighth of it) must hold a large record.
const (
	maxEventsKeep      = 1000000
	minEventsKeepBytes = 1 << 20
)

// parseBytes reads a size: a whole number of bytes, optionally with KiB, MiB, GiB or TiB.
func parseBytes(s string) (int64, error) {
	num, unit := strings.TrimSpace(s), int64(1)
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, unit = strings.TrimSpace(rest), u.size
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/unit {
		return 0, fmt.Errorf("%q is not a size: give bytes, or a whole number with KiB, MiB, GiB or TiB, such as 64MiB", s)
	}
	return n * unit, nil
}

// prefixList is a comma-separated list of CIDRs.
type prefixList []netip.Prefix

func (l *prefixList) String() string {
	parts := make([]string, len(*l))
	for i, p := range *l {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

func (l *prefixList) Set(s string) error {
	*l = nil
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		// The one CIDR parser, so that flags and policies read ranges alike.
		p, err := policy.ParseCIDR(part)
		if err != nil {
			return err
		}
		*l = append(*l, p)
	}
	return nil
}

// labelFlag is --node-label name=value, repeatable; one value may also hold a comma-separated
// list (the environment twin's form). A name given twice takes the last value.
type labelFlag map[string]string

func (l *labelFlag) String() string {
	parts := make([]string, 0, len(*l))
	for k, v := range *l {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func (l *labelFlag) Set(s string) error {
	if *l == nil {
		*l = make(labelFlag)
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok || k == "" {
			return fmt.Errorf("%q is not a label: give name=value, such as zone=eu-1", part)
		}
		(*l)[k] = v
	}
	return nil
}

// portFlag is a uint16 flag.
func portFlag(fs *flag.FlagSet, p *uint16, name string, def uint16, usage string) {
	*p = def
	fs.Func(name, fmt.Sprintf("%s (default %d)", usage, def), func(s string) error {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("%q is not a port (1 to 65535)", s)
		}
		*p = uint16(n)
		return nil
	})
}

func parseFlags(args []string) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("egressd", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "egressd: an egress firewall for code sandboxes.\n\nUsage: egressd [flags]\n\nEvery flag can also be set by its environment twin: --api-listen is EGRESSD_API_LISTEN.\n\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.apiListen, "api-listen", "127.0.0.1:8470", "address of the HTTP API")
	fs.StringVar(&c.proxyListen, "proxy-listen", "127.0.0.1:8471", "address of the explicit proxy (sessions' proxy_url points here; with --role api, only that)")
	fs.StringVar(&c.socksListen, "socks-listen", "", "address of the SOCKS5 listener (RFC 1928, username/password = session ID/token; sessions' socks_url points here; with --role api, only that) (default off)")
	fs.StringVar(&c.dataDir, "data-dir", "./egressd-data", "directory of the embedded SQLite store and admin.key")
	fs.StringVar(&c.storeURL, "store", "", "a postgres:// URL to use PostgreSQL instead of the embedded store (a fleet's shared store)")
	c.role = roleAll
	fs.Func("role", "what this process serves: all, api (the HTTP API only) or gateway (the data plane, with /healthz, /readyz, /metrics and /v1/status) (default all)", func(s string) error {
		r, err := parseRole(s)
		c.role = r
		return err
	})
	fs.StringVar(&c.defaultPolicy, "default-policy", "", "JSON policy file for sessions whose session and VM have no policy (deny-all when unset)")
	fs.StringVar(&c.packageManagers, "package-managers-file", "", `JSON file extending or replacing the package-manager preset: {"managers": {"npm": ["registry.npm.test"]}, "replace": false}`)
	fs.Var(&c.publicCIDRs, "public-cidrs", "comma-separated ranges treated as public internet (labs and tests)")
	fs.Var(&c.hardDenyCIDRs, "hard-deny-cidrs", "comma-separated ranges denied whatever any policy says, added to the built-in list")
	fs.StringVar(&c.dnsUpstream, "dns-upstream", "", "resolver egressd asks (host:port; the system's when unset)")
	fs.StringVar(&c.auditLog, "audit-log", "", "JSON-lines file of every decision")
	fs.IntVar(&c.eventsKeep, "events-keep", events.DefaultBuffer, "newest decision records kept on disk in <data-dir>/events, so that the events API, follow and suggestions still see them after a restart (0: off; at most 1000000, each ~1 KiB of memory when loaded)")
	c.eventsKeepBytes = 64 << 20
	fs.Func("events-keep-bytes", "bytes of disk the kept decision records may take, such as 64MiB or 1GiB (0: off; at least 1MiB) (default 64MiB)", func(s string) error {
		n, err := parseBytes(s)
		c.eventsKeepBytes = n
		return err
	})
	c.sandboxCIDR = netip.MustParsePrefix("100.96.0.0/16")
	fs.Func("sandbox-cidr", "IPv4 range sandbox networks are taken from, a /30 each (transparent mode) (default 100.96.0.0/16)", func(s string) error {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() || p.Masked() != p || p.Bits() > 28 {
			return fmt.Errorf("%q is not an IPv4 range of at least /28 without host bits", s)
		}
		c.sandboxCIDR = p
		return nil
	})
	fs.BoolVar(&c.transparent, "transparent", false, "run the transparent gateway: sandbox network namespaces, nftables, the transparent proxy and the DNS filter (Linux, root)")
	portFlag(fs, &c.transparentPort, "transparent-port", 15001, "port of the transparent proxy on the sandboxes' gateway addresses")
	fs.BoolVar(&c.fastPath, "fast-path", false, "with --transparent: let the kernel forward TLS on 443 to addresses the DNS filter answered, once egressd has verified the ClientHello from the packets (NFQUEUE); intercepted names and allowed_cidrs destinations stay with the transparent proxy, and a flow that cannot be verified is reset")
	portFlag(fs, &c.dnsPort, "dns-filter-port", 15353, "port of the DNS filter on the sandboxes' gateway addresses")
	fs.IntVar(&c.maxTunnels, "proxy-max-tunnels", 1024, "open connections allowed per session through the proxy")
	fs.Float64Var(&c.rateLimit, "api-rate-limit", 100, "API requests per second allowed per key, bursts of twice that (0: unlimited)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.nodeID, "node-id", "", "this node's ID in a fleet (GET /v1/nodes, GET /v1/status, ?wait=fleet), unique per store (default: the host name)")
	fs.Var(&c.nodeLabels, "node-label", "a label of this node, name=value, for placing VMs with node_selector (repeatable; its environment twin takes a comma-separated list)")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 10*time.Second, "on SIGTERM or SIGINT, how long open connections and API requests may take to finish before they are closed; a second signal exits at once")
	fs.StringVar(&c.secretsKeyFile, "secrets-key-file", "", "file of the 32-byte key that seals secrets and the CA's key in the store (raw or 64 hex digits, mode 0600; every node of a fleet needs the same one) (default <data-dir>/secrets.key, created on first start)")
	fs.StringVar(&c.caCertFile, "ca-cert-file", "", "PEM certificate of your own interception CA, with --ca-key-file (default: egressd's own CA, made on first start and kept in the store)")
	fs.StringVar(&c.caKeyFile, "ca-key-file", "", "PEM private key of --ca-cert-file (mode 0600)")
	fs.StringVar(&c.upstreamCAFile, "upstream-ca-file", "", "PEM certificates trusted, besides the system's roots, for the upstream side of intercepted connections")
	fs.BoolVar(&c.version, "version", false, "print the version, the commit and the Go version, and exit")

	// Environment twins first, so that the command line overrides them. --version has none:
	// an EGRESSD_VERSION set for some other purpose must not turn the daemon into a printer.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "version" {
			return
		}
		name := "EGRESSD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q; egressd takes only flags", fs.Arg(0))
	}
	if c.drainTimeout <= 0 {
		return nil, fmt.Errorf("--drain-timeout %s: give a positive duration, such as 10s", c.drainTimeout)
	}
	if c.eventsKeep < 0 || c.eventsKeep > maxEventsKeep {
		return nil, fmt.Errorf("--events-keep %d: give 0 (off) to %d records", c.eventsKeep, maxEventsKeep)
	}
	if c.eventsKeepBytes != 0 && c.eventsKeepBytes < minEventsKeepBytes {
		return nil, fmt.Errorf("--events-keep-bytes %d: give 0 (off) or at least 1MiB", c.eventsKeepBytes)
	}
	if c.fastPath && !c.transparent {
		return nil, errors.New("--fast-path needs --transparent: it is part of the transparent gateway")
	}
	if c.nodeID == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("--node-id: the host name is not known (%v); set --node-id", err)
		}
		c.nodeID = host
	}
	return c, nil
}
