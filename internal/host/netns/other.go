//go:build !linux

package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"runtime"
)

// Network namespaces exist on Linux only. Elsewhere the package builds (egressd runs its
// explicit proxy on any OS) and every operation fails with ErrUnsupported.

var errUnsupported = fmt.Errorf("netns: network namespaces need Linux, not %s: %w", runtime.GOOS, errors.ErrUnsupported)

// Create fails: see the package documentation.
func (m *Manager) Create(a Attachment) error { return errUnsupported }

// Delete fails: see the package documentation.
func (m *Manager) Delete(name string) error { return errUnsupported }

// List fails: see the package documentation.
func (m *Manager) List() ([]string, error) { return nil, errUnsupported }

// EnableForwarding fails: see the package documentation.
func (m *Manager) EnableForwarding() error { return errUnsupported }

// Start fails: see the package documentation.
func (m *Manager) Start(name string, cmd *exec.Cmd) error { return errUnsupported }

// Do fails: see the package documentation.
func Do(path string, fn func() error) error { return errUnsupported }

// CreateNS fails: see the package documentation.
func CreateNS(path string) error { return errUnsupported }

// RemoveNS fails: see the package documentation.
func RemoveNS(path string) error { return errUnsupported }

// ExecOption changes how StartIn starts a process.
type ExecOption func(*execConfig)

type execConfig struct{ resolvConf string }

// WithResolvConf: see the Linux documentation.
func WithResolvConf(file string) ExecOption {
	return func(c *execConfig) { c.resolvConf = file }
}

// StartIn fails: see the package documentation.
func StartIn(path string, cmd *exec.Cmd, opts ...ExecOption) error { return errUnsupported }

// RunIn fails: see the package documentation.
func RunIn(path string, cmd *exec.Cmd, opts ...ExecOption) error { return errUnsupported }

// DialIn returns a dial function that fails: see the package documentation.
func DialIn(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(context.Context, string, string) (net.Conn, error) { return nil, errUnsupported }
}

// ListenIn fails: see the package documentation.
func ListenIn(path, network, addr string) (net.Listener, error) { return nil, errUnsupported }

// ListenPacketIn fails: see the package documentation.
func ListenPacketIn(path, network, addr string) (net.PacketConn, error) {
	return nil, errUnsupported
}

// Sysctl fails: see the package documentation.
func Sysctl(name string) (string, error) { return "", errUnsupported }

// SetSysctl fails: see the package documentation.
func SetSysctl(name, value string) error { return errUnsupported }

// EnableForwarding fails: see the package documentation.
func EnableForwarding() error { return errUnsupported }
