package nfqueue

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/host/netns"
	"github.com/egressd/egressd/internal/testkit/testnet"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Marks of the lab's rules: a flow with markPass skips the queue, one with markReject is
// rejected by the rule before the queue (what a Repeat verdict then meets).
const (
	markPass   = 0x1000000
	markReject = 0x2000000
	udpPort    = 9000
	tcpPort    = 9100
	labMTU     = 1500
)

// lab is a throwaway namespace whose output chain queues UDP to port udpPort and TCP to
// port tcpPort on queue num, after two ct mark rules:
//
//	ct mark & markPass == markPass accept
//	ct mark & markReject == markReject reject
//	udp dport 9000 queue num N      (nft queue, or the xt NFQUEUE target via nft compat)
//	tcp dport 9100 queue num N
//
// and whose forward chain queues TCP to port 443 (see forward). Traffic goes over its
// loopback (MTU labMTU, so that TCP segments are cut by GSO).
type lab struct {
	name string
	h    vnetns.NsHandle
	num  uint16
}

func newLab(t testing.TB, num uint16) *lab {
	t.Helper()
	testnet.RequireRoot(t)
	for _, tool := range []string{"ip", "nft"} {
		_, err := exec.LookPath(tool)
		testnet.Require(t, err == nil, tool)
	}
	l := &lab{num: num}
	l.name, l.h = testnet.NewNetNS(t, "egnfq")
	l.cmd(t, "", "ip", "-n", l.name, "link", "set", "lo", "mtu", "1500")
	l.cmd(t, `table ip egnfq {
	chain out {
		type filter hook output priority 0; policy accept;
		ct mark & 0x1000000 == 0x1000000 accept
		ct mark & 0x2000000 == 0x2000000 reject
	}
	chain through {
		type filter hook forward priority 0; policy accept;
	}
}`, "ip", "netns", "exec", l.name, "nft", "-f", "-")
	for _, r := range []struct {
		chain string
		proto byte
		port  uint16
	}{{"out", unix.IPPROTO_UDP, udpPort}, {"out", unix.IPPROTO_TCP, tcpPort}, {"through", unix.IPPROTO_TCP, 443}} {
		if err := l.addQueueRule(r.chain, r.proto, r.port); err != nil {
			t.Fatalf("queue rule: %v", err)
		}
	}
	return l
}

// addQueueRule appends `<proto> dport <port> queue num N`: nft's queue expression where the
// kernel has it (CONFIG_NFT_QUEUE), else xt's NFQUEUE target (revision 0: struct
// xt_NFQ_info { __u16 queuenum; }, host order, padded to 8 bytes).
func (l *lab) addQueueRule(chain string, proto byte, port uint16) error {
	var errs []error
	var info xt.Unknown = make([]byte, 8)
	binary.NativeEndian.PutUint16(info, l.num)
	for _, verdict := range []expr.Any{
		&expr.Queue{Num: l.num},
		&expr.Target{Name: "NFQUEUE", Rev: 0, Info: &info},
	} {
		c, err := nftables.New(nftables.WithNetNSFd(int(l.h)))
		if err != nil {
			return err
		}
		table := &nftables.Table{Name: "egnfq", Family: nftables.TableFamilyIPv4}
		c.AddRule(&nftables.Rule{Table: table, Chain: &nftables.Chain{Name: chain, Table: table}, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
			verdict,
		}})
		err = c.Flush()
		c.CloseLasting()
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// forward makes the lab a gateway between a sandbox and a fake internet, each a namespace
// of its own (DESIGN §10 addresses), and returns their paths:
//
//	sbx eth0 100.96.0.2/30 ── egsbx0 100.96.0.1/30 lab up0 198.18.0.2/30 ── eth0 198.18.0.1/30 inet
//	inet lo: 203.0.113.10
func (l *lab) forward(t testing.TB) (sbx, inet string) {
	t.Helper()
	sbx, _ = testnet.NewNetNS(t, "egnfq-sbx")
	inet, _ = testnet.NewNetNS(t, "egnfq-inet")
	for _, args := range [][]string{
		{sbx, "link", "add", "eth0", "type", "veth", "peer", "name", "egsbx0", "netns", l.name},
		{l.name, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", inet},
		{sbx, "addr", "add", "100.96.0.2/30", "dev", "eth0"},
		{sbx, "link", "set", "eth0", "up"},
		{sbx, "route", "add", "default", "via", "100.96.0.1"},
		{l.name, "addr", "add", "100.96.0.1/30", "dev", "egsbx0"},
		{l.name, "addr", "add", "198.18.0.2/30", "dev", "up0"},
		{l.name, "link", "set", "egsbx0", "up"},
		{l.name, "link", "set", "up0", "up"},
		{l.name, "route", "add", "203.0.113.0/24", "via", "198.18.0.1"},
		{inet, "addr", "add", "198.18.0.1/30", "dev", "eth0"},
		{inet, "addr", "add", "203.0.113.10/32", "dev", "lo"},
		{inet, "link", "set", "eth0", "up"},
		{inet, "route", "add", "100.96.0.0/16", "via", "198.18.0.2"},
	} {
		l.cmd(t, "", append([]string{"ip", "-n"}, args...)...)
	}
	err := netns.Do(l.path(), func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0) })
	if err != nil {
		t.Fatal(err)
	}
	return "/run/netns/" + sbx, "/run/netns/" + inet
}

// cmd runs a command (stdin: in) with a bound time.
func (l *lab) cmd(t testing.TB, in string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, args[0], args[1:]...)
	c.Stdin = strings.NewReader(in)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (l *lab) path() string { return "/run/netns/" + l.name }

// open binds the lab's queue; the test's cleanup closes it.
func (l *lab) open(t testing.TB) *Queue { return l.openLen(t, 0) }

func (l *lab) openLen(t testing.TB, maxLen uint32) *Queue {
	t.Helper()
	q, err := Open(l.num, Config{NetNSFd: int(l.h), MaxLen: maxLen})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

// run runs q until the test ends, sending each packet to the returned channel.
func (l *lab) run(t testing.TB, q *Queue) <-chan Packet {
	t.Helper()
	ch := make(chan Packet, 10000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx, func(p Packet) { ch <- p }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run after cancel: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return ch
}

// udpServer listens on 127.0.0.1:udpPort in the lab and sends what it receives to the
// returned channel.
func (l *lab) udpServer(t testing.TB) <-chan string { return l.udpServerOn(t, udpPort) }

// udpServerOn listens on 127.0.0.1:port: a port other than udpPort is not queued.
func (l *lab) udpServerOn(t testing.TB, port int) <-chan string {
	t.Helper()
	pc, err := netns.ListenPacketIn(l.path(), "udp4", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	ch := make(chan string, 10000)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

// tcpServer listens on 127.0.0.1:tcpPort in the lab, accepts one connection, and sends
// each read's data to the returned channel until the test ends.
func (l *lab) tcpServer(t *testing.T) <-chan string {
	t.Helper()
	ln, err := netns.ListenIn(l.path(), "tcp4", "127.0.0.1:9100")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 1)
	t.Cleanup(func() {
		ln.Close()
		if c, ok := <-conns; ok {
			c.Close()
		}
	})
	read := make(chan string, 100)
	go func() {
		defer close(conns)
		s, err := ln.Accept()
		if err != nil {
			return
		}
		conns <- s
		b := make([]byte, 100)
		for {
			n, err := s.Read(b)
			if err != nil {
				return
			}
			read <- string(b[:n])
		}
	}()
	return read
}

// udpClient is a UDP socket of the lab connected to the server: one flow.
func (l *lab) udpClient(t testing.TB) net.Conn { return l.udpClientTo(t, udpPort) }

func (l *lab) udpClientTo(t testing.TB, port int) net.Conn {
	t.Helper()
	c, err := netns.DialIn(l.path())(context.Background(), "udp4", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ctMark is the conntrack mark of the lab's flow from local port sport to dport.
func (l *lab) ctMark(t testing.TB, sport, dport uint16) (uint32, bool) {
	t.Helper()
	c, err := conntrack.Dial(&netlink.Config{NetNS: int(l.h)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		if f.TupleOrig.Proto.SourcePort == sport && f.TupleOrig.Proto.DestinationPort == dport {
			return f.Mark, true
		}
	}
	return 0, false
}

// recv waits (bounded) for the next value of ch.
func recv[T any](ch <-chan T, within time.Duration) (T, bool) {
	select {
	case v := <-ch:
		return v, true
	case <-time.After(within):
		var zero T
		return zero, false
	}
}
