package nfqueue

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"github.com/egressd/egressd/internal/host/netns"
)

// procTable is the kernel's table of queues. Under /proc/thread-self (not /proc/self,
// which follows the main thread's namespace) it is the calling thread's namespace's, and
// an open file keeps the namespace it was opened in.
const procTable = "/proc/thread-self/net/netfilter/nfnetlink_queue"

// openProc opens the queue table of the namespace at fd (0: the caller's), or returns nil.
func openProc(nsFd int) *os.File {
	var f *os.File
	open := func() (err error) { f, err = os.Open(procTable); return err }
	var err error
	if nsFd == 0 {
		err = open()
	} else {
		err = netns.Do(fmt.Sprintf("/proc/self/fd/%d", nsFd), open)
	}
	if err != nil {
		return nil
	}
	return f
}

// readProc reads queue num's queue_dropped and user_dropped from the table, 0 when absent.
// A line: queue_num portid queue_total copy_mode copy_range queue_dropped user_dropped
// id_sequence 1.
func readProc(f *os.File, num uint16) (queueDropped, userDropped uint64) {
	var buf [4096]byte
	n, _ := f.ReadAt(buf[:], 0)
	return parseProc(buf[:n], num)
}

func parseProc(b []byte, num uint16) (queueDropped, userDropped uint64) {
	for line := range bytes.Lines(b) {
		var f [9][]byte
		i := 0
		for w := range bytes.FieldsSeq(line) {
			if i == len(f) {
				break
			}
			f[i] = w
			i++
		}
		if i < 7 {
			continue
		}
		if q, err := strconv.ParseUint(string(f[0]), 10, 16); err != nil || uint16(q) != num {
			continue
		}
		queueDropped, _ = strconv.ParseUint(string(f[5]), 10, 64)
		userDropped, _ = strconv.ParseUint(string(f[6]), 10, 64)
		return queueDropped, userDropped
	}
	return 0, 0
}
