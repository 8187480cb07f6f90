package console

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSDKCopyIsFresh builds sdk/js into a temporary directory and compares its output with
// the copy in assets/sdk: a change to the SDK that was not copied (go generate) fails here.
// Without Node and the SDK's TypeScript (npm ci in sdk/js) it skips on a laptop and fails
// under CI=true, where .ci/run installs them first.
func TestSDKCopyIsFresh(t *testing.T) {
	sdk, err := filepath.Abs("../../../sdk/js")
	if err != nil {
		t.Fatal(err)
	}
	tsc := filepath.Join(sdk, "node_modules", ".bin", "tsc")
	_, nodeErr := exec.LookPath("node")
	_, tscErr := os.Stat(tsc)
	if nodeErr != nil || tscErr != nil {
		msg := "node and sdk/js's TypeScript (cd sdk/js && npm ci) are needed to check assets/sdk"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; .ci/run must install them before go test")
		}
		t.Skip(msg)
	}
	out := t.TempDir()
	cmd := exec.Command(tsc, "-p", filepath.Join(sdk, "tsconfig.json"), "--outDir", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building sdk/js: %v\n%s", err, b)
	}
	fresh, _ := filepath.Glob(filepath.Join(out, "*.js"))
	copied, _ := filepath.Glob(filepath.Join("assets", "sdk", "*.js"))
	base := func(paths []string) []string {
		var names []string
		for _, p := range paths {
			names = append(names, filepath.Base(p))
		}
		slices.Sort(names)
		return names
	}
	if got, want := base(copied), base(fresh); !slices.Equal(got, want) {
		t.Fatalf("assets/sdk has %v, a fresh build of sdk/js has %v: run go generate ./internal/controlplane/console", got, want)
	}
	for _, name := range base(fresh) {
		a, _ := os.ReadFile(filepath.Join(out, name))
		b, _ := os.ReadFile(filepath.Join("assets", "sdk", name))
		if !bytes.Equal(a, b) {
			t.Errorf("assets/sdk/%s differs from a fresh build of sdk/js: run go generate ./internal/controlplane/console", name)
		}
	}
	lic, _ := os.ReadFile(filepath.Join(sdk, "LICENSE"))
	copiedLic, _ := os.ReadFile(filepath.Join("assets", "sdk", "LICENSE.txt"))
	if len(lic) == 0 || !bytes.Equal(lic, copiedLic) {
		t.Error("assets/sdk/LICENSE.txt is not sdk/js/LICENSE")
	}
	// The copy must be usable in a browser as it is: relative ES module imports only.
	for _, name := range base(copied) {
		b, _ := os.ReadFile(filepath.Join("assets", "sdk", name))
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "import ") || strings.HasPrefix(line, "export ") && strings.Contains(line, " from ") {
				if !strings.Contains(line, `from "./`) && !strings.HasPrefix(line, "import type") {
					t.Errorf("assets/sdk/%s imports something a browser cannot find: %s", name, line)
				}
			}
		}
	}
}
