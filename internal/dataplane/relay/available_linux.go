package relay

import (
	"net"

	"golang.org/x/sys/unix"
)

// available waits until c has bytes to read, its peer ended the stream, or c's read deadline
// passes, and returns how many bytes can be read at once (0 at EOF).
//
// It exists for idle tunnels. io.Copy between two TCP conns splices through a pipe, and a
// splice that waits for data holds its pipe (two more descriptors, and up to 1 MiB of pipe
// buffer) for as long as it waits. Waiting here first, with a MSG_PEEK that takes nothing,
// and then splicing exactly what is queued, means an idle tunnel holds its two sockets and
// nothing else: 10,000 idle tunnels cost 20,000 descriptors, not 60,000.
func available(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var opErr error
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		for {
			m, _, e := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case e == unix.EINTR:
				continue
			case e == unix.EAGAIN:
				return false // nothing queued: let the poller wait for readability
			case e != nil:
				opErr = e
			case m == 0:
				n = 0 // the peer ended its stream
			default:
				q, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
				n, opErr = max(q, 1), err
			}
			return true
		}
	})
	if err != nil {
		return 0, err
	}
	return n, opErr
}
