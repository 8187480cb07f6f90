package testnet

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// Framings of a Pieces response.
const (
	FramingLength  = "length"  // Content-Length
	FramingChunked = "chunked" // Transfer-Encoding: chunked, chunks of uneven sizes
	FramingClose   = "close"   // neither: the body ends when the server closes
)

// PiecesBody is the body that /pieces?n=N&seed=S serves: N bytes that a seeded generator
// makes, so that a byte moved, lost or repeated anywhere changes its digest.
func PiecesBody(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Digest is the hex SHA-256 of b, as the X-Body-SHA256 header of /pieces and /sha256 give it.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// pieces serves /pieces?n=N&seed=S&framing=length|chunked|close the way a hand-written
// origin does, which is what breaks a proxy that assumes one write per response: the
// header, then the body, in many writes of uneven sizes (one byte to some 20 KB, the
// header itself cut in two), with pauses between some of them, so that a reader sees the
// header alone and the body arrive in pieces. The header X-Body-SHA256 is the digest of
// the body.
func pieces(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, _ := strconv.Atoi(q.Get("n"))
	seed, _ := strconv.ParseUint(q.Get("seed"), 10, 64)
	framing := q.Get("framing")
	if n < 0 || n > 64<<20 || (framing != FramingLength && framing != FramingChunked && framing != FramingClose) {
		http.Error(w, "want n (0 to 64 MiB), seed and framing=length|chunked|close", http.StatusBadRequest)
		return
	}
	body := PiecesBody(n, seed)
	c, brw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	pw := &piecewise{w: brw.Writer, rnd: rand.New(rand.NewPCG(seed, 1))}

	hdr := "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Body-SHA256: " + Digest(body) + "\r\n"
	switch framing {
	case FramingLength:
		hdr += "Content-Length: " + strconv.Itoa(n) + "\r\n"
	case FramingChunked:
		hdr += "Transfer-Encoding: chunked\r\n"
	case FramingClose:
		hdr += "Connection: close\r\n"
	}
	hdr += "\r\n"
	pw.write([]byte(hdr[:len(hdr)/2]))
	pw.pause()
	pw.write([]byte(hdr[len(hdr)/2:]))
	pw.pause()
	for off := 0; off < len(body) && pw.err == nil; {
		k := min(pw.size(), len(body)-off)
		if framing == FramingChunked {
			pw.write([]byte(fmt.Sprintf("%x\r\n", k)))
		}
		pw.writeUneven(body[off : off+k])
		if framing == FramingChunked {
			pw.write([]byte("\r\n"))
		}
		off += k
	}
	if framing == FramingChunked {
		pw.write([]byte("0\r\n\r\n"))
	}
	if framing != FramingClose {
		// Keep the connection open a moment, as a kept-alive server does: the reader must
		// end the body by its framing, not by the close.
		io.Copy(io.Discard, io.LimitReader(brw, 1))
	}
}

// piecewise writes to a connection in flushed pieces of uneven sizes, pausing now and then.
type piecewise struct {
	w   *bufio.Writer
	rnd *rand.Rand
	n   int
	err error
}

// size is the length of the next piece: mostly small, sometimes large.
func (p *piecewise) size() int {
	if p.rnd.IntN(4) == 0 {
		return 1 + p.rnd.IntN(20000)
	}
	return 1 + p.rnd.IntN(3000)
}

func (p *piecewise) write(b []byte) {
	if p.err != nil {
		return
	}
	if _, p.err = p.w.Write(b); p.err == nil {
		p.err = p.w.Flush()
	}
	if p.n++; p.n%7 == 0 {
		p.pause()
	}
}

// writeUneven writes b in two writes cut at a random place.
func (p *piecewise) writeUneven(b []byte) {
	cut := p.rnd.IntN(len(b) + 1)
	p.write(b[:cut])
	p.write(b[cut:])
}

func (p *piecewise) pause() { time.Sleep(time.Duration(1+p.rnd.IntN(3)) * time.Millisecond) }

// WriteInPieces answers body with a Content-Length, the header sent on its own and the
// body after a pause, in flushed pieces of uneven sizes: what a proxy that expects one
// write per response gets wrong.
func WriteInPieces(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	flush := func() {
		if f != nil {
			f.Flush()
		}
	}
	flush()
	rnd := rand.New(rand.NewPCG(uint64(len(body)), 2))
	for off := 0; off < len(body); {
		time.Sleep(time.Duration(1+rnd.IntN(3)) * time.Millisecond)
		k := min(1+rnd.IntN(3000), len(body)-off)
		if _, err := w.Write(body[off : off+k]); err != nil {
			return
		}
		flush()
		off += k
	}
}

// sha256Body serves /sha256: it reads the request body and answers its length and
// digest, so that a test sees whether an upload arrived whole.
func sha256Body(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%d %s\n", n, hex.EncodeToString(h.Sum(nil)))
}
