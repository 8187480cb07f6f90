//go:build !linux

package main

import (
	"errors"
	"io"
	"os"
)

// isTerminal is false where egressctl cannot turn echo off: the value is then read as it comes.
func isTerminal(io.Reader) bool { return false }

func readHidden(*os.File) ([]byte, error) {
	return nil, errors.New("reading from a terminal without echo is not supported here; pipe the value or give --value-file")
}
