package intercept

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// transport is the connection's own HTTP client to the origin, made at its first forwarded
// request. An HTTP/1.1 client gets HTTP/1.1 upstream (an Upgrade can only be passed on
// that way); an HTTP/2 client gets HTTP/2 when the origin offers it in ALPN.
func (st *connState) transport() *http.Transport {
	st.trOnce.Do(func() {
		cfg := &st.e.cfg
		protos := new(http.Protocols)
		protos.SetHTTP1(true)
		protos.SetHTTP2(st.proto == "h2")
		st.tr = &http.Transport{
			// Never a proxy from the environment: the zero Proxy is none.
			DialContext: st.dial,
			TLSClientConfig: &tls.Config{
				RootCAs:    cfg.RootCAs,
				ServerName: st.c.SNI,
				MinVersion: tls.VersionTLS12,
			},
			TLSHandshakeTimeout: cfg.HandshakeTimeout,
			ForceAttemptHTTP2:   st.proto == "h2",
			Protocols:           protos,
			// Bodies pass as they are: no Accept-Encoding of the transport's own, no
			// decompression.
			DisableCompression:    true,
			MaxConnsPerHost:       cfg.MaxUpstreamConns,
			MaxIdleConnsPerHost:   cfg.MaxUpstreamConns,
			IdleConnTimeout:       cfg.KeepAliveTimeout,
			ExpectContinueTimeout: time.Second,
			// An origin's header may be larger than what the engine takes from a sandbox
			// (cookies, policies), but not unbounded.
			MaxResponseHeaderBytes: 1 << 20,
		}
	})
	return st.tr
}

// dial connects to the origin through the connection's Dialer, for the transport. addr is
// always the SNI on port 443: the transport has no other URL.
func (st *connState) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	// The transport may go on dialling for a request that was cancelled, to keep the
	// connection for later; a dial must still end with the client connection.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(st.ctx, cancel)
	defer stop()
	conn, err := st.c.Dialer.Dial(ctx, st.c.SNI, 443)
	if err != nil {
		return nil, err
	}
	u := &upstreamConn{Conn: conn, st: st, idle: st.e.cfg.IdleTimeout}
	st.upMu.Lock()
	defer st.upMu.Unlock()
	if st.upClosed {
		conn.Close()
		return nil, errConnDone
	}
	if st.ups == nil {
		st.ups = make(map[*upstreamConn]struct{})
	}
	st.ups[u] = struct{}{}
	return u, nil
}

// upstreamConn is a connection to the origin: each read and write has the idle timeout as
// its deadline, so that an origin that sends or takes nothing cannot hold an exchange (or
// an idle pooled connection) forever; and the client connection's end closes it.
type upstreamConn struct {
	net.Conn
	st   *connState
	idle time.Duration
	once sync.Once
}

func (u *upstreamConn) Read(p []byte) (int, error) {
	u.Conn.SetReadDeadline(time.Now().Add(u.idle))
	return u.Conn.Read(p)
}

func (u *upstreamConn) Write(p []byte) (int, error) {
	u.Conn.SetWriteDeadline(time.Now().Add(u.idle))
	return u.Conn.Write(p)
}

func (u *upstreamConn) Close() error {
	u.once.Do(func() {
		u.st.upMu.Lock()
		delete(u.st.ups, u)
		u.st.upMu.Unlock()
	})
	return u.Conn.Close()
}

// verifyError returns the certificate verification error in err, if it is one.
func verifyError(err error) (error, bool) {
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) {
		return cv, true
	}
	var (
		ua x509.UnknownAuthorityError
		he x509.HostnameError
		ci x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &ua):
		return ua, true
	case errors.As(err, &he):
		return he, true
	case errors.As(err, &ci):
		return ci, true
	}
	return nil, false
}

// isTimeout reports a deadline error.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
