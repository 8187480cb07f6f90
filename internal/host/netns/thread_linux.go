package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// This file holds every namespace switch of egressd. The rules, which keep a goroutine's
// sockets in the namespace its code expects:
//
//   - a switch happens only on a goroutine started here, locked to its OS thread, never on
//     the caller's goroutine, so the caller's thread never leaves its namespace;
//   - the thread goes back to its original namespace before it is unlocked;
//   - a thread that could not be put back (or whose mount namespace or filesystem state
//     was changed on purpose) stays locked when its goroutine ends, and the Go runtime
//     then terminates it instead of reusing it;
//   - the main thread is never used for a switch, because the runtime cannot terminate it
//     (it would park it for ever, and /proc/self/ns/* would then name a foreign namespace).

// withThread runs fn on a fresh goroutine locked to an OS thread other than the main
// thread, and waits for it. fn reports whether it left the thread as it found it; if not
// (or if it panicked), the thread is discarded. A panic in fn is raised again in the caller.
func withThread(fn func() (clean bool, err error)) error {
	r := <-onThread(fn)
	if r.panicked {
		panic(r.value)
	}
	return r.err
}

type threadResult struct {
	err      error
	panicked bool
	value    any
}

func onThread(fn func() (clean bool, err error)) <-chan threadResult {
	done := make(chan threadResult, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The main thread. While this goroutine holds it, the nested goroutine
			// cannot be scheduled on it: one level of nesting is enough.
			r := <-onThread(fn)
			runtime.UnlockOSThread()
			done <- r
			return
		}
		var r threadResult
		clean := false
		func() {
			defer func() {
				if p := recover(); p != nil {
					r.panicked, r.value = true, p
				}
			}()
			clean, r.err = fn()
		}()
		if clean && !r.panicked {
			runtime.UnlockOSThread()
		}
		done <- r // the goroutine ends; if still locked, its thread goes with it
	}()
	return done
}

// threadNS is the path of the current thread's network namespace.
func threadNS() string {
	return fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
}

func openNS(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, nil
}

// inNS is the body of a switch: enter the namespace fd, run fn, go back. It must run on a
// locked thread (see withThread).
func inNS(fd int, fn func() error) (clean bool, err error) {
	orig, err := openNS(threadNS())
	if err != nil {
		return true, fmt.Errorf("netns: opening the thread's own namespace: %w", err)
	}
	defer unix.Close(orig)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return true, fmt.Errorf("netns: entering the namespace: %w", err) // setns failed: nothing changed
	}
	defer func() {
		if rerr := unix.Setns(orig, unix.CLONE_NEWNET); rerr != nil {
			clean, err = false, errors.Join(err, fmt.Errorf("netns: restoring the thread's namespace (the thread is discarded): %w", rerr))
			return
		}
		clean = true
	}()
	return false, fn()
}

// Do runs fn on a locked OS thread inside the network namespace at path (a bind mount such
// as /run/netns/<name>, or /proc/<pid>/ns/net) and waits for it. Sockets that fn creates
// belong to that namespace for their whole life, whichever thread uses them later, and so
// do /proc/sys/net files that fn opens. Goroutines that fn starts run elsewhere, in the
// process's namespace. The caller's own thread never changes namespace.
func Do(path string, fn func() error) error {
	fd, err := openNS(path)
	if err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	defer unix.Close(fd)
	return doFd(fd, fn)
}

func doFd(fd int, fn func() error) error {
	return withThread(func() (bool, error) { return inNS(fd, fn) })
}

// CreateNS makes a new, empty network namespace and bind-mounts it on path, which must not
// exist (its directory must). It is what `ip netns add` does, for any path: tests and the
// end-to-end harness use it for their gateway and fake-internet namespaces. The namespace
// lives until RemoveNS, even with no process inside.
func CreateNS(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("netns: creating the mount point: %w", err)
	}
	f.Close()
	err = withThread(func() (clean bool, err error) {
		orig, err := openNS(threadNS())
		if err != nil {
			return true, err
		}
		defer unix.Close(orig)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return true, fmt.Errorf("unshare: %w", err)
		}
		merr := unix.Mount(threadNS(), path, "none", unix.MS_BIND, "")
		if merr != nil {
			merr = fmt.Errorf("bind-mounting the namespace on %s: %w", path, merr)
		}
		if rerr := unix.Setns(orig, unix.CLONE_NEWNET); rerr != nil {
			return false, errors.Join(merr, fmt.Errorf("restoring the thread's namespace (the thread is discarded): %w", rerr))
		}
		return true, merr
	})
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("netns: creating %s: %w", path, err)
	}
	return nil
}

// RemoveNS unmounts the namespace at path and removes the file. The namespace itself goes
// when its last user does: processes inside it, or open handles, keep it alive. A missing
// path is not an error.
func RemoveNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("netns: unmounting %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns: %w", err)
	}
	return nil
}

// isNSMount reports whether path is a mounted namespace (nsfs).
func isNSMount(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, err
	}
	return st.Type == unix.NSFS_MAGIC, nil
}

// ExecOption changes how StartIn starts a process.
type ExecOption func(*execConfig)

type execConfig struct{ resolvConf string }

// WithResolvConf gives the process a private mount namespace, as `ip netns exec` does:
// file is bind-mounted over /etc/resolv.conf (which must exist) and /sys is remounted so
// that /sys/class/net shows the namespace's interfaces. Mounts propagate from the host
// into it (it is a slave), never back.
func WithResolvConf(file string) ExecOption {
	return func(c *execConfig) { c.resolvConf = file }
}

// StartIn starts cmd inside the network namespace at path: the process is forked from a
// thread that is in the namespace, and inherits it. Everything else (user, environment,
// files) is the caller's. Wait for it as usual (cmd.Wait).
func StartIn(path string, cmd *exec.Cmd, opts ...ExecOption) error {
	var cfg execConfig
	for _, o := range opts {
		o(&cfg)
	}
	fd, err := openNS(path)
	if err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	defer unix.Close(fd)
	if cfg.resolvConf == "" {
		return withThread(func() (bool, error) { return inNS(fd, cmd.Start) })
	}
	// A private mount namespace cannot be left again cleanly (unshare gave the thread its
	// own filesystem state, cwd included), so this thread is never reused.
	return withThread(func() (bool, error) {
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return false, fmt.Errorf("netns: entering %s: %w", path, err)
		}
		if err := privateMounts(cfg.resolvConf); err != nil {
			return false, fmt.Errorf("netns: preparing the mounts of a process in %s: %w", path, err)
		}
		return false, cmd.Start()
	})
}

// privateMounts is the mount part of `ip netns exec`, on the current (discarded) thread.
func privateMounts(resolvConf string) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	if err := unix.Mount("", "/", "none", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making / a slave: %w", err)
	}
	var flags uintptr
	var vfs unix.Statfs_t
	if unix.Statfs("/sys", &vfs) == nil && vfs.Flags&unix.ST_RDONLY != 0 {
		flags = unix.MS_RDONLY
	}
	if err := unix.Unmount("/sys", unix.MNT_DETACH); err != nil && err != unix.EINVAL {
		return fmt.Errorf("unmounting /sys: %w", err)
	}
	if err := unix.Mount("sysfs", "/sys", "sysfs", flags, ""); err != nil {
		return fmt.Errorf("mounting /sys: %w", err)
	}
	if err := unix.Mount(resolvConf, "/etc/resolv.conf", "none", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting %s over /etc/resolv.conf: %w", resolvConf, err)
	}
	return nil
}

// RunIn is StartIn followed by cmd.Wait.
func RunIn(path string, cmd *exec.Cmd, opts ...ExecOption) error {
	if err := StartIn(path, cmd, opts...); err != nil {
		return err
	}
	return cmd.Wait()
}

// DialIn returns a dial function (the shape of net.Dialer.DialContext and of
// http.Transport.DialContext) whose sockets are created inside the namespace at path.
// Addresses must be IP literals: a name would be resolved on other goroutines, outside the
// namespace.
func DialIn(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if err := literal(network, addr, false); err != nil {
			return nil, err
		}
		var c net.Conn
		err := Do(path, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// ListenIn is net.Listen inside the namespace at path. The address must be an IP literal
// or have an empty host (every address of the namespace).
func ListenIn(path, network, addr string) (net.Listener, error) {
	if err := literal(network, addr, true); err != nil {
		return nil, err
	}
	var ln net.Listener
	err := Do(path, func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacketIn is net.ListenPacket inside the namespace at path, with ListenIn's rule
// for addresses.
func ListenPacketIn(path, network, addr string) (net.PacketConn, error) {
	if err := literal(network, addr, true); err != nil {
		return nil, err
	}
	var pc net.PacketConn
	err := Do(path, func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// literal refuses addresses whose host would need a lookup, and service names as ports.
func literal(network, addr string, emptyHostOK bool) error {
	if strings.HasPrefix(network, "unix") {
		return nil
	}
	host := addr // "ip", "ip4", "ip6:icmp"…: a bare host
	if !strings.HasPrefix(network, "ip") {
		h, port, err := net.SplitHostPort(addr)
		if err != nil {
			return fmt.Errorf("netns: %s address %q: %w", network, addr, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("netns: %s address %q: the port must be a number", network, addr)
		}
		host = h
	}
	if host == "" && emptyHostOK {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("netns: %s address %q: the host must be an IP address (a name would be resolved outside the namespace)", network, addr)
	}
	return nil
}
