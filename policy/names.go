package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// DNS limits (RFC 1035 §2.3.4), counted on the ASCII form without the trailing dot.
const (
	maxLabelLen = 63
	maxNameLen  = 253
)

// idnaProfile maps a name the way a resolver looks it up (UTS #46 non-transitional, RFC 5891
// §5): case folding, width folding (full-width letters and the ideographic full stop),
// normalisation, the Bidi rule and STD3 characters. CheckHyphens is off, as in browsers,
// because labels such as "r3---sn-abc" are in common use; NormalizeName checks leading and
// trailing hyphens itself. Label and name lengths are checked by NormalizeName, on the
// ASCII result, so that the error messages are its own.
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.CheckHyphens(false),
)

// NormalizeName is the one function that normalises host names, for policy entries and for
// traffic alike (DESIGN §2.3): a name that a policy lists and the SNI or Host header that
// reaches the gateway are compared only after both went through it, so "EXAMPLE.com.",
// "example.com" and a full-width "ｅｘａｍｐｌｅ．ｃｏｍ" are one name.
//
// It converts internationalised names to their ASCII (punycode) form, folds case, and drops
// exactly one trailing dot. It rejects what is not a host name, with an error a person can act
// on: an empty name or label, a label over 63 or a name over 253 bytes, characters outside
// letters, digits and hyphens (including '_', '@', '/', ':', spaces and control characters), a
// label that starts or ends with a hyphen, a malformed "xn--" label, and IP literals, which
// belong in allowed_cidrs. A name whose last label is numeric ("127.1", "2130706433",
// "0x7f.1") is an IP literal too: resolvers and URL parsers read it as an address.
//
// A name that is already in normal form is returned without allocating (up to the trailing
// dot, which is sliced off), so traffic pays almost nothing for it.
func NormalizeName(s string) (string, error) {
	if name, ok := fastName(s); ok {
		return name, nil
	}
	return slowName(s)
}

// fastName accepts a name that is already lower-case LDH with valid labels, no "xn--" label
// (those need punycode validation) and no numeric last label; the result shares s's bytes.
func fastName(s string) (string, bool) {
	if n := len(s); n > 0 && s[n-1] == '.' {
		s = s[:n-1]
	}
	if len(s) == 0 || len(s) > maxNameLen {
		return "", false
	}
	start := 0 // first byte of the current label
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			c := s[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return "", false
			}
			continue
		}
		n := i - start
		if n == 0 || n > maxLabelLen || s[start] == '-' || s[i-1] == '-' {
			return "", false
		}
		if n >= 4 && s[start:start+4] == "xn--" {
			return "", false
		}
		start = i + 1
	}
	if numericLabel(lastLabel(s)) {
		return "", false
	}
	return s, true
}

// slowName handles every name that fastName does not accept: it produces the normal form or
// says precisely what is wrong.
func slowName(orig string) (string, error) {
	if orig == "" {
		return "", errors.New("the name is empty")
	}
	if ipLiteral(orig) {
		return "", fmt.Errorf("%q is an IP address; put it in allowed_cidrs", orig)
	}
	if strings.Contains(orig, "/") {
		if _, err := netip.ParsePrefix(orig); err == nil {
			return "", fmt.Errorf("%q is a CIDR; put it in allowed_cidrs", orig)
		}
	}
	if err := forbiddenChars(orig); err != nil {
		return "", err
	}
	s := orig
	if ascii(s) {
		s = strings.ToLower(s)
	} else {
		var err error
		if s, err = idnaProfile.ToASCII(s); err != nil {
			return "", fmt.Errorf("%q is not a valid international domain name: %v", orig, err)
		}
	}
	if n := len(s); n > 0 && s[n-1] == '.' {
		s = s[:n-1]
	}
	if err := checkLDH(orig, s); err != nil {
		return "", err
	}
	if strings.Contains(s, "xn--") {
		// An A-label must decode to a valid U-label and encode back to itself; otherwise two
		// spellings could name one host, or a label could smuggle in what IDNA rejects.
		back, err := idnaProfile.ToASCII(s)
		if err != nil || back != s {
			return "", fmt.Errorf("%q has a malformed punycode (xn--) label", orig)
		}
	}
	if numericLabel(lastLabel(s)) {
		if _, err := netip.ParseAddr(s); err == nil {
			return "", fmt.Errorf("%q is an IP address; put it in allowed_cidrs", orig)
		}
		return "", fmt.Errorf("%q ends in a numeric label, which resolvers read as an IP address; put addresses in allowed_cidrs", orig)
	}
	return s, nil
}

// ipLiteral reports whether s is an IPv4 or IPv6 address, bracketed or not, with or without a
// zone: the gateway must never treat such a string as a name.
func ipLiteral(s string) bool {
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	if strings.IndexByte(s, ':') < 0 && !numericLabel(lastLabel(s)) {
		return false // neither IPv6 nor dotted IPv4; skip ParseAddr, whose error allocates
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

// forbiddenChars names the first character that can never be part of a host name and is
// likely a sign of a URL, an e-mail address or a host:port pasted where a name belongs.
func forbiddenChars(s string) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("%q contains a control character", s)
		case c == ' ':
			return fmt.Errorf("%q contains a space", s)
		case c == '@':
			return fmt.Errorf("%q contains '@'; give only the host name", s)
		case c == '/':
			return fmt.Errorf("%q contains '/'; give only the host name, not a URL or path", s)
		case c == ':':
			return fmt.Errorf("%q contains ':'; give only the host name, without scheme or port", s)
		case c == '*':
			return fmt.Errorf("%q contains '*'; the only wildcard is a leading \"*.\" in a policy entry", s)
		}
	}
	return nil
}

// checkLDH validates the ASCII form s (trailing dot removed) of the input orig.
func checkLDH(orig, s string) error {
	if s == "" {
		return fmt.Errorf("%q has no labels", orig)
	}
	if len(s) > maxNameLen {
		return fmt.Errorf("%q is %d bytes long; a name is at most %d", orig, len(s), maxNameLen)
	}
	for label := range strings.SplitSeq(s, ".") {
		switch {
		case label == "":
			return fmt.Errorf("%q has an empty label (a leading dot, \"..\" or two trailing dots)", orig)
		case len(label) > maxLabelLen:
			return fmt.Errorf("%q has a label of %d bytes; a label is at most %d", orig, len(label), maxLabelLen)
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("%q has a label that starts or ends with '-'", orig)
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Errorf("%q contains %q; a host name has only letters, digits, '-' and '.'", orig, c)
			}
		}
	}
	return nil
}

// numericLabel reports whether a last label makes a name read as an IPv4 address under the
// WHATWG URL "ends in a number" rule: all decimal digits, or "0x" and hex digits. No top-level
// domain has this form (RFC 3696 §2), and inet_aton-style forms ("127.1", "0x7f000001")
// would otherwise slip past the IP-literal check.
func numericLabel(l string) bool {
	if l == "" {
		return false
	}
	if len(l) >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X') {
		for i := 2; i < len(l); i++ {
			c := l[i] | 0x20
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return true
}

func lastLabel(s string) string { return s[strings.LastIndexByte(s, '.')+1:] }

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// wildcardPrefix starts the only wildcard form a policy entry may have.
const wildcardPrefix = "*."

// NormalizePattern normalises a policy entry: a host name, or "*." followed by a host name of
// at least two labels. "example.com" matches only example.com; "*.example.com" matches every
// name under example.com at any depth, and not example.com itself. A bare "*", a wildcard
// over a top-level domain ("*.com") and every other use of '*' ("a*.b.com", "*b.com",
// "b.*.com") are rejected: an empty allowed_domains already means "any host".
func NormalizePattern(s string) (string, error) {
	if s == "*" || s == "*." {
		return "", errors.New("\"*\" alone is not a pattern; to allow any host leave allowed_domains empty and turn on allow_https or allow_http")
	}
	rest, wild := strings.CutPrefix(s, wildcardPrefix)
	if strings.Contains(rest, "*") {
		return "", fmt.Errorf("%q is not a valid pattern: the only wildcard is a leading \"*.\" (as in \"*.example.com\")", s)
	}
	name, err := NormalizeName(rest)
	if err != nil {
		return "", err
	}
	if !wild {
		return name, nil
	}
	if !strings.Contains(name, ".") {
		return "", fmt.Errorf("%q is too broad: a wildcard needs at least two labels after \"*.\"", s)
	}
	if name == rest && len(s) == len(wildcardPrefix)+len(name) {
		return s, nil // already normal: no allocation
	}
	return wildcardPrefix + name, nil
}
