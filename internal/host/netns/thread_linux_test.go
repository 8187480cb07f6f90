package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const hostNS = "/proc/self/ns/net"

func TestCreateRemoveNS(t *testing.T) {
	p := newNS(t)
	if ok, err := isNSMount(p); !ok || err != nil {
		t.Fatalf("isNSMount(%s) = %v, %v", p, ok, err)
	}
	if inode(t, p) == inode(t, hostNS) {
		t.Fatal("the new namespace is the host's")
	}
	if err := CreateNS(p); err == nil {
		t.Fatal("CreateNS over an existing namespace succeeded")
	}
	if err := RemoveNS(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p); !os.IsNotExist(err) {
		t.Fatalf("%s still exists: %v", p, err)
	}
	if err := RemoveNS(p); err != nil {
		t.Fatalf("RemoveNS of a missing path: %v", err)
	}
	// A plain file is not a namespace.
	plain := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(plain, nil, 0o644)
	if ok, _ := isNSMount(plain); ok {
		t.Fatal("a plain file passed for a namespace")
	}
	if err := Do(plain, func() error { return nil }); err == nil {
		t.Fatal("Do entered a plain file")
	}
	if err := Do(filepath.Join(t.TempDir(), "missing"), func() error { return nil }); err == nil {
		t.Fatal("Do entered a missing path")
	}
}

// Do runs fn in the namespace, puts the thread back, and leaves the caller's own thread
// and later sockets in the original namespace.
func TestDoRestoresThread(t *testing.T) {
	p := newNS(t)
	want, host := inode(t, p), inode(t, hostNS)

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := inode(t, "/proc/thread-self/ns/net")
	var inside uint64
	var tid int
	err := Do(p, func() error {
		tid = unix.Gettid()
		inside = inode(t, "/proc/thread-self/ns/net")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside != want {
		t.Fatalf("fn ran in namespace %d, want %d", inside, want)
	}
	if after := inode(t, "/proc/thread-self/ns/net"); after != before || before != host {
		t.Fatalf("caller's thread: namespace %d before, %d after, host %d", before, after, host)
	}
	// The thread that ran fn is back in the host namespace (it lives on, unlocked).
	if got := inode(t, fmt.Sprintf("/proc/self/task/%d/ns/net", tid)); got != host {
		t.Fatalf("thread %d was left in namespace %d", tid, got)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := socketNS(t, ln.(syscall.Conn)); got != host {
		t.Fatalf("a socket made after Do is in namespace %d, want the host's %d", got, host)
	}
}

// After many concurrent Do calls, no thread of the process is left in the namespace, and
// sockets made on any goroutine are in the host namespace.
func TestDoLeavesNoThreadBehind(t *testing.T) {
	p := newNS(t)
	host, other := inode(t, hostNS), inode(t, p)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- Do(p, func() error {
				time.Sleep(time.Millisecond) // so that the calls overlap
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					return err
				}
				return ln.Close()
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		var st syscall.Stat_t
		if syscall.Stat("/proc/self/task/"+task.Name()+"/ns/net", &st) == nil && st.Ino == other {
			t.Errorf("thread %s is still in the namespace", task.Name())
		}
	}
	var mu sync.Mutex
	var bad int
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Error(err)
				return
			}
			defer pc.Close()
			if socketNS(t, pc.(syscall.Conn)) != host {
				mu.Lock()
				bad++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if bad > 0 {
		t.Fatalf("%d sockets were made outside the host namespace", bad)
	}
}

// A thread whose state could not be restored is not reused: the runtime ends it.
func TestDirtyThreadIsDiscarded(t *testing.T) {
	requireRoot(t)
	var tid int
	var ino uint64
	err := withThread(func() (bool, error) {
		tid = unix.Gettid()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return true, err
		}
		ino = inode(t, "/proc/thread-self/ns/net")
		return false, nil // "could not restore"
	})
	if err != nil {
		t.Fatal(err)
	}
	task := fmt.Sprintf("/proc/self/task/%d", tid)
	for i := 0; i < 500; i++ { // the thread exits asynchronously; up to 5 s
		if _, err := os.Stat(task); os.IsNotExist(err) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(task); err == nil {
		if got := inode(t, task+"/ns/net"); got == ino {
			t.Fatalf("thread %d lives on in the namespace it was left in", tid)
		}
	}
}

func TestDoErrorAndPanic(t *testing.T) {
	p := newNS(t)
	boom := errors.New("boom")
	if err := Do(p, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Do returned %v, want fn's error", err)
	}
	func() {
		defer func() {
			if r := recover(); r != "fn panicked" {
				t.Fatalf("recovered %v", r)
			}
		}()
		Do(p, func() error { panic("fn panicked") })
		t.Fatal("the panic did not reach the caller")
	}()
}

// Sockets made by DialIn, ListenIn and ListenPacketIn belong to the namespace, and the
// two namespaces are apart: the namespace's loopback is not the host's.
func TestDialListenIn(t *testing.T) {
	p := newNS(t)
	ns := inode(t, p)
	h := handle(t, p) // lo of a new namespace is down
	if err := h.LinkSetUp(mustLink(t, h, "lo")); err != nil {
		t.Fatal(err)
	}
	ln, err := ListenIn(p, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := socketNS(t, ln.(syscall.Conn)); got != ns {
		t.Fatalf("listener in namespace %d, want %d", got, ns)
	}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialIn(p)(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := socketNS(t, c.(syscall.Conn)); got != ns {
		t.Fatalf("connection in namespace %d, want %d", got, ns)
	}
	buf := make([]byte, 2)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}
	// From the host, the namespace's 127.0.0.1:port is not there.
	if hc, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second); err == nil {
		hc.Close()
		t.Fatal("the namespace's listener was reachable from the host namespace")
	}
	pc, err := ListenPacketIn(p, "udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if got := socketNS(t, pc.(syscall.Conn)); got != ns {
		t.Fatalf("packet socket in namespace %d, want %d", got, ns)
	}
	// Names would be resolved outside the namespace: refused.
	for _, addr := range []string{"localhost:80", "127.0.0.1:http", "127.0.0.1"} {
		if _, err := DialIn(p)(ctx, "tcp", addr); err == nil || !strings.Contains(err.Error(), "netns:") {
			t.Errorf("DialIn %q: %v", addr, err)
		}
	}
	if _, err := ListenIn(p, "tcp", "localhost:0"); err == nil {
		t.Error("ListenIn accepted a host name")
	}
}
