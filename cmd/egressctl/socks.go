package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/internal/dataplane/socks5"
)

// socksDialTimeout bounds the connection to the SOCKS5 listener and the handshake.
const socksDialTimeout = 10 * time.Second

var socksConnectCmd = &command{
	name:     "socks-connect",
	synopsis: "HOST PORT",
	summary:  "join standard input and output to HOST:PORT through a session's SOCKS5 listener",
	help: `
Connects to HOST:PORT through egressd's SOCKS5 listener with the session's credentials
(its socks_url, from --socks-url or EGRESSD_SOCKS_URL: socks5h://<session_id>:<token>@host:port),
then copies standard input to the connection and the connection to standard output until the
connection ends. HOST is sent as a name, for egressd to judge and resolve. It is an ssh
ProxyCommand, for ssh and for git over ssh:

  ssh -o ProxyCommand='egressctl socks-connect %h %p' git@github.com
  GIT_SSH_COMMAND="ssh -o ProxyCommand='egressctl socks-connect %h %p'" git clone git@github.com:org/repo.git

A refusal (the policy denies HOST:PORT, or the credentials are wrong) is reported on standard
error with exit status 1; egressctl events shows the decision's reason. Needs no API key.`,
	setup: func(fs *flag.FlagSet) runFunc {
		socksURL := fs.String("socks-url", "", "the session's socks_url (env EGRESSD_SOCKS_URL)")
		return func(ctx context.Context, a *app, _ *client.Client, args []string) error {
			if len(args) != 2 {
				return usagef("give HOST and PORT")
			}
			port, err := strconv.ParseUint(args[1], 10, 16)
			if err != nil || port == 0 {
				return usagef("PORT %q: give a port from 1 to 65535", args[1])
			}
			raw := *socksURL
			if raw == "" {
				raw = a.socksURL
			}
			if raw == "" {
				return usagef("no SOCKS URL: give --socks-url or set EGRESSD_SOCKS_URL to the session's socks_url")
			}
			server, user, password, err := parseSOCKSURL(raw)
			if err != nil {
				return usagef("--socks-url or EGRESSD_SOCKS_URL: %v", err)
			}
			conn, err := socksConnect(ctx, server, user, password, args[0], uint16(port))
			if err != nil {
				return err
			}
			defer conn.Close()
			return splice(conn, a.stdin, a.stdout)
		}
	},
}

// parseSOCKSURL reads a session's socks_url: socks5h:// (or socks5://, taken alike: egressd
// always resolves names itself) with the session ID and token as user and password.
func parseSOCKSURL(raw string) (server, user, password string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", "", errors.New("not a URL (socks5h://<session_id>:<token>@host:port)")
	}
	if u.Scheme != "socks5h" && u.Scheme != "socks5" {
		return "", "", "", fmt.Errorf("scheme %q: want socks5h://<session_id>:<token>@host:port", u.Scheme)
	}
	password, ok := u.User.Password()
	if u.User == nil || u.User.Username() == "" || !ok || password == "" {
		return "", "", "", errors.New("no credentials: want socks5h://<session_id>:<token>@host:port, the session's socks_url")
	}
	if u.Port() == "" || u.Hostname() == "" {
		return "", "", "", errors.New("no host:port of the SOCKS5 listener")
	}
	return u.Host, u.User.Username(), password, nil
}

// socksConnect dials the listener and asks it for host:port.
func socksConnect(ctx context.Context, server, user, password, host string, port uint16) (*net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(ctx, socksDialTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", server)
	if err != nil {
		return nil, fmt.Errorf("connecting to the SOCKS5 listener: %w", err)
	}
	tc := c.(*net.TCPConn)
	deadline, _ := ctx.Deadline()
	tc.SetDeadline(deadline)
	_, err = socks5.Connect(tc, user, password, host, port)
	tc.SetDeadline(time.Time{})
	var re *socks5.ReplyError
	switch {
	case errors.As(err, &re):
		tc.Close()
		return nil, fmt.Errorf("egressd refused %s: %s (egressctl events --session %s shows why)", socks5.JoinHostPort(host, port), re.Reply, user)
	case errors.Is(err, socks5.ErrAuthFailed):
		tc.Close()
		return nil, errors.New("egressd refused the session's credentials: the session ended, or the socks_url is not this session's")
	case err != nil:
		tc.Close()
		return nil, fmt.Errorf("SOCKS5 handshake with %s: %w", server, err)
	}
	return tc, nil
}

// splice copies in to c and c to out. It returns when c has nothing more to say: the
// end of in only half-closes c, so that the server can still answer.
func splice(c *net.TCPConn, in io.Reader, out io.Writer) error {
	go func() {
		io.Copy(c, in)
		c.CloseWrite()
	}()
	_, err := io.Copy(out, c)
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
