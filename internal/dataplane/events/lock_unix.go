//go:build unix

package events

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockDir takes an exclusive lock on dir/lock, held until the returned file is closed (or
// the process ends), so that two processes never write one ring.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(dir+"/lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("events: event ring: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("events: event ring %s is in use by another egressd process; give each its own --data-dir", dir)
		}
		return nil, fmt.Errorf("events: locking the event ring %s: %w", dir, err)
	}
	return f, nil
}
