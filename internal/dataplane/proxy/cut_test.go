package proxy

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dataplane/view"
	"github.com/egressd/egressd/policy"
)

// TestCutRequestAnswersWithACode: a plain-HTTP request whose upstream is cut while it is in
// flight is answered with the decision that cut it, whose X-Egress-Reason is a code of the
// list, never a close reason such as "policy" or "session ended" (issue 10 item 2).
func TestCutRequestAnswersWithACode(t *testing.T) {
	tests := []struct {
		name   string
		cut    func(e *env)
		status int
		reason policy.Reason // "" for no X-Egress-Reason
	}{
		{"a tightening", func(e *env) {
			e.live.publish(set(t, policy.Policy{AllowHTTP: true, AllowedDomains: []string{"other.example.test"}}))
		}, http.StatusForbidden, policy.ReasonHostNotListed},
		{"the session ends", func(e *env) { e.live.cancelAll(view.CancelSessionEnded) }, http.StatusForbidden, policy.ReasonNoPolicy},
		{"a cut the policy no longer stands by", func(e *env) { e.live.cancelAll(view.CancelPolicy) }, http.StatusServiceUnavailable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, namesPolicy)
			c, br := e.dial()
			io.WriteString(c, "POST http://api.example.test/echo HTTP/1.1\r\nProxy-Authorization: "+e.authHeader()+
				"\r\nHost: api.example.test\r\nContent-Length: 10\r\n\r\nhello")
			deadline := time.Now().Add(5 * time.Second)
			for len(e.live.tracked()) == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			tt.cut(e)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := policy.Reason(resp.Header.Get("X-Egress-Reason"))
			if resp.StatusCode != tt.status || got != tt.reason {
				t.Errorf("%s, X-Egress-Reason %q; want %d, %q", resp.Status, got, tt.status, tt.reason)
			}
			if got != "" && !got.Known() {
				t.Errorf("X-Egress-Reason %q is no code of the list", got)
			}
		})
	}
}
