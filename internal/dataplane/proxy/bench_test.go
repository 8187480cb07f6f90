package proxy

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/policy"
)

// BenchmarkDenied measures a new connection's way through the proxy up to its decision,
// against the real view and the real events hub: read the request, find the session (by
// its credentials) or the VM (by its source address), decide, record, refuse. The
// destination is denied by its name, so nothing is resolved or dialled: what is measured is
// egressd's per-connection work plus loopback TCP. "parallel" opens connections from every
// core at once, which is where a lock per connection would show.
func BenchmarkDenied(b *testing.B) {
	log := slog.New(slog.DiscardHandler)
	// The sandbox's address is the benchmark client's, 127.0.0.1.
	live := newLiveStore(b, log, store.VM{ID: "vmb", Network: store.Network{Mode: "netns", Address: "127.0.0.1", Gateway: "127.0.0.2"}}, "ses_b", "tok_b",
		policy.Policy{AllowHTTPS: true, AllowHTTP: true, AllowedDomains: []string{"api.example.test"}},
		policy.Policy{AllowHTTPS: true, AllowHTTP: true, AllowedDomains: []string{"api.example.test"}})
	hub, err := events.NewHub(events.HubConfig{Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { hub.Close() })
	p, err := New(Config{
		Sessions: FromView(live.view), Sandboxes: SandboxesFromView(live.view), Sink: hub, Logger: log,
		OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) { return netip.MustParseAddrPort(webIP + ":80"), nil },
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	explicit, transparent := listen(b), listen(b)
	go p.Serve(explicit)
	go p.ServeTransparent(transparent)

	auth := base64.StdEncoding.EncodeToString([]byte("ses_b:tok_b"))
	for _, bc := range []struct{ name, addr, request string }{
		{"explicit", explicit.Addr().String(), "CONNECT blocked.example.test:443 HTTP/1.1\r\nHost: blocked.example.test:443\r\nProxy-Authorization: Basic " + auth + "\r\n\r\n"},
		{"transparent", transparent.Addr().String(), "GET / HTTP/1.1\r\nHost: blocked.example.test\r\n\r\n"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.Run("serial", func(b *testing.B) {
				for b.Loop() {
					if err := refused(bc.addr, bc.request); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := refused(bc.addr, bc.request); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}

// refused opens a connection to the proxy at addr, sends request and requires a 403.
func refused(addr, request string) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusForbidden {
		return fmt.Errorf("%s, want 403", resp.Status)
	}
	// Read to the proxy's close, so that the proxy closes first and the TIME_WAIT is its.
	_, err = io.Copy(io.Discard, br)
	return err
}
