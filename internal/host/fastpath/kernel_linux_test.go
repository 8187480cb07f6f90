//go:build linux

package fastpath

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	fp "github.com/egressd/egressd/internal/host/fastpath/fastpathtest"
	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/testnet"
)

// TestKernelAgrees checks the packet builder and the parser against a real Linux TCP
// stack, so that the two cannot agree on a wrong checksum: in a throwaway namespace, SYNs
// written to a TUN device reach a listener. The kernel must ignore the SYN with a bad TCP
// checksum and the one with a bad IPv4 checksum (what the verifier refuses as the
// "checksum trick"), answer the good one, and its SYN-ACK must parse with right checksums.
func TestKernelAgrees(t *testing.T) {
	testnet.RequireRoot(t)
	_, err := exec.LookPath("ip")
	testnet.Require(t, err == nil, "ip(8)")
	name, _ := testnet.NewNetNS(t, "fastpath")
	path := "/run/netns/" + name
	var tun *os.File
	err = netns.Do(path, func() error {
		var err error
		tun, err = openTUN("fp0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	for _, args := range [][]string{
		{"addr", "add", "203.0.113.10/24", "dev", "fp0"},
		{"link", "set", "fp0", "up"},
		{"route", "add", "100.96.0.0/16", "dev", "fp0"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ln, err := netns.ListenIn(path, "tcp", srvAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	syn := func(port uint16) fp.Segment {
		return fp.Segment{Src: netip.AddrPortFrom(vmAddr.Addr(), port), Dst: srvAddr, Seq: 1000, Flags: fp.SYN, Options: []byte{2, 4, 5, 0xb4}}
	}
	bad, badIP, good := syn(40001), syn(40002), syn(40003)
	bad.BadChecksum, badIP.BadIPChecksum = true, true
	for _, s := range []fp.Segment{bad, badIP, good} {
		if _, err := tun.Write(s.Bytes()); err != nil {
			t.Fatalf("writing a SYN to the TUN device: %v", err)
		}
	}
	// The kernel handles the writes in order: the first TCP packet back answers the good SYN.
	if err := tun.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for range 100 {
		n, err := tun.Read(buf)
		if err != nil {
			t.Fatalf("no SYN-ACK from the kernel: %v", err)
		}
		s, _, err := parse(buf[:n])
		if errors.Is(err, ErrMalformed) || errors.Is(err, errNotTCP) {
			continue // IPv6 neighbour discovery and the like
		}
		if err != nil {
			t.Fatalf("the kernel's SYN-ACK does not parse: %v", err)
		}
		if s.flags != flagSYN|flagACK || s.flow.Dst.Port() != 40003 || s.ack != 1001 {
			t.Fatalf("first TCP packet back: flags %s to %v, ack %d; want a SYN-ACK to port 40003", flagString(s.flags), s.flow.Dst, s.ack)
		}
		return
	}
	t.Fatal("no SYN-ACK in 100 packets")
}

// openTUN makes a TUN device (IPv4 packets without a header) in the calling thread's
// namespace. The descriptor is non-blocking before os.NewFile sees it, so that reads
// honour deadlines.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: "/dev/net/tun", Err: err}
	}
	var req [unix.IFNAMSIZ + 64]byte
	copy(req[:], name)
	*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TUN | unix.IFF_NO_PI
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
		unix.Close(fd)
		return nil, &os.PathError{Op: "TUNSETIFF", Path: name, Err: e}
	}
	return os.NewFile(uintptr(fd), "tun:"+name), nil
}
