package sni

import (
	"encoding/binary"
	"fmt"
)

// maxRecords bounds the TLS records one ClientHello may span. Real clients use one; a
// ClientHello over 16 KiB needs two; more is someone probing the verifier.
const maxRecords = 16

// HelloEnd reads the TLS records at the start of a connection from p, the first bytes the
// client sent, and says whether they hold a whole ClientHello: end is then the end of the
// hello's last record (the bytes to judge are p[:end]). limit bounds end. An error (wrapping
// ErrNotTLS, ErrMalformed, ErrTooLarge or ErrBeyondHello) is final: more bytes cannot
// mend it. With neither (end 0, err nil), more bytes are needed.
//
// It reads the framing only (record headers, the handshake message's type and length);
// the hello itself is ServerName's to parse. The kernel fast path (package fastpath)
// holds a flow's packets until HelloEnd finds the end, and refuses bytes past it; the
// proxies read with ServerName, which refuses a handshake record after it.
func HelloEnd(p []byte, limit int) (end int, err error) {
	if len(p) >= 1 && p[0] != 0x16 {
		return 0, fmt.Errorf("%w: first byte 0x%02x is not a TLS handshake record", ErrNotTLS, p[0])
	}
	if len(p) >= 2 && p[1] != 3 {
		return 0, fmt.Errorf("%w: record version %d.%d", ErrNotTLS, p[1], p[2%len(p)])
	}
	var (
		hdr  [4]byte // the handshake message header, gathered across records
		nhdr int
		need = -1 // handshake bytes still wanted once the header is known
		pos  int
	)
	for rec := 0; ; rec++ {
		if pos+5 > len(p) {
			return 0, nil
		}
		typ, major, n := p[pos], p[pos+1], int(binary.BigEndian.Uint16(p[pos+3:]))
		switch {
		case rec >= maxRecords:
			return 0, fmt.Errorf("%w: ClientHello spans more than %d TLS records", ErrTooLarge, maxRecords)
		case typ != 22:
			return 0, fmt.Errorf("%w: TLS record %d at byte %d is of type %d, not handshake, before the ClientHello ends", ErrMalformed, rec+1, pos, typ)
		case major != 3:
			return 0, fmt.Errorf("%w: TLS record %d at byte %d has version %d.%d", ErrMalformed, rec+1, pos, major, p[pos+2])
		case n == 0 || n > 1<<14:
			return 0, fmt.Errorf("%w: TLS record %d at byte %d has length %d", ErrMalformed, rec+1, pos, n)
		case pos+5+n > limit:
			return 0, fmt.Errorf("%w: TLS record %d ends at byte %d, past the %d bytes a ClientHello may take", ErrTooLarge, rec+1, pos+5+n, limit)
		}
		body := p[pos+5 : min(pos+5+n, len(p))]
		for nhdr < 4 && len(body) > 0 {
			hdr[nhdr] = body[0]
			body, nhdr = body[1:], nhdr+1
			if nhdr == 4 {
				if hdr[0] != 1 {
					return 0, fmt.Errorf("%w: first handshake message is of type %d, not ClientHello", ErrNotTLS, hdr[0])
				}
				need = int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
				if 4+need > limit {
					return 0, fmt.Errorf("%w: ClientHello of %d bytes, more than the %d a ClientHello may take", ErrTooLarge, 4+need, limit)
				}
			}
		}
		if pos+5+n > len(p) { // the record is not all here yet
			return 0, nil
		}
		if need >= 0 && len(body) >= need {
			if len(body) > need {
				return 0, fmt.Errorf("%w: TLS record %d holds %d bytes after the ClientHello", ErrBeyondHello, rec+1, len(body)-need)
			}
			return pos + 5 + n, nil
		}
		if need >= 0 {
			need -= len(body)
		}
		pos += 5 + n
	}
}
