package intercept

import (
	"encoding/base64"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/testkit/testnet"
)

// curl runs curl against the engine for https://api.example.test, trusting the
// interception CA only, and returns its output (the -w format's, after the body).
func curl(t *testing.T, e *env, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("curl")
	testnet.Require(t, err == nil, "curl")
	dir := t.TempDir()
	_, port, _ := net.SplitHostPort(e.ln.Addr().String())
	base := []string{"-q", "-sS", "--max-time", "10", "--noproxy", "*",
		"--cacert", e.ca.WriteFile(t, dir), "--connect-to", apiHost + ":443:127.0.0.1:" + port}
	cmd := exec.Command(path, append(base, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestCurl(t *testing.T) {
	for _, tc := range []struct{ flag, version string }{{"--http1.1", "1.1"}, {"--http2", "2"}} {
		t.Run(strings.TrimPrefix(tc.flag, "--"), func(t *testing.T) {
			o := &recorder{}
			e := newEnv(t, envOpts{handler: o})
			ph := e.secrets.add("openai", realKey, apiHost)
			far := e.secrets.add("far", otherReal, otherHost)
			e.pol.set([]string{"GET", "POST"}, []string{"/v1/"})

			out := curl(t, e, tc.flag, "-H", "Authorization: Bearer "+ph, "-d", "body "+ph,
				"-w", " %{http_code} %{http_version}", "https://"+apiHost+"/v1/chat?x=1")
			if out != "ok 200 "+tc.version {
				t.Fatalf("allowed: %q", out)
			}
			got := o.last(t)
			if got.Header.Get("Authorization") != "Bearer "+realKey || got.Body != "body "+ph || got.URI != "/v1/chat?x=1" {
				t.Fatalf("origin got %q, body %q, %s", got.Header.Get("Authorization"), got.Body, got.URI)
			}

			out = curl(t, e, tc.flag, "-u", "user:"+ph, "-w", " %{http_code}", "https://"+apiHost+"/v1/basic")
			want := "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+realKey))
			if out != "ok 200" || o.last(t).Header.Get("Authorization") != want {
				t.Fatalf("basic: %q, origin got %q", out, o.last(t).Header.Get("Authorization"))
			}

			for _, deny := range []struct{ args []string }{
				{[]string{"-X", "DELETE", "https://" + apiHost + "/v1/x"}},
				{[]string{"https://" + apiHost + "/admin"}},
				{[]string{"-H", "Authorization: Bearer " + far, "https://" + apiHost + "/v1/x"}},
			} {
				n := len(o.all())
				args := append([]string{tc.flag, "-D", "-", "-o", "/dev/null"}, deny.args...)
				out := strings.ToLower(curl(t, e, args...))
				if !strings.Contains(out, " 403") || !strings.Contains(out, "x-egress-decision: deny") {
					t.Errorf("%v: %q", deny.args, out)
				}
				if len(o.all()) != n {
					t.Errorf("%v reached the origin", deny.args)
				}
			}
			if strings.Contains(e.sink.json(t), realKey) {
				t.Fatal("a value in the records")
			}
		})
	}
}
