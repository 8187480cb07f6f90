package main

import "testing"

// TestSOCKSListenFlag: off by default; set by the flag or its environment twin, the flag
// winning.
func TestSOCKSListenFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{nil, "", ""},
		{[]string{"--socks-listen", "127.0.0.1:8472"}, "", "127.0.0.1:8472"},
		{nil, "127.0.0.1:9000", "127.0.0.1:9000"},
		{[]string{"--socks-listen", "127.0.0.1:8472"}, "127.0.0.1:9000", "127.0.0.1:8472"},
	} {
		t.Setenv("EGRESSD_SOCKS_LISTEN", tc.env)
		cfg, err := parseFlags(append([]string{"--node-id", "n"}, tc.args...))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.socksListen != tc.want {
			t.Errorf("%v, env %q: --socks-listen %q, want %q", tc.args, tc.env, cfg.socksListen, tc.want)
		}
	}
}
