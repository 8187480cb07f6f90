package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// DefaultUserAgent is the User-Agent of a Client made without WithUserAgent.
const DefaultUserAgent = "egressd-go-client"

// Client talks to one egressd API. It holds no per-request state and is safe for concurrent
// use; make one and share it.
type Client struct {
	base      string // scheme://host[/prefix] without a trailing slash
	apiKey    string
	http      *http.Client
	userAgent string
	waitFleet bool
}

// An Option configures a Client in New.
type Option func(*Client)

// WithHTTPClient makes the Client send its requests with hc, for timeouts, proxies, TLS
// settings or tests. The default is a client of its own that does not follow redirects (the
// API never redirects, and following one could carry the key to another host).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.http = hc
		}
	}
}

// WithUserAgent sets the User-Agent header of every request, so that an operator can tell
// callers apart in egressd's logs.
func WithUserAgent(ua string) Option {
	return func(c *Client) {
		if ua != "" {
			c.userAgent = ua
		}
	}
}

// WithWaitFleet makes every write that changes what the gateways enforce (policies,
// sessions, VMs) wait, on the server and up to 5 s, until every up gateway node of the fleet
// has applied it (?wait=fleet), rather than only the node that answers. The answers then
// carry an *Enforcement: EnforcedBy lists the nodes that have applied the write and Lagging
// those that had not in time (the write is stored either way). Without it, a write is
// answered once the answering node enforces it.
func WithWaitFleet() Option {
	return func(c *Client) { c.waitFleet = true }
}

// New returns a Client for the API at baseURL ("http://127.0.0.1:8470", or a URL with a path
// prefix when egressd sits behind a reverse proxy), authenticating with apiKey. An empty
// apiKey is allowed, for Health and Ready; every other call then fails with a 401 Error.
// New does no I/O.
func New(baseURL, apiKey string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q must be an absolute http:// or https:// URL, such as http://127.0.0.1:8470", baseURL)
	}
	if u.User != nil {
		// Userinfo would be sent as Basic credentials next to the key; refuse rather than guess.
		return nil, fmt.Errorf("client: base URL %q must not carry credentials; pass the API key as apiKey", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: base URL %q must not have a query or fragment", baseURL)
	}
	c := &Client{
		base:      strings.TrimSuffix(u.String(), "/"),
		apiKey:    apiKey,
		http:      &http.Client{CheckRedirect: noRedirects},
		userAgent: DefaultUserAgent,
	}
	for _, opt := range opts {
		opt(c)
	}
	return c, nil
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// BaseURL returns the API's base URL as New normalised it (without a trailing slash).
func (c *Client) BaseURL() string { return c.base }

// pathFor joins fixed path text and IDs into an escaped request path:
// pathFor("/v1/vms/", id) gives "/v1/vms/a%2Fb" for the ID "a/b". Each ID becomes exactly one
// path segment, so an ID can never address another endpoint. An ID that is empty, "." or ".."
// is refused here, because no escaping keeps a server's path cleaning from resolving it.
func pathFor(kind string, parts ...string) (string, error) {
	var b strings.Builder
	for i, p := range parts {
		if i%2 == 0 {
			b.WriteString(p) // fixed text from this package
			continue
		}
		switch p {
		case "":
			return "", fmt.Errorf("client: empty %s ID", kind)
		case ".", "..":
			return "", fmt.Errorf("client: %q is not a valid %s ID", p, kind)
		}
		b.WriteString(url.PathEscape(p))
	}
	return b.String(), nil
}

// writeQuery is the query of a write that the gateways enforce: wait=fleet with
// WithWaitFleet, else none.
func (c *Client) writeQuery() url.Values {
	if !c.waitFleet {
		return nil
	}
	return url.Values{"wait": {"fleet"}}
}

// maxErrorBody bounds how much of an error answer is read: the API's errors are small, and an
// error page from something in front of egressd need not be read whole.
const maxErrorBody = 64 << 10

// do sends one request and, for a 2xx answer, decodes its JSON body into out (when out is not
// nil). in, when not nil, is sent as the JSON body. Any other answer is returned as *Error.
// Errors from the transport (connection refused, context canceled) are returned as they are,
// a *url.Error that names the method and URL.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("client: encoding the body of %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(data)
	}
	target := c.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.apiKey != "" {
		// Bearer rather than X-API-Key (egressd takes both): net/http drops Authorization when
		// a caller's own client follows a redirect to another host, and log scrubbers know it.
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}

	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer drainAndClose(resp.Body)

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return readError(resp)
	}
	if out == nil {
		return nil
	}
	if resp.StatusCode == http.StatusNoContent {
		return fmt.Errorf("client: %s %s answered 204 No Content where a JSON body was expected", method, path)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("client: decoding the answer to %s %s (%d, Content-Type %q): %w",
			method, path, resp.StatusCode, resp.Header.Get("Content-Type"), err)
	}
	return nil
}

// drainAndClose reads what is left of a body, up to a bound, before closing it: net/http
// reuses a keep-alive connection only when its last body was read to the end.
func drainAndClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxErrorBody))
	_ = body.Close()
}

// isJSON reports whether a Content-Type names JSON; an absent one counts, since some proxies
// drop it.
func isJSON(contentType string) bool {
	if contentType == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// status is the body of /healthz and /readyz.
type status struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// Health reports whether the egressd process is up and serving (GET /healthz). It needs no
// API key. A nil error means alive; it says nothing about the store, see Ready.
func (c *Client) Health(ctx context.Context) error {
	var s status
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil, &s)
}

// Ready reports whether egressd can serve requests, its store included (GET /readyz), as a
// load balancer would ask. When it cannot, the error is an *Error with Status 503 whose
// Message gives the reason. It needs no API key.
func (c *Client) Ready(ctx context.Context) error {
	var s status
	err := c.do(ctx, http.MethodGet, "/readyz", nil, nil, &s)
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusServiceUnavailable && e.Code == "" {
		e.Code = CodeUnavailable
	}
	return err
}
