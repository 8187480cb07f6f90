package sqlite

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDir takes an exclusive lock on <dir>/egressd.lock, held until the file is closed (or the
// process dies, so a crash never leaves a stale lock). Two egressd processes on one data
// directory would each work, but neither would hear of the other's changes: one gateway
// would enforce policies the API has replaced. Refusing the second is the safe answer; a
// fleet shares a PostgreSQL store instead.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "egressd.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is in use by another egressd process; give each process its own --data-dir, or share a PostgreSQL --store", dir)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
