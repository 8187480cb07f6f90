package events

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// The event ring's files (disk.go) are a sequence of frames, one a record:
//
//	length   uint32, little-endian: the size of payload
//	checksum uint32, little-endian: CRC-32C (Castagnoli) of the length's 4 bytes and payload
//	payload  the record as JSON, as the events API sends it
//
// A process that dies in the middle of a write leaves a frame that is short or whose
// checksum does not match: the reader stops there, and the ring drops that tail.

const (
	frameHeader = 8
	// maxPayload bounds a frame's length: a record is a few hundred bytes of JSON, so a
	// length beyond this is a corrupt header, not a record to allocate for.
	maxPayload = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt is a frame whose header or checksum is wrong, or whose payload is not a record.
var errCorrupt = errors.New("corrupt record")

// appendFrame appends r's frame to dst.
func appendFrame(dst []byte, r *Record) ([]byte, error) {
	payload, err := json.Marshal(r)
	if err != nil {
		return dst, fmt.Errorf("events: encoding a record: %w", err)
	}
	if len(payload) > maxPayload {
		return dst, fmt.Errorf("events: a record of %d bytes is larger than a frame may be (%d)", len(payload), maxPayload)
	}
	var hdr [frameHeader]byte
	binary.LittleEndian.PutUint32(hdr[:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(hdr[4:], checksum(hdr[:4], payload))
	return append(append(dst, hdr[:]...), payload...), nil
}

func checksum(length, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(length, castagnoli), castagnoli, payload)
}

// readFrame reads one frame from rd into r, using buf for the payload, and returns the
// frame's size and the buffer (grown if it had to be). At the end of rd it returns io.EOF
// when no byte of a frame was there, io.ErrUnexpectedEOF when a frame was cut short (a torn
// write), and errCorrupt (wrapped) when a frame is whole but wrong.
func readFrame(rd io.Reader, buf []byte, r *Record) (int, []byte, error) {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(rd, hdr[:]); err != nil {
		return 0, buf, err
	}
	n := binary.LittleEndian.Uint32(hdr[:4])
	if n == 0 || n > maxPayload {
		return 0, buf, fmt.Errorf("%w: length %d", errCorrupt, n)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(rd, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, buf, err
	}
	if checksum(hdr[:4], buf) != binary.LittleEndian.Uint32(hdr[4:]) {
		return 0, buf, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	*r = Record{}
	if err := json.Unmarshal(buf, r); err != nil {
		return 0, buf, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	if r.Seq == 0 {
		return 0, buf, fmt.Errorf("%w: no seq", errCorrupt)
	}
	return frameHeader + int(n), buf, nil
}
