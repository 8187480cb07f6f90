package testnet

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Web serves HTTP on IP:80 and HTTPS on IP:443 for any host name, with handler, and logs the
// Host of every request it gets.
type Web struct {
	IP string

	mu    sync.Mutex
	hosts []string
}

// StartWeb listens on ip:80 and ip:443 (the caller needs root; see RequireRoot) until the
// test ends. A nil handler serves Handler().
func StartWeb(t testing.TB, ip string, ca *CA, handler http.Handler) *Web {
	t.Helper()
	return StartWebOn(t, Loopback, ip, ca, handler)
}

// StartWebOn is StartWeb with the sockets of n.
func StartWebOn(t testing.TB, n Net, ip string, ca *CA, handler http.Handler) *Web {
	t.Helper()
	w := &Web{IP: ip}
	if handler == nil {
		handler = Handler()
	}
	logged := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		w.hosts = append(w.hosts, r.Host)
		w.mu.Unlock()
		handler.ServeHTTP(rw, r)
	})
	for _, port := range []string{"80", "443"} {
		ln, err := n.Listen("tcp", net.JoinHostPort(ip, port))
		if err != nil {
			t.Fatalf("testnet: listen %s:%s: %v", ip, port, err)
		}
		srv := &http.Server{Handler: logged, ReadHeaderTimeout: 10 * time.Second}
		if port == "443" {
			ln = tls.NewListener(ln, ca.ServerConfig())
		}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	return w
}

// Hosts returns the Host of every request served so far.
func (w *Web) Hosts() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.hosts...)
}

// Handler is the default site of every fake host:
//
//	/            "hello from <host>"
//	/bytes?n=N   N bytes of 'x' (bulk transfer)
//	/slow?n=N    N chunks of 1 KiB, one every 20 ms (a transfer that lasts)
//	/pieces?n=N&seed=S&framing=length|chunked|close
//	             PiecesBody(N, S), written as a hand-written origin does: header and body
//	             apart, in many uneven pieces, with pauses; X-Body-SHA256 is its digest
//	/sha256      the length and digest of the request body ("N <hex>\n")
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/pieces", pieces)
	mux.HandleFunc("/sha256", sha256Body)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", r.Host)
	})
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		chunk := make([]byte, 64<<10)
		for i := range chunk {
			chunk[i] = 'x'
		}
		for n > 0 {
			k := min(n, len(chunk))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		chunk := make([]byte, 1024)
		for i := range chunk {
			chunk[i] = 's'
		}
		f, _ := w.(http.Flusher)
		for i := 0; i < n && r.Context().Err() == nil; i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			if f != nil {
				f.Flush()
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return mux
}
