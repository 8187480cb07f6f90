package store

import (
	"testing"
	"time"
)

// TestSignal: a channel taken before a Kick is closed by it; one taken after waits for the
// next Kick.
func TestSignal(t *testing.T) {
	var s Signal
	before := s.Next()
	s.Kick()
	select {
	case <-before:
	case <-time.After(time.Second):
		t.Fatal("a Kick did not close the channel taken before it")
	}
	after := s.Next()
	select {
	case <-after:
		t.Fatal("a channel taken after the Kick is closed already")
	default:
	}
	s.Kick()
	select {
	case <-after:
	case <-time.After(time.Second):
		t.Fatal("the second Kick did not close it")
	}
}
