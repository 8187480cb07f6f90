package console

import (
	"os"
	"os/exec"
	"testing"
)

// TestLogicInNode runs testdata/logic.test.mjs, the tests of assets/logic.js, with Node's own
// test runner. Without Node it skips on a laptop and fails under CI=true.
func TestLogicInNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is missing; .ci/run must install it")
		}
		t.Skip("node is missing")
	}
	out, err := exec.Command(node, "--test", "testdata/logic.test.mjs").CombinedOutput()
	if err != nil {
		t.Fatalf("node --test testdata/logic.test.mjs: %v\n%s", err, out)
	}
}
