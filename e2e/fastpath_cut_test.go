package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
)

// idlePy opens one HTTPS connection to api.example.test, gets an answer on it, says
// "started", then waits up to 10 s for the connection to end, idle: the sandbox sends
// nothing more. It prints how the wait ended: "closed" (EOF), "cut <error>" or "survived",
// and after "survived" what became of a second request on the connection.
const idlePy = `
import socket, ssl
ctx = ssl.create_default_context()
s = ctx.wrap_socket(socket.create_connection(("api.example.test", 443), timeout=5), server_hostname="api.example.test")
s.sendall(b"GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
if not s.recv(4096).startswith(b"HTTP/1.1 200"):
    raise SystemExit("no answer")
print("started", flush=True)
s.settimeout(10)
try:
    print("closed" if not s.recv(1) else "data")
except socket.timeout:
    # Not told: does the connection still carry a request?
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
        s.settimeout(3)
        print("survived, then", "answered" if s.recv(4096).startswith(b"HTTP/1.1 200") else "not answered")
    except Exception as e:
        print("survived, then cut", type(e).__name__)
except Exception as e:
    print("cut", type(e).__name__)
`

// TestTighteningCutsAnIdleConnection: a kept-alive HTTPS connection that sits idle (the
// sandbox waits for the server, sending nothing) is cut when the policy stops allowing its
// name: the sandbox learns at once, it is not left waiting on a flow the gateway forgot.
// The proxy closes its side; with the fast path, the gateway deletes the flow's conntrack
// entry, which the sandbox only notices if something tells it.
func TestTighteningCutsAnIdleConnection(t *testing.T) {
	eachGWMode(t, testTighteningCutsAnIdleConnection)
}

func testTighteningCutsAnIdleConnection(t *testing.T, m gwMode) {
	l := newGWLab(t, m.args...)
	vm := l.vm("idle", &policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"api.example.test"}})
	r, stderr := l.startPy(t, vm, 20*time.Second, []string{"SSL_CERT_FILE=" + l.caFile}, idlePy)
	if m.fast() && l.fastConnects(vm, "api.example.test") == 0 {
		t.Error("the connection did not take the fast path")
	}
	time.Sleep(300 * time.Millisecond) // the last ACKs of the answer are out: the flow is idle
	l.setVM("idle", policy.Policy{AllowHTTPS: true, AllowedDomains: []string{"other.example.test"}})
	start := time.Now()
	line, _ := r.ReadString('\n')
	took := time.Since(start)
	if line != "closed\n" && !strings.HasPrefix(line, "cut ") {
		t.Fatalf("the idle connection was not cut: %q after %s\n%s", line, took, stderr.String())
	}
	if took > 3*time.Second {
		t.Errorf("cut after %s (%q)", took, line)
	}
}
