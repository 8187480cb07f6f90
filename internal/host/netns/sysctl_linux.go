package netns

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Sysctls under /proc/sys/net belong to the network namespace of the thread that opens
// them. Called plainly, these functions act on egressd's own namespace (every unlocked
// thread is in it); inside Do, on the namespace Do entered.

// sysctlPath turns "net.ipv4.ip_forward" into /proc/sys/net/ipv4/ip_forward. A name with
// a "/" is taken as a path below /proc/sys as it is, for keys with dots in them
// ("net/ipv6/conf/eth0.100/disable_ipv6").
func sysctlPath(name string) (string, error) {
	if !strings.Contains(name, "/") {
		name = strings.ReplaceAll(name, ".", "/")
	}
	p := filepath.Join("/proc/sys", name)
	if !strings.HasPrefix(p, "/proc/sys/") || strings.Contains(name, "..") {
		return "", fmt.Errorf("netns: bad sysctl name %q", name)
	}
	return p, nil
}

// Sysctl reads a kernel parameter ("net.ipv4.ip_forward"), without the trailing newline.
func Sysctl(name string) (string, error) {
	p, err := sysctlPath(name)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("netns: sysctl %s: %w", name, err)
	}
	return string(bytes.TrimRight(b, "\n")), nil
}

// SetSysctl writes a kernel parameter, unless it already has that value (so that a repeated
// call changes nothing, and a read-only /proc/sys is no error when nothing needs changing).
func SetSysctl(name, value string) error {
	if cur, err := Sysctl(name); err == nil && cur == value {
		return nil
	}
	p, err := sysctlPath(name)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("netns: sysctl %s=%s: %w", name, value, err)
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("netns: sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

// EnableForwarding sets net.ipv4.ip_forward=1 in the calling namespace, which the gateway
// needs to forward and masquerade what allowed_cidrs allows. In production egressd runs in
// the host's namespace, so this turns on forwarding for the whole host: the operator must
// know (egressd's nftables table drops what it does not allow, but other interfaces of the
// host are then routed too, subject to the host's own firewall). Writing ip_forward also
// resets some per-interface settings, as the kernel documents. Tests call it through Do,
// in their own gateway namespace.
func EnableForwarding() error {
	return SetSysctl("net.ipv4.ip_forward", "1")
}

// disableIPv6 switches IPv6 off for the named interfaces ("all", "default", "eth0"…) of the
// calling namespace. On a kernel without IPv6 there is nothing to switch off.
func disableIPv6(ifaces ...string) error {
	if _, err := os.Stat("/proc/sys/net/ipv6"); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for _, i := range ifaces {
		if err := SetSysctl("net/ipv6/conf/"+i+"/disable_ipv6", "1"); err != nil {
			return err
		}
	}
	return nil
}
