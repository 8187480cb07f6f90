package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTransparentDocCommands: every egressd command line in the sh blocks of
// docs/transparent.md (the gateway's start, with and without --fast-path) is one that
// egressd accepts, flags and role, so the doc cannot show a command that fails as written.
// (Starting it for real would install its table in this host's namespace: the e2e suite
// runs the gateway with these flags inside namespaces it makes.)
func TestTransparentDocCommands(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "transparent.md"))
	if err != nil {
		t.Fatal(err)
	}
	var cmds [][]string
	inSh := false
	for _, line := range strings.Split(string(doc), "\n") {
		switch {
		case strings.HasPrefix(line, "```"):
			inSh = !inSh && line == "```sh"
		case inSh:
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "sudo" && f[1] == "egressd" {
				cmds = append(cmds, f[2:])
			}
		}
	}
	if len(cmds) < 2 {
		t.Fatalf("docs/transparent.md shows %d egressd commands, want the gateway's start and the fast path's", len(cmds))
	}
	fast := false
	for _, args := range cmds {
		cfg, err := parseFlags(args)
		if err == nil {
			err = checkRole(cfg)
		}
		if err != nil {
			t.Errorf("egressd %s: %v", strings.Join(args, " "), err)
			continue
		}
		fast = fast || cfg.fastPath
	}
	if !fast {
		t.Error("no command of docs/transparent.md turns on --fast-path")
	}
}
