package intercept

import (
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/dataplane/events"
)

const (
	realKey   = "sk-real-VALUE-0123456789" // what the origin must receive
	otherReal = "ghp-other-VALUE-987654"
)

func TestSecretReplacedTowardItsHost(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		o := &recorder{}
		e := newEnv(t, envOpts{handler: o})
		ph := e.secrets.add("openai", realKey, apiHost)
		ph2 := e.secrets.add("gh-token", otherReal, apiHost, otherHost)
		req := newRequest(t, "POST", "https://"+apiHost+"/v1/chat?key="+ph, strings.NewReader(`{"key":"`+ph+`"}`))
		req.Header.Set("Authorization", "Bearer "+ph)
		req.Header.Add("X-Both", ph+","+ph2+";"+ph)
		req.Header.Add("X-Both", "second value "+ph2)
		req.Header.Set("Cookie", "a=1; token="+ph2)
		req.Header.Set("X-Unknown", PlaceholderPrefix+"nosuch-AAAAAAAAAAAAAAAAAAAAAAAA") // looks like one, is none
		resp, _ := get(t, e.client(h2), req)
		if resp.StatusCode != 200 {
			t.Fatalf("%d", resp.StatusCode)
		}
		got := o.last(t)
		if a := got.Header.Get("Authorization"); a != "Bearer "+realKey {
			t.Errorf("Authorization = %q", a)
		}
		if b := got.Header.Values("X-Both"); !slices.Equal(b, []string{realKey + "," + otherReal + ";" + realKey, "second value " + otherReal}) {
			t.Errorf("X-Both = %q", b)
		}
		if c := got.Header.Get("Cookie"); c != "a=1; token="+otherReal {
			t.Errorf("Cookie = %q", c)
		}
		if u := got.Header.Get("X-Unknown"); u != PlaceholderPrefix+"nosuch-AAAAAAAAAAAAAAAAAAAAAAAA" {
			t.Errorf("an unknown placeholder-like value changed: %q", u)
		}
		// Never in the body, the path or the query.
		if got.Body != `{"key":"`+ph+`"}` || got.URI != "/v1/chat?key="+ph {
			t.Errorf("body %q, URI %q: a placeholder outside header values was replaced", got.Body, got.URI)
		}
		r := e.sink.wait(t, 1)[0]
		if !slices.Equal(r.Secrets, []string{"openai", "gh-token"}) && !slices.Equal(r.Secrets, []string{"gh-token", "openai"}) {
			t.Errorf("record names %q", r.Secrets)
		}
		if j := e.sink.json(t); strings.Contains(j, realKey) || strings.Contains(j, otherReal) {
			t.Errorf("a secret's value is in a record: %s", j)
		}
	})
}

func TestSecretRefusedTowardAnotherHost(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		o := &recorder{}
		e := newEnv(t, envOpts{handler: o})
		ok := e.secrets.add("gh", otherReal, apiHost)
		ph := e.secrets.add("openai", realKey, otherHost) // not for the SNI
		req := newRequest(t, "GET", "https://"+apiHost+"/x", nil)
		req.Header.Set("Authorization", "Bearer "+ph)
		req.Header.Set("X-Fine", ok) // one that would be fine does not save the request
		resp, body := get(t, e.client(h2), req)
		if resp.StatusCode != 403 || resp.Header.Get("X-Egress-Reason") != string(ReasonSecretNotForHost) {
			t.Fatalf("%d %v", resp.StatusCode, resp.Header)
		}
		if !strings.Contains(body, "openai") || strings.Contains(body, realKey) || strings.Contains(body, otherReal) {
			t.Errorf("body %q", body)
		}
		for _, v := range resp.Header {
			if strings.Contains(strings.Join(v, " "), realKey) {
				t.Errorf("a value in the response header: %v", resp.Header)
			}
		}
		if n := len(o.all()); n != 0 || e.dials.Load() != 0 {
			t.Fatalf("the origin got %d requests, %d dials: nothing may go up", n, e.dials.Load())
		}
		r := e.sink.wait(t, 1)[0]
		if r.Decision != events.Deny || r.Reason != ReasonSecretNotForHost || !slices.Equal(r.Secrets, []string{"openai"}) || r.Status != 403 {
			t.Errorf("record %+v", r)
		}
		if j := e.sink.json(t); strings.Contains(j, realKey) || strings.Contains(j, otherReal) {
			t.Errorf("a secret's value is in a record: %s", j)
		}
	})
}

func TestSecretInBasicCredentials(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		o := &recorder{}
		e := newEnv(t, envOpts{handler: o})
		ph := e.secrets.add("pypi", realKey, apiHost)
		// What git and pip send for https://user:placeholder@host/.
		req := newRequest(t, "GET", "https://"+apiHost+"/simple/", nil)
		req.URL.User = url.UserPassword("__token__", ph)
		get(t, e.client(h2), req)
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte("__token__:"+realKey))
		if got := o.last(t).Header.Get("Authorization"); got != want {
			t.Fatalf("Authorization = %q, want %q", got, want)
		}
	})
}

func TestSecretRotationAppliesToNextRequest(t *testing.T) {
	o := &recorder{}
	e := newEnv(t, envOpts{handler: o})
	ph := e.secrets.add("openai", realKey, apiHost)
	c := e.client(true)
	for _, v := range []string{realKey, "rotated-" + realKey} {
		e.secrets.rotate(ph, v)
		req := newRequest(t, "GET", "https://"+apiHost+"/x", nil)
		req.Header.Set("Authorization", "Bearer "+ph)
		get(t, c, req)
		if got := o.last(t).Header.Get("Authorization"); got != "Bearer "+v {
			t.Fatalf("Authorization = %q, want the value %q", got, v)
		}
	}
	if e.accepted.Load() != 1 {
		t.Fatal("the requests did not share a connection")
	}
}

func TestSecretValueThatCannotBeAHeader(t *testing.T) {
	o := &recorder{}
	e := newEnv(t, envOpts{handler: o})
	ph := e.secrets.add("bad", "line\r\nX-Injected: 1", apiHost)
	req := newRequest(t, "GET", "https://"+apiHost+"/x", nil)
	req.Header.Set("Authorization", "Bearer "+ph)
	resp, body := get(t, e.client(false), req)
	if resp.StatusCode != 502 || !strings.Contains(body, "secret bad") || strings.Contains(body, "Injected") {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if len(o.all()) != 0 {
		t.Fatal("the request went up")
	}
}

// fakeSecrets is a Secrets of fixed placeholders for the scanner's unit tests.
type fakeSecrets map[string]testSecret

func (f fakeSecrets) Lookup(p, host string) (Secret, bool) {
	s, ok := f[p]
	if !ok {
		return Secret{}, false
	}
	if !slices.Contains(s.domains, host) {
		return Secret{Name: s.name}, true
	}
	return Secret{Name: s.name, ForHost: true, Value: s.value}, true
}

const tail = "ABCDEFGHIJKLMNOPQRSTUVWX" // 24

var scanSecrets = fakeSecrets{
	PlaceholderPrefix + "a-" + tail:        {"a", "VA", []string{apiHost}},
	PlaceholderPrefix + "a-b-" + tail:      {"a-b", "VAB", []string{apiHost}},
	PlaceholderPrefix + "far-" + tail:      {"far", "VFAR", []string{otherHost}},
	PlaceholderPrefix + "x.y_z-" + tail:    {"x.y_z", "VXYZ", []string{apiHost}},
	PlaceholderPrefix + "a-" + tail + "-n": {"never", "VN", []string{apiHost}}, // not a placeholder's shape
}

func TestScanner(t *testing.T) {
	p := func(name string) string { return PlaceholderPrefix + name + "-" + tail }
	for _, tc := range []struct {
		in, out string
		applied []string
		refused []string
	}{
		{"nothing here", "nothing here", nil, nil},
		{p("a"), "VA", []string{"a"}, nil},
		{"Bearer " + p("a"), "Bearer VA", []string{"a"}, nil},
		{p("a") + p("a"), "VAVA", []string{"a"}, nil},
		{p("a-b"), "VAB", []string{"a-b"}, nil},
		{p("a") + "_suffix", "VA_suffix", []string{"a"}, nil}, // the longest known one wins
		{p("a") + "-" + tail, "VA-" + tail, []string{"a"}, nil},
		{p("x.y_z") + ".", "VXYZ.", []string{"x.y_z"}, nil},
		{"x" + p("a") + "y", "xVAy", []string{"a"}, nil},
		{PlaceholderPrefix + PlaceholderPrefix + "a-" + tail, PlaceholderPrefix + "VA", []string{"a"}, nil},
		{p("far"), p("far"), nil, []string{"far"}},
		{p("a") + " " + p("far"), "VA " + p("far"), []string{"a"}, []string{"far"}},
		{PlaceholderPrefix + "a-" + tail[:23], PlaceholderPrefix + "a-" + tail[:23], nil, nil},
		{strings.ToUpper(p("a")), strings.ToUpper(p("a")), nil, nil},
	} {
		s := secretScan{secrets: scanSecrets, host: apiHost}
		got, changed := s.replace(tc.in)
		if got != tc.out || changed != (tc.in != tc.out) || !slices.Equal(s.applied, tc.applied) || !slices.Equal(s.refused, tc.refused) {
			t.Errorf("%q: got %q (changed %v), applied %q, refused %q; want %q, %q, %q",
				tc.in, got, changed, s.applied, s.refused, tc.out, tc.applied, tc.refused)
		}
	}
}

func TestSecretsIn(t *testing.T) {
	h := http.Header{
		"X-A":           {"x " + PlaceholderPrefix + "a-" + tail},
		"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+PlaceholderPrefix+"far-"+tail))},
	}
	got := SecretsIn(h, scanSecrets, apiHost)
	slices.Sort(got)
	if !slices.Equal(got, []string{"a", "far"}) || h.Get("X-A") != "x "+PlaceholderPrefix+"a-"+tail {
		t.Fatalf("%q, header %v", got, h)
	}
	if got := SecretsIn(http.Header{"X": {"plain"}}, scanSecrets, apiHost); got != nil {
		t.Fatalf("%q", got)
	}
}

func TestScannerHeaderNamesUntouched(t *testing.T) {
	s := secretScan{secrets: scanSecrets, host: apiHost}
	name := http.CanonicalHeaderKey(PlaceholderPrefix + "a-" + tail)
	h := http.Header{name: {"plain"}, "X-V": {PlaceholderPrefix + "a-" + tail}}
	s.header(h)
	s.apply(h)
	if h.Get(name) != "plain" || h.Get("X-V") != "VA" || len(h) != 2 {
		t.Fatalf("%v", h)
	}
}

func TestScannerAllocatesNothingWithoutPrefix(t *testing.T) {
	h := http.Header{"Authorization": {"Bearer sk-abc"}, "Accept": {"*/*"}, "Cookie": {strings.Repeat("x=y; ", 40)}}
	allocs := testing.AllocsPerRun(100, func() {
		s := secretScan{secrets: scanSecrets, host: apiHost}
		s.header(h)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations for a header without placeholders", allocs)
	}
}

func BenchmarkScan(b *testing.B) {
	plain := http.Header{
		"Authorization": {"Bearer sk-abc"}, "Accept": {"*/*"}, "User-Agent": {"curl/8"},
		"Cookie": {strings.Repeat("session=abcdef; ", 20)},
	}
	with := plain.Clone()
	with["Authorization"] = []string{"Bearer " + PlaceholderPrefix + "a-" + tail}
	for _, bc := range []struct {
		name string
		h    http.Header
	}{{"none", plain}, {"one", with}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s := secretScan{secrets: scanSecrets, host: apiHost}
				s.header(bc.h)
			}
		})
	}
}

func TestSecretKeptOutOfAnswerHeaders(t *testing.T) {
	protos(t, func(t *testing.T, h2 bool) {
		e := newEnv(t, envOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// An origin that echoes the key it got, in its header and its trailer.
			w.Header().Set("X-Echo", "you sent "+r.Header.Get("Authorization"))
			w.Header().Set("Trailer", "X-Echo-Trailer")
			io.WriteString(w, "ok")
			w.Header().Set("X-Echo-Trailer", r.Header.Get("Authorization"))
		})})
		ph := e.secrets.add("openai", realKey, apiHost)
		req := newRequest(t, "GET", "https://"+apiHost+"/x", nil)
		req.Header.Set("Authorization", "Bearer "+ph)
		resp, _ := get(t, e.client(h2), req)
		if got := resp.Header.Get("X-Echo"); got != "you sent Bearer "+ph {
			t.Errorf("X-Echo = %q", got)
		}
		if got := resp.Trailer.Get("X-Echo-Trailer"); got != "Bearer "+ph {
			t.Errorf("trailer = %q", got)
		}
	})
}
