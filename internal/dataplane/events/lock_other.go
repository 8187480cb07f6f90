//go:build !unix

package events

import (
	"fmt"
	"os"
)

// lockDir only creates dir/lock where flock(2) is not available: there, keeping two
// processes off one ring is the operator's job.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(dir+"/lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("events: event ring: %w", err)
	}
	return f, nil
}
