package intercept

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"

	"github.com/egressd/egressd/policy"
)

// PlaceholderPrefix begins every placeholder: "egressd-secret-<name>-<24 random base32
// chars>" (DESIGN §2.7).
const PlaceholderPrefix = "egressd-secret-"

// ReasonSecretNotForHost is the denial of a request that carries the placeholder of a
// secret whose domains do not match the request's host (DESIGN §2.7): policy's code, named
// here too for the engine's callers.
const ReasonSecretNotForHost = policy.ReasonSecretNotForHost

// Shape of a placeholder.
const (
	placeholderTail = 24  // the random part, after the name and a '-'
	maxPlaceholder  = 256 // bytes, prefix to tail: longer runs are not looked up whole
	minPlaceholder  = len(PlaceholderPrefix) + 1 + 1 + placeholderTail
)

// SecretsIn returns the names of the secrets whose placeholders are in h's values (an
// "Authorization: Basic" value decoded), whatever their domains. The plain-HTTP paths of
// the proxies deny a request for which it returns any (secret_over_http): a placeholder
// is replaced only inside TLS, and must not travel in the clear either.
func SecretsIn(h http.Header, secrets Secrets, host string) []string {
	if secrets == nil {
		return nil
	}
	s := secretScan{secrets: secrets, host: host}
	s.header(h)
	names := s.applied
	for _, n := range s.refused {
		names = note(names, n)
	}
	for _, n := range s.invalid {
		names = note(names, n)
	}
	return names
}

// secretPut is a value put in place of its placeholder.
type secretPut struct{ placeholder, value string }

func appendPut(puts []secretPut, placeholder, value string) []secretPut {
	for _, p := range puts {
		if p.placeholder == placeholder {
			return puts
		}
	}
	return append(puts, secretPut{placeholder, value})
}

// minRedacted is the shortest value redact looks for: a shorter one would be found in
// unrelated text. Real keys are far longer.
const minRedacted = 8

// redact puts the placeholders back in place of their values in an answer's header
// values, so that an origin that echoes a request's header (an error message, a debugging
// endpoint, a redirect) does not hand the sandbox a value it was never to see. It returns h
// itself when there was nothing to replace.
func redact(h http.Header, puts []secretPut) http.Header {
	if len(puts) == 0 {
		return h
	}
	var out http.Header
	for k, vv := range h {
		for i, v := range vv {
			nv := v
			for _, p := range puts {
				if len(p.value) >= minRedacted && strings.Contains(nv, p.value) {
					nv = strings.ReplaceAll(nv, p.value, p.placeholder)
				}
			}
			if nv == v {
				continue
			}
			if out == nil {
				out = h.Clone()
			}
			out[k][i] = nv
		}
	}
	if out == nil {
		return h
	}
	return out
}

// redactText puts the placeholders back in place of their values in a message made from
// what the origin sent (a transport error quotes a malformed answer, which an origin may
// make of the key it got): such a message goes to the sandbox in a 502 and to the log. A
// value is looked for as it is and as %q quotes it (Go's errors quote what they cite).
func redactText(s string, puts []secretPut) string {
	for _, p := range puts {
		if len(p.value) < minRedacted {
			continue
		}
		s = strings.ReplaceAll(s, p.value, p.placeholder)
		if q := strconv.Quote(p.value); len(q) > 2 {
			s = strings.ReplaceAll(s, q[1:len(q)-1], p.placeholder)
		}
	}
	return s
}

// headerEdit is one header value to replace once the request is known to go up.
type headerEdit struct {
	key   string
	i     int
	value string
}

// secretScan finds and replaces the placeholders of one request's header values, for the
// request's host. Nothing is written into the request until apply: a request refused for
// a secret never holds a value.
type secretScan struct {
	secrets Secrets
	host    string

	edits   []headerEdit
	put     []secretPut // the values put in, with their placeholders
	applied []string    // names of the secrets put in place of their placeholders
	refused []string    // names of secrets whose domains do not match host
	invalid []string    // names of secrets whose value cannot go in a header value
}

// header scans every value of h.
func (s *secretScan) header(h http.Header) {
	for k, vv := range h {
		for i, v := range vv {
			if nv, changed := s.value(k, v); changed {
				s.edits = append(s.edits, headerEdit{k, i, nv})
			}
		}
	}
}

// refuseIn notes the secrets not for the host whose placeholders are in v, a part of the
// request that is never rewritten (the path, the query, a trailer): DESIGN
// §2.7 denies a request that carries a placeholder to any other host, wherever it is in
// the request's head. A placeholder for the host there is left as it is.
func (s *secretScan) refuseIn(v string) {
	if indexPrefix(v) < 0 {
		return
	}
	t := secretScan{secrets: s.secrets, host: s.host}
	t.replace(v)
	for _, n := range t.refused {
		s.refused = note(s.refused, n)
	}
}

// trailerRefused returns the secrets not for the host whose placeholders are in the
// trailer t's values (an Authorization value decoded), which are never rewritten.
func trailerRefused(secrets Secrets, host string, t http.Header) []string {
	if secrets == nil || len(t) == 0 {
		return nil
	}
	s := secretScan{secrets: secrets, host: host}
	for k, vv := range t {
		for _, v := range vv {
			s.refuseIn(v)
			if k == "Authorization" {
				if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(strings.TrimPrefix(strings.ToLower(v), "basic "))); err == nil {
					s.refuseIn(string(raw))
				}
			}
		}
	}
	return s.refused
}

// apply writes the replaced values into h.
func (s *secretScan) apply(h http.Header) {
	for _, e := range s.edits {
		h[e.key][e.i] = e.value
	}
}

// value returns v with its placeholders replaced, and whether any was.
func (s *secretScan) value(key, v string) (string, bool) {
	out, changed := s.replace(v)
	if key == "Authorization" {
		if nv, ok := s.basic(out); ok {
			return nv, true
		}
	}
	return out, changed
}

// basic replaces placeholders inside "Basic base64(user:password)" credentials, where a
// client that was given user:placeholder (in a URL, to git or pip) puts them.
func (s *secretScan) basic(v string) (string, bool) {
	const scheme = "basic "
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v[len(scheme):]))
	if err != nil || indexPrefix(string(raw)) < 0 {
		return "", false
	}
	nv, changed := s.replace(string(raw))
	if !changed {
		return "", false
	}
	enc := base64.StdEncoding.EncodeToString([]byte(nv))
	// The encoded credential holds the value too: an origin that echoes the header would
	// hand back base64(user:value), which the search for the value does not find. It goes
	// back to the encoded credential the client sent.
	s.put = appendPut(s.put, strings.TrimSpace(v[len(scheme):]), enc)
	return v[:len(scheme)] + enc, true
}

// replace returns v with every placeholder of a secret for the host replaced by its value,
// and whether any was; it notes the secrets found in s. Only a value that contains the
// prefix costs more than one substring search.
func (s *secretScan) replace(v string) (string, bool) {
	i := indexPrefix(v)
	if i < 0 {
		return v, false
	}
	var b strings.Builder
	last, runEnd := 0, -1
	for i >= 0 {
		if i >= runEnd {
			runEnd = i + placeholderRun(v[i:])
		}
		next := i + 1
		if end, sec, ok := s.match(v, i, runEnd); ok {
			switch {
			case !sec.ForHost:
				s.refused = note(s.refused, sec.Name)
			case !validHeaderValue(sec.Value):
				s.invalid = note(s.invalid, sec.Name)
			default:
				b.WriteString(v[last:i])
				b.WriteString(sec.Value)
				last = end
				s.applied = note(s.applied, sec.Name)
				s.put = appendPut(s.put, v[i:end], sec.Value)
			}
			next = end
		}
		if j := indexPrefix(v[next:]); j >= 0 {
			i = next + j
		} else {
			i = -1
		}
	}
	if last == 0 {
		return v, false
	}
	b.WriteString(v[last:])
	return b.String(), true
}

// indexPrefix is strings.Index(v, PlaceholderPrefix), searching for its rarest part first:
// "-secret-" starts with a byte that is rare in header values, where the prefix's first
// byte, 'e', is everywhere and sends strings.Index to a check at every one.
func indexPrefix(v string) int {
	const head, rest = "egressd", "-secret-"
	for off := len(head); off < len(v); {
		j := strings.Index(v[off:], rest)
		if j < 0 {
			return -1
		}
		j += off
		if v[j-len(head):j] == head {
			return j - len(head)
		}
		off = j + 1
	}
	return -1
}

// match finds the secret whose placeholder starts at v[i]: every end within the run of
// placeholder characters (up to runEnd) that is '-' and placeholderTail letters or digits
// is tried, longest first. Such ends are at least placeholderTail+1 bytes apart, so a
// placeholder costs a handful of lookups at most.
func (s *secretScan) match(v string, i, runEnd int) (int, Secret, bool) {
	hi := min(runEnd, i+maxPlaceholder)
	for k := hi; k >= i+minPlaceholder; k-- {
		if v[k-placeholderTail-1] != '-' || !alnum(v[k-placeholderTail:k]) {
			continue
		}
		if sec, ok := s.secrets.Lookup(v[i:k], s.host); ok {
			return k, sec, true
		}
	}
	return 0, Secret{}, false
}

// placeholderRun is the length of the run of placeholder characters that v starts with:
// letters, digits, '-', '_' and '.'.
func placeholderRun(v string) int {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(isAlnum(c) || c == '-' || c == '_' || c == '.') {
			return i
		}
	}
	return len(v)
}

func alnum(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// validHeaderValue reports whether v can be a header field value (RFC 9110 §5.5): no
// control character but HTAB, no DEL. A secret's value must not be able to end the header
// line it is put in.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// note adds name to names once.
func note(names []string, name string) []string {
	for _, n := range names {
		if n == name {
			return names
		}
	}
	return append(names, name)
}
