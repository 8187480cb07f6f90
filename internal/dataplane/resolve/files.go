package resolve

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// recheck is how often a system file is looked at again for a change: often enough that an
// edit applies within seconds, rarely enough that a query flood does not stat per query.
const recheck = 5 * time.Second

// fileCache holds what was parsed from a file, parsed again when the file's size or
// modification time changes.
type fileCache[T any] struct {
	mu      sync.Mutex
	checked time.Time
	mod     time.Time
	size    int64
	val     T
	err     error
	loaded  bool
}

func (c *fileCache[T]) get(path string, parse func(string) (T, error)) (T, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.loaded && now.Sub(c.checked) < recheck {
		return c.val, c.err
	}
	c.checked = now
	fi, err := os.Stat(path)
	if err != nil {
		var zero T
		c.val, c.err, c.loaded = zero, err, true
		c.mod, c.size = time.Time{}, -1
		return c.val, c.err
	}
	if c.loaded && c.err == nil && fi.ModTime().Equal(c.mod) && fi.Size() == c.size {
		return c.val, nil
	}
	c.val, c.err = parse(path)
	c.mod, c.size, c.loaded = fi.ModTime(), fi.Size(), true
	return c.val, c.err
}

// hostsTable maps a lower-case FQDN to its addresses in the file's order.
type hostsTable map[string][]netip.Addr

func readHosts(path string) (hostsTable, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseHosts(data), nil
}

// parseHosts reads hosts(5): an address, then names, "#" to the end of a line a comment.
// A line whose address does not parse is skipped, as the system skips it; a zone is dropped
// (an address with a zone cannot be dialled by a gateway anyway).
func parseHosts(data []byte) hostsTable {
	t := hostsTable{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			continue
		}
		a = a.Unmap().WithZone("")
		for _, name := range f[1:] {
			k := strings.ToLower(dns.Fqdn(name))
			if _, ok := dns.IsDomainName(k); !ok {
				continue
			}
			t[k] = append(t[k], a)
		}
	}
	return t
}
