package intercept

import (
	"encoding/base64"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
)

// naiveReplace is the scanner's meaning, written the slow and obvious way: at every
// position where the prefix starts, try every end up to maxPlaceholder bytes on, longest
// first, over placeholder characters only, whose last 25 bytes are '-' and 24 letters or
// digits; the first known placeholder is replaced (or refused), and the scan goes on
// after it.
func naiveReplace(secrets Secrets, host, v string) (out string, applied, refused []string) {
	var b strings.Builder
	for pos := 0; pos < len(v); {
		if !strings.HasPrefix(v[pos:], PlaceholderPrefix) {
			b.WriteByte(v[pos])
			pos++
			continue
		}
		found := false
		for k := min(len(v), pos+maxPlaceholder); k >= pos+minPlaceholder; k-- {
			cand := v[pos:k]
			if placeholderRun(cand) != len(cand) || cand[len(cand)-placeholderTail-1] != '-' || !alnum(cand[len(cand)-placeholderTail:]) {
				continue
			}
			sec, ok := secrets.Lookup(cand, host)
			if !ok {
				continue
			}
			switch {
			case !sec.ForHost:
				refused = note(refused, sec.Name)
				b.WriteString(cand)
			case !validHeaderValue(sec.Value):
				b.WriteString(cand)
			default:
				applied = note(applied, sec.Name)
				b.WriteString(sec.Value)
			}
			pos, found = k, true
			break
		}
		if !found {
			b.WriteByte(v[pos])
			pos++
		}
	}
	return b.String(), applied, refused
}

func FuzzScan(f *testing.F) {
	p := func(name string) string { return PlaceholderPrefix + name + "-" + tail }
	for _, s := range []string{
		"", "Bearer " + p("a"), p("a") + p("a-b"), p("far") + "," + p("a"), p("a") + "_x-" + tail,
		PlaceholderPrefix + PlaceholderPrefix + "a-" + tail, p("x.y_z") + ".." + p("a"),
		strings.Repeat(PlaceholderPrefix, 20) + "a-" + tail, p("a")[:30],
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if i, want := indexPrefix(v), strings.Index(v, PlaceholderPrefix); i != want {
			t.Fatalf("%q: indexPrefix %d, strings.Index %d", v, i, want)
		}
		s := secretScan{secrets: scanSecrets, host: apiHost}
		got, changed := s.replace(v)
		want, applied, refused := naiveReplace(scanSecrets, apiHost, v)
		if got != want || changed != (len(s.applied) > 0) || !slices.Equal(s.applied, applied) || !slices.Equal(s.refused, refused) {
			t.Fatalf("%q: scanner %q %v %q %q; reference %q %q %q", v, got, changed, s.applied, s.refused, want, applied, refused)
		}
		if !strings.Contains(v, PlaceholderPrefix) && (changed || got != v) {
			t.Fatalf("%q: changed without a placeholder", v)
		}
		if strings.Contains(got, "VFAR") && !strings.Contains(v, "VFAR") {
			t.Fatalf("%q: the value of a secret for another host went in", v)
		}
		// The same inside Basic credentials.
		s = secretScan{secrets: scanSecrets, host: apiHost}
		basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+v))
		out, _ := s.value("Authorization", basic)
		dec, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(out, "Basic "))
		if err != nil || string(dec) != "u:"+want {
			t.Fatalf("%q in Basic credentials: %q (%v), want %q", v, dec, err, "u:"+want)
		}
	})
}

func FuzzRequestPath(f *testing.F) {
	for _, s := range []string{
		"/", "/a/b", "/a/./b/../c", "/a/%2e%2E/c", "/a%2Fb/c", "/a/..%2fb", `/a/..\b`, "/..;x/a",
		"/a/b/..", "/a/.", "/..", "//a//../b", "/a/%252e%252e/b", "*", "/%zz", "/a;b/./c", "/a/.../b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.ParseRequestURI(raw)
		if err != nil || u.RawQuery != "" || u.Host != "" || u.Opaque != "" {
			return
		}
		forward, judged, err := requestPath(u)
		if err != nil {
			if forward != "" || judged != "" {
				t.Fatalf("%q: error %v with paths %q %q", raw, err, forward, judged)
			}
			return
		}
		if forward == "*" {
			return
		}
		if !strings.HasPrefix(forward, "/") || !strings.HasPrefix(judged, "/") {
			t.Fatalf("%q: %q %q", raw, forward, judged)
		}
		if dec, err := url.PathUnescape(forward); err != nil || dec != judged {
			t.Fatalf("%q: judged %q is not forward %q decoded (%q, %v)", raw, judged, forward, dec, err)
		}
		// No dot segment is left for the origin, however it splits the path.
		for _, part := range strings.FieldsFunc(judged, func(r rune) bool { return r == '/' || r == '\\' }) {
			if dotSegment(part) != 0 {
				t.Fatalf("%q: %q still has a dot segment (%q)", raw, judged, forward)
			}
		}
		// What goes up is decided the same way again.
		u2, err := url.ParseRequestURI(forward)
		if err != nil {
			t.Fatalf("%q: forward %q does not parse: %v", raw, forward, err)
		}
		if f2, j2, err := requestPath(u2); err != nil || f2 != forward || j2 != judged {
			t.Fatalf("%q: not stable: %q %q -> %q %q %v", raw, forward, judged, f2, j2, err)
		}
	})
}

func FuzzSameHost(f *testing.F) {
	for _, s := range []string{apiHost, "API.EXAMPLE.TEST.", apiHost + ":443", apiHost + ":8443", apiHost + ":",
		"[::1]:443", "127.0.0.1", otherHost, "", ":443", apiHost + ":443:443", "xn--bcher-kva.test"} {
		f.Add(s)
	}
	st := &connState{c: &Conn{SNI: apiHost}}
	f.Fuzz(func(t *testing.T, h string) {
		if !st.sameHost(h) {
			return
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			host, port = h, ""
		}
		n, nerr := policy.NormalizeName(host)
		if nerr != nil || n != apiHost || (port != "" && port != "443") {
			t.Fatalf("%q taken for %s", h, apiHost)
		}
	})
}
