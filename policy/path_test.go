package policy

import (
	"net/url"
	"strings"
	"testing"
)

func TestNormalizeRulePath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/", "/"},
		{"/v1", "/v1"},
		{"/v1/", "/v1/"},
		{"/v1/models", "/v1/models"},
		{"/%7Euser", "/~user"},
		{"/%7euser", "/~user"},
		{"/~user", "/~user"},
		{"/a%2db", "/a-b"},
		{"/caf%c3%a9", "/caf%C3%A9"},
		{"/café", "/caf%C3%A9"},
		{"/100%25", "/100%25"},
		{"/a%252e", "/a%252e"},   // a double-encoded dot stays data
		{"/x;v=1/y", "/x;v=1/y"}, // sub-delims stay literal
		{"/a:b@c", "/a:b@c"},     // so do ':' and '@'
		{"/a{b}", "/a%7Bb%7D"},   // what a URL may not hold literally is encoded
		{"/%41%42c", "/ABc"},     // unreserved letters are decoded
		{"/...", "/..."},         // three dots are a name, not a dot segment
		{"/.well-known/", "/.well-known/"},
	}
	for _, tt := range tests {
		got, err := NormalizeRulePath(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("NormalizeRulePath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			continue
		}
		if again, err := NormalizeRulePath(got); err != nil || again != got {
			t.Errorf("NormalizeRulePath(%q) = %q, %v: not idempotent", got, again, err)
		}
	}
}

func TestNormalizeRulePathRejects(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "empty"},
		{"v1/", `did you mean "/v1/"?`},
		{"api/v1", `does not start with "/"`},
		{"https://api.example.com/v1/", "is a URL"},
		{"//api.example.com/v1/", "is a URL"},
		{"/v1/?x=1", `has a query ("?x=1")`},
		{"/v1?", "has a query"},
		{"/v1#top", "fragment"},
		{"/v1/../admin", `"." or ".." segment`},
		{"/v1/./x", `"." or ".." segment`},
		{"/v1/..", `"." or ".." segment`},
		{"/v1/%2e%2e/admin", `"." or ".." segment`},
		{"/v1/%2E/x", `"." or ".." segment`},
		{"/v1/..;x/admin", `"..;x"`},
		{"/v1//x", "empty segment"},
		{"/v1%2Fx", "encoded slash"},
		{"/v1%2fx", "encoded slash"},
		{"/v1%5Cx", "encoded slash"},
		{`/v1\x`, "backslash"},
		{"/v1/%zz", "malformed percent-encoding"},
		{"/v1/%2", "malformed percent-encoding"},
		{"/v1/%", "malformed percent-encoding"},
		{"/a b", "space or a control character"},
		{"/a%20b", "space or a control character"},
		{"/a%00", "space or a control character"},
		{"/a%0Ab", "space or a control character"},
		{"/a\tb", "space or a control character"},
		{"/%C0%AE%C0%AE/", "not valid UTF-8"}, // overlong '.'
		{"/%FF", "not valid UTF-8"},
		{"/%C3", "not valid UTF-8"},
		{"/%C3/", "not valid UTF-8"},
		{"/" + strings.Repeat("a", MaxRulePathLen), "at most 1024"},
	}
	for _, tt := range tests {
		got, err := NormalizeRulePath(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NormalizeRulePath(%q) = %q, %v; want an error saying %q", tt.in, got, err, tt.want)
		}
	}
}

// TestRequestPathReadings: a request's path in the strict (RFC 3986) and loose (lenient
// servers) readings.
func TestRequestPathReadings(t *testing.T) {
	tests := []struct{ raw, strict, loose string }{
		{"/v1/models", "/v1/models", "/v1/models"},
		{"/v1/models?limit=5&x=/../admin", "/v1/models", "/v1/models"},
		{"/v1/../admin", "/admin", "/admin"},
		{"/v1/%2e%2e/admin", "/admin", "/admin"},
		{"/v1/%2E%2E/admin", "/admin", "/admin"},
		{"/v1/.%2e/admin", "/admin", "/admin"},
		{"/v1/./x", "/v1/x", "/v1/x"},
		{"/v1/.", "/v1/", "/v1/"},
		{"/v1/..", "/", "/"},
		{"/..", "/", "/"},
		{"/../../etc", "/etc", "/etc"},
		{"/a/b/../../../c", "/c", "/c"},
		{"/v1/..%2Fadmin", "/v1/..%2Fadmin", "/admin"},
		{"/v1/..%2fadmin", "/v1/..%2Fadmin", "/admin"},
		{"/v1/..%5Cadmin", "/v1/..%5Cadmin", "/admin"},
		{`/v1/..\admin`, "/v1/..%5Cadmin", "/admin"},
		{"/v1%2Fadmin", "/v1%2Fadmin", "/v1/admin"},
		{"/v1/..;/admin", "/v1/..;/admin", "/admin"},
		{"/v1/..%3B/admin", "/v1/..;/admin", "/admin"},
		{"/v1//../admin", "/v1/admin", "/admin"},
		{"//admin", "//admin", "/admin"},
		{"/v1/x/", "/v1/x/", "/v1/x/"},
		{"/%7Euser", "/~user", "/~user"},
		{"/a%252e%252e/", "/a%252e%252e/", "/a%252e%252e/"},
		{"/bücher", "/b%C3%BCcher", "/b%C3%BCcher"},
	}
	var sbuf, lbuf [pathScratch]byte
	for _, tt := range tests {
		rp := readRequestPath(tt.raw, sbuf[:0], lbuf[:0])
		if rp.bad != pathOK || string(rp.strict) != tt.strict || string(rp.loose) != tt.loose {
			t.Errorf("readRequestPath(%q) = strict %q, loose %q, bad %q; want %q, %q", tt.raw, rp.strict, rp.loose, rp.bad, tt.strict, tt.loose)
		}
	}
	for raw, bad := range map[string]badPath{
		"":            badPathNoSlash,
		"v1/x":        badPathNoSlash,
		"http://a/b":  badPathNoSlash,
		"/v1/%zz":     badPathPercent,
		"/v1/%":       badPathPercent,
		"/a%00b":      badPathControl,
		"/a b":        badPathControl,
		"/a\x7fb":     badPathControl,
		"/%C0%AE":     badPathUTF8,
		"/%ED%A0%80":  badPathUTF8, // a surrogate
		"/a#frag":     badPathFragment,
		"/a%2":        badPathPercent,
		"/ok?%zz":     pathOK, // the query is not judged
		"/%F0%9F%98€": badPathUTF8,
	} {
		rp := readRequestPath(raw, nil, nil)
		if rp.bad != bad {
			t.Errorf("readRequestPath(%q).bad = %q, want %q", raw, rp.bad, bad)
		}
	}
	if rp := readRequestPath("*", nil, nil); !rp.star || rp.bad != pathOK {
		t.Errorf("readRequestPath(*) = %+v, want the asterisk-form", rp)
	}
}

func TestPathHasPrefix(t *testing.T) {
	tests := []struct {
		path, prefix string
		want         bool
	}{
		{"/v1", "/v1", true},
		{"/v1/", "/v1", true},
		{"/v1/x", "/v1", true},
		{"/v1x", "/v1", false},
		{"/v", "/v1", false},
		{"/v1", "/v1/", false},
		{"/v1/", "/v1/", true},
		{"/v1/x/y", "/v1/", true},
		{"/anything", "/", true},
		{"/", "/", true},
		{"/v1%2Fx", "/v1", false}, // an encoded slash is not a boundary
		{"/V1/x", "/v1", false},   // paths are case-sensitive
	}
	for _, tt := range tests {
		if got := pathHasPrefix([]byte(tt.path), tt.prefix); got != tt.want {
			t.Errorf("pathHasPrefix(%q, %q) = %v, want %v", tt.path, tt.prefix, got, tt.want)
		}
	}
}

// removeDotSegments is RFC 3986 §5.2.4 written as the RFC does, on strings: an independent
// statement of the strict reading for paths without encoded separators.
func removeDotSegments(in string) string {
	out := ""
	for in != "" {
		switch {
		case strings.HasPrefix(in, "../"):
			in = in[3:]
		case strings.HasPrefix(in, "./"):
			in = in[2:]
		case strings.HasPrefix(in, "/./"):
			in = in[2:]
		case in == "/.":
			in = "/"
		case strings.HasPrefix(in, "/../"):
			in = in[3:]
			out = out[:max(strings.LastIndexByte(out, '/'), 0)]
		case in == "/..":
			in = "/"
			out = out[:max(strings.LastIndexByte(out, '/'), 0)]
		case in == "." || in == "..":
			in = ""
		default:
			i := 0
			if in[0] == '/' {
				i = 1
			}
			j := strings.IndexByte(in[i:], '/')
			if j < 0 {
				j = len(in) - i
			}
			out += in[:i+j]
			in = in[i+j:]
		}
	}
	return out
}

func FuzzRequestPath(f *testing.F) {
	for _, s := range []string{
		"/v1/models", "/v1/../admin", "/v1/%2e%2e/admin", "/v1/..%2Fadmin", "/v1/..;/admin", "/v1//../admin",
		`/v1/..\admin`, "/a/./b/../c/", "/%7Euser", "/caf%C3%A9", "/%C0%AE", "/a?b=/../c", "*", "/a#b", "//x", "/..",
		"/%25%32%65", "/a/%2E%2e/%2e/b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		rp := readRequestPath(raw, nil, nil)
		if rp.bad != pathOK || rp.star {
			return
		}
		for name, p := range map[string][]byte{"strict": rp.strict, "loose": rp.loose} {
			s := string(p)
			if s == "" || s[0] != '/' {
				t.Fatalf("%s reading of %q is %q: not absolute", name, raw, s)
			}
			for seg := range strings.SplitSeq(s[1:], "/") {
				if seg == "." || seg == ".." {
					t.Fatalf("%s reading of %q is %q: a dot segment is left", name, raw, s)
				}
			}
			// The canonical form is a fixed point: reading it again changes nothing.
			again := readRequestPath(s, nil, nil)
			got := again.strict
			if name == "loose" {
				got = again.loose
			}
			if again.bad != pathOK || string(got) != s {
				t.Fatalf("%s reading of %q is %q, and of that %q (%s)", name, raw, s, got, again.bad)
			}
		}
		// Loose reads every separator that strict reads, and more: it never keeps an
		// encoded slash or a dot segment before ';'.
		if strings.Contains(string(rp.loose), "%2F") || strings.Contains(string(rp.loose), "%5C") || strings.Contains(string(rp.loose), "//") {
			t.Fatalf("loose reading of %q is %q", raw, rp.loose)
		}
		// Strict is RFC 3986 §5.2.4 on the decoded path, when nothing decodes to a separator.
		path, _, _ := strings.Cut(raw, "?")
		if dec, err := url.PathUnescape(path); err == nil && !strings.ContainsAny(dec, `\`) &&
			strings.Count(dec, "/") == strings.Count(path, "/") {
			back, err := url.PathUnescape(string(rp.strict))
			if err != nil {
				t.Fatalf("strict reading of %q is %q, which does not decode: %v", raw, rp.strict, err)
			}
			if want := removeDotSegments(dec); back != want {
				t.Fatalf("strict reading of %q decodes to %q; RFC 3986 §5.2.4 gives %q", raw, back, want)
			}
		}
	})
}

func FuzzNormalizeRulePath(f *testing.F) {
	for _, s := range []string{"/", "/v1/", "/%7Euser", "/caf%c3%a9", "/a b", "v1", "/v1/../x", "/v1?x", "/%2F", "/a;b", "/..;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeRulePath(s)
		if err != nil {
			return
		}
		if again, err := NormalizeRulePath(n); err != nil || again != n {
			t.Fatalf("NormalizeRulePath(%q) = %q, then %q, %v", s, n, again, err)
		}
		// A rule path is a request path that both readings leave as it is, so a request
		// for exactly that path is inside it.
		rp := readRequestPath(n, nil, nil)
		if rp.bad != pathOK || string(rp.strict) != n || string(rp.loose) != n {
			t.Fatalf("rule path %q reads as %q / %q (%s)", n, rp.strict, rp.loose, rp.bad)
		}
		if !pathHasPrefix(rp.strict, n) {
			t.Fatalf("%q is not inside itself", n)
		}
	})
}
