package policy

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Paths in http_rules and in traffic are compared in one canonical form, made by one function
// (canonicalPath), as names are by NormalizeName:
//
//   - percent-encoding is decoded once, and every byte that is not an unreserved or
//     sub-delimiter character, ':' or '@' (RFC 3986 §3.3 pchar) is encoded again as %XX with
//     upper-case hex, so "/%7euser", "/~user" and "/%7Euser" are one path, and a literal '%'
//     is "%25" (a double-encoded "%252e" stays "%252E": it is not a dot);
//   - dot segments are removed as RFC 3986 §5.2.4 says, after decoding, so "/v1/../admin" and
//     "/v1/%2e%2e/admin" are both "/admin";
//   - the query is never part of it.
//
// Servers disagree on a few forms, and a request that one server reads inside an allowed
// prefix another reads outside it (the classic "/v1/..%2Fadmin" and "/v1/..;/admin"
// bypasses). So a request's path is read twice: strictly, as RFC 3986 says (an encoded slash
// %2F or backslash %5C is data inside a segment, "//" is an empty segment), and loosely, as
// the most lenient servers do (%2F, %5C and '\' separate segments, "//" is "/", and a segment
// whose part before ';' is "." or ".." is a dot segment, as Tomcat reads "..;"). A request
// is allowed only if both readings are; for ordinary paths they are the same.

// MaxRulePathLen bounds one path of an http_rules entry, in bytes as given.
const MaxRulePathLen = 1024

// pathFlags record what a path had, for the checks on paths in rules.
type pathFlags uint8

const (
	pathDotSegment      pathFlags = 1 << iota // "." or "..", plain or encoded
	pathEmptySegment                          // "//" (an empty segment before another one)
	pathEncodedSlash                          // %2F, %5C or a raw '\'
	pathParamDotSegment                       // "..;x": a dot segment to Tomcat
)

// badPath says why a path is malformed; 0 when it is not. A code rather than a string so
// that nothing of the path's scratch space flows into a decision (which would move it to the
// heap); String gives the Rule of a bad_path decision, from fixed strings.
type badPath uint8

const (
	pathOK badPath = iota
	badPathNoSlash
	badPathPercent
	badPathControl
	badPathUTF8
	badPathFragment
)

var badPathRules = [...]string{
	pathOK:          "",
	badPathNoSlash:  "the path does not start with \"/\"",
	badPathPercent:  "the path has a malformed percent-encoding: '%' must be followed by two hex digits",
	badPathControl:  "the path has a space or a control character, encoded or not",
	badPathUTF8:     "the path is not valid UTF-8 once percent-decoded",
	badPathFragment: "the path has a fragment ('#'), which is never sent to a server",
}

func (b badPath) String() string { return badPathRules[b] }

// ruleStar is the Rule of a denial of the asterisk-form.
const ruleStar = "\"*\" (as in OPTIONS *) names no path: only a rule without paths allows it"

// pathLiteral marks the bytes that stay literal in the canonical form: RFC 3986 unreserved
// and sub-delims, ':' and '@'. Every other byte of a segment is percent-encoded.
var pathLiteral = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~!$&'()*+,;=:@" {
		t[c] = true
	}
	return t
}()

const upperHex = "0123456789ABCDEF"

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// canonicalPath appends the canonical form of raw, an absolute path without query or
// fragment, to dst[:0] and returns it, with what the path had (flags) and, when raw is
// malformed, why (the result is then meaningless). loose selects
// the lenient reading (see above). It allocates only when dst is too small.
func canonicalPath(dst []byte, raw string, loose bool) ([]byte, pathFlags, badPath) {
	if raw == "" || raw[0] != '/' {
		return dst[:0], 0, badPathNoSlash
	}
	dst = append(dst[:0], '/')
	segStart := 1
	var flags pathFlags
	var seq [utf8.UTFMax]byte // a UTF-8 sequence being decoded
	seqLen, seqNeed := 0, 0
	for i := 1; i <= len(raw); i++ {
		if i == len(raw) {
			if seqNeed != 0 {
				return dst, flags, badPathUTF8
			}
			dst = closeSegment(dst, segStart, loose, true, &flags)
			break
		}
		if seqNeed == 0 {
			// A run of bytes that stay as they are, the common case, is copied at once.
			j := i
			for j < len(raw) && pathLiteral[raw[j]] {
				j++
			}
			if j > i {
				dst = append(dst, raw[i:j]...)
				i = j - 1
				continue
			}
		}
		c, sep := raw[i], false
		switch {
		case c == '/':
			sep = true
		case c == '%':
			if i+2 >= len(raw) {
				return dst, flags, badPathPercent
			}
			hi, ok1 := unhex(raw[i+1])
			lo, ok2 := unhex(raw[i+2])
			if !ok1 || !ok2 {
				return dst, flags, badPathPercent
			}
			c = hi<<4 | lo
			i += 2
			if c == '/' || c == '\\' {
				flags |= pathEncodedSlash
				sep = loose
			}
		case c == '\\':
			flags |= pathEncodedSlash
			sep = loose
		case c == '#':
			return dst, flags, badPathFragment
		}
		if c < 0x20 || c == 0x7f || c == ' ' {
			return dst, flags, badPathControl
		}
		if sep {
			if seqNeed != 0 {
				return dst, flags, badPathUTF8
			}
			dst = closeSegment(dst, segStart, loose, false, &flags)
			segStart = len(dst)
			continue
		}
		// UTF-8: collect a sequence and check it whole (utf8.Valid refuses overlong forms,
		// such as %C0%AE for '.', and surrogates).
		switch {
		case seqNeed > 0:
			if c&0xC0 != 0x80 {
				return dst, flags, badPathUTF8
			}
			seq[seqLen] = c
			seqLen++
			if seqLen == seqNeed {
				if !utf8.Valid(seq[:seqLen]) {
					return dst, flags, badPathUTF8
				}
				seqLen, seqNeed = 0, 0
			}
		case c >= 0x80:
			switch {
			case c&0xE0 == 0xC0:
				seqNeed = 2
			case c&0xF0 == 0xE0:
				seqNeed = 3
			case c&0xF8 == 0xF0:
				seqNeed = 4
			default:
				return dst, flags, badPathUTF8
			}
			seq[0], seqLen = c, 1
		}
		if pathLiteral[c] {
			dst = append(dst, c)
		} else {
			dst = append(dst, '%', upperHex[c>>4], upperHex[c&15])
		}
	}
	return dst, flags, pathOK
}

// closeSegment ends the segment dst[segStart:] (just written): it removes a dot segment as
// RFC 3986 §5.2.4 does, and, unless last, adds the '/' that starts the next one. dst always
// starts with '/' and segStart is just after a '/'.
func closeSegment(dst []byte, segStart int, loose, last bool, flags *pathFlags) []byte {
	seg := dst[segStart:]
	dot := seg
	if i := indexByte(seg, ';'); i >= 0 {
		if isDots(seg[:i]) {
			*flags |= pathParamDotSegment
		}
		if loose {
			dot = seg[:i]
		}
	}
	switch {
	case len(dot) == 1 && dot[0] == '.':
		*flags |= pathDotSegment
		return dst[:segStart] // "/a/." is "/a/": the '/' before it stays
	case len(dot) == 2 && dot[0] == '.' && dot[1] == '.':
		*flags |= pathDotSegment
		dst = dst[:segStart-1] // drop ".." and its '/'
		j := lastIndexByte(dst, '/')
		if j < 0 {
			return append(dst[:0], '/') // above the root is the root
		}
		return dst[:j+1] // drop the segment before it, keep its '/'
	case len(seg) == 0 && !last:
		*flags |= pathEmptySegment
		if loose {
			return dst // "//" is "/"
		}
	}
	if last {
		return dst
	}
	return append(dst, '/')
}

func isDots(b []byte) bool {
	return len(b) == 1 && b[0] == '.' || len(b) == 2 && b[0] == '.' && b[1] == '.'
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func lastIndexByte(b []byte, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}

// NormalizeRulePath validates a path prefix of an http_rules entry and returns it in the
// canonical form traffic is compared in: percent-encoding decoded and re-encoded the one way
// ("/%7euser" is "/~user", "/café" is "/caf%C3%A9"). A rule path must start with '/' and must
// not hold what would make it mean something else to different servers or never match: a
// query or fragment ('?', '#': a rule never sees the query), a "." or ".." segment (plain or
// percent-encoded, or Tomcat's "..;"), an empty segment ("//"), an encoded slash or
// backslash (%2F, %5C) or a backslash, a space or control character, malformed
// percent-encoding, or bytes that are not UTF-8 once decoded. At most MaxRulePathLen bytes.
func NormalizeRulePath(s string) (string, error) {
	switch {
	case s == "":
		return "", errors.New(`the path is empty; a path starts with "/" ("/" alone matches every path)`)
	case strings.Contains(s, "://") || strings.HasPrefix(s, "//"):
		return "", fmt.Errorf("%q is a URL; give only its path, starting with \"/\" (the domain goes in \"domain\")", s)
	case s[0] != '/':
		return "", fmt.Errorf("%q does not start with \"/\"; did you mean %q?", s, "/"+s)
	case len(s) > MaxRulePathLen:
		return "", fmt.Errorf("the path is %d bytes long; a rule path is at most %d", len(s), MaxRulePathLen)
	}
	if i := strings.IndexByte(s, '?'); i >= 0 {
		return "", fmt.Errorf("%q has a query (%q); rules match the path only, never the query: give %q", s, s[i:], s[:i])
	}
	strict, flags, bad := canonicalPath(nil, s, false)
	switch {
	case bad == badPathFragment:
		return "", fmt.Errorf("%q has a fragment ('#'), which clients never send; give the path without it", s)
	case bad != pathOK:
		return "", fmt.Errorf("%q %s", s, strings.TrimPrefix(bad.String(), "the path "))
	case flags&pathDotSegment != 0:
		return "", fmt.Errorf("%q has a \".\" or \"..\" segment (perhaps percent-encoded); give the path as the server resolves it, without dot segments", s)
	case flags&pathParamDotSegment != 0:
		return "", fmt.Errorf("%q has a segment such as \"..;x\", which some servers read as \"..\"; give the path without it", s)
	case flags&pathEmptySegment != 0:
		return "", fmt.Errorf("%q has an empty segment (\"//\"), which servers read differently; give the path with single slashes", s)
	case flags&pathEncodedSlash != 0:
		return "", fmt.Errorf("%q has an encoded slash or backslash (%%2F, %%5C) or a backslash: servers differ on whether it separates segments, "+
			"so no rule can match it reliably; end the prefix before that segment", s)
	}
	return string(strict), nil
}

// requestPath is a request's path in both readings, decoded and resolved once per request
// and compared with every rule.
type requestPath struct {
	strict, loose []byte
	star          bool    // "*": the asterisk-form of OPTIONS
	bad           badPath // why the path is malformed; pathOK when it is not
}

// readRequestPath reads raw, the path of a request-target in origin form as sent (a query
// after '?' is ignored), into the two readings, using sbuf and lbuf as scratch (they are
// grown only for very long paths).
func readRequestPath(raw string, sbuf, lbuf []byte) requestPath {
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	if raw == "*" {
		return requestPath{star: true}
	}
	var rp requestPath
	rp.strict, _, rp.bad = canonicalPath(sbuf, raw, false)
	if rp.bad != pathOK {
		return rp
	}
	rp.loose, _, rp.bad = canonicalPath(lbuf, raw, true)
	return rp
}

// pathHasPrefix reports whether the canonical path p is inside the rule prefix, on segment
// boundaries: "/v1" holds "/v1", "/v1/" and "/v1/x" but not "/v1x"; "/v1/" holds "/v1/" and
// "/v1/x" but not "/v1" (a different resource); "/" holds every path.
func pathHasPrefix(p []byte, prefix string) bool {
	if len(p) < len(prefix) || string(p[:len(prefix)]) != prefix {
		return false
	}
	return len(p) == len(prefix) || prefix[len(prefix)-1] == '/' || p[len(prefix)] == '/'
}
