package intercept

import (
	"errors"
	"net/url"
	"strings"
)

// Errors of requestPath: requests whose path origins would read in different ways.
var (
	errHiddenDot   = errors.New("the path hides a dot segment behind an encoded slash or a backslash")
	errRelative    = errors.New("the path does not start with /")
	errPathEscapes = errors.New("the path has an invalid percent-encoding")
)

// maxRecordedPath bounds the path a record carries.
const maxRecordedPath = 1024

// requestPath returns the path a request goes upstream with (escaped as the client escaped
// it, dot segments resolved) and the path it is decided on (that path percent-decoded
// once). A dot segment is ".", "..", their percent-encoded forms, and either followed by
// ";parameters" (which some servers strip before resolving); it is resolved as RFC 3986
// §5.2.4 says, so that the origin receives a path without any and cannot climb out of
// what was decided. A dot segment that only appears once an encoded slash ("%2f") or a
// backslash is read as a separator is refused: some origins do, some do not, and the
// decision must hold for all of them. "*" (OPTIONS *) is itself.
func requestPath(u *url.URL) (forward, judged string, err error) {
	raw := u.EscapedPath()
	switch {
	case raw == "":
		return "/", "/", nil
	case raw == "*":
		return "*", "*", nil
	case raw[0] != '/':
		return "", "", errRelative
	case !maybeDotted(raw):
		// The common case: nothing to resolve, and Path is raw decoded.
		return raw, u.Path, nil
	}
	segs := strings.Split(raw[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		d, err := url.PathUnescape(s)
		if err != nil {
			return "", "", errPathEscapes
		}
		if strings.ContainsAny(d, `/\`) {
			for _, part := range strings.FieldsFunc(d, func(r rune) bool { return r == '/' || r == '\\' }) {
				if dotSegment(part) != 0 {
					return "", "", errHiddenDot
				}
			}
		}
		switch dotSegment(d) {
		case 1: // "." names the directory it is in
			if last {
				out = append(out, "")
			}
		case 2: // ".." its parent
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	forward = "/" + strings.Join(out, "/")
	judged, err = url.PathUnescape(forward)
	if err != nil { // cannot happen: every segment decoded above
		return "", "", errPathEscapes
	}
	return forward, judged, nil
}

// maybeDotted reports whether an escaped path may hold a dot segment or a backslash: a
// '.', a '\', or the encoding of either.
func maybeDotted(raw string) bool {
	if strings.ContainsAny(raw, `.\`) {
		return true
	}
	for i := strings.IndexByte(raw, '%'); i >= 0 && i+2 < len(raw); {
		if h := raw[i+1 : i+3]; h == "2e" || h == "2E" || h == "5c" || h == "5C" {
			return true
		}
		j := strings.IndexByte(raw[i+1:], '%')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}

// dotSegment is 1 for a "." segment, 2 for "..", 0 otherwise; a ";parameters" suffix is
// ignored.
func dotSegment(d string) int {
	if i := strings.IndexByte(d, ';'); i >= 0 {
		d = d[:i]
	}
	switch d {
	case ".":
		return 1
	case "..":
		return 2
	}
	return 0
}

// recordedPath is the path as a record carries it.
func recordedPath(p string) string {
	if len(p) > maxRecordedPath {
		return p[:maxRecordedPath]
	}
	return p
}
