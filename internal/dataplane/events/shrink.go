package events

import (
	"fmt"
	"os"
)

// tmpSuffix marks a segment being written by fit; one left by a crash is removed at start.
const tmpSuffix = ".tmp"

// fit makes a ring loaded from disk fit its bounds, which may have shrunk since it was
// written: whole segments go from the oldest end while that is enough, then the oldest
// records of the oldest segment left, whose newest records are written anew as segments of
// the new size. perSeg is the segments' records, as d.segs; fit returns what is left of it.
//
// A crash in the middle leaves either the old segment (fit runs again at the next start) or
// the old one and new ones beside it, whose records then repeat Seqs already read: the loader
// drops those as corrupt, and fit runs again.
func (d *diskRing) fit(perSeg [][]Record) ([][]Record, error) {
	for len(d.segs) > 0 {
		overRecords := d.total() - int64(d.keep)
		overBytes := d.totalBytes() - d.keepBytes
		if overRecords <= 0 && overBytes <= 0 {
			return perSeg, nil
		}
		s := &d.segs[0]
		if int64(s.records) <= overRecords || s.bytes <= overBytes {
			d.remove(s)
			d.segs, perSeg = d.segs[1:], perSeg[1:]
			continue
		}
		// Keep the newest records of s that fit beside the newer segments.
		recs := perSeg[0]
		frames := make([][]byte, len(recs))
		var kept int64
		for i := range recs {
			b, err := appendFrame(nil, &recs[i])
			if err != nil {
				return nil, err
			}
			frames[i] = b
			kept += int64(len(b))
		}
		from := 0
		restBytes := d.totalBytes() - s.bytes
		for from < len(recs) && (int64(len(recs)-from) > int64(s.records)-max(overRecords, 0) || restBytes+kept > d.keepBytes) {
			kept -= int64(len(frames[from]))
			from++
		}
		segs, parts, err := d.rewrite(recs[from:], frames[from:])
		if err != nil {
			return nil, err
		}
		if len(segs) == 0 || segs[0].first != s.first { // else the rename replaced it
			d.remove(s)
		}
		d.segs = append(segs, d.segs[1:]...)
		perSeg = append(parts, perSeg[1:]...)
	}
	return perSeg, nil
}

// rewrite writes recs (whose frames are given) as segments of the ring's segment size, each
// to a temporary file first, synced and then renamed.
func (d *diskRing) rewrite(recs []Record, frames [][]byte) ([]segment, [][]Record, error) {
	var segs []segment
	var parts [][]Record
	for start := 0; start < len(recs); {
		s := segment{first: recs[start].Seq}
		var b []byte
		end := start
		for end < len(recs) && int64(s.records) < d.segRecords && (s.records == 0 || s.bytes+int64(len(frames[end])) <= d.segBytes) {
			b = append(b, frames[end]...)
			s.records++
			s.bytes += int64(len(frames[end]))
			end++
		}
		path := s.path(d.dir)
		if err := writeSynced(path+tmpSuffix, b); err != nil {
			return nil, nil, err
		}
		if err := os.Rename(path+tmpSuffix, path); err != nil {
			return nil, nil, fmt.Errorf("events: event ring: %w", err)
		}
		segs = append(segs, s)
		parts = append(parts, recs[start:end])
		start = end
	}
	syncDir(d.dir)
	return segs, parts, nil
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("events: event ring: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("events: event ring: %w", err)
	}
	return nil
}
