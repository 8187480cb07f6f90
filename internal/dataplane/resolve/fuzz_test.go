package resolve

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzParseHosts: any file parses without a panic, and every name it yields is a lower-case
// FQDN with valid addresses.
func FuzzParseHosts(f *testing.F) {
	f.Add([]byte("127.0.0.1 localhost\n::1 localhost ip6-localhost # c\n"))
	f.Add([]byte("fe80::1%eth0 link.test\n203.0.113.1\tA.Example.TEST.\n"))
	f.Add([]byte("# only a comment\n\n  \t\n1.2.3 bad\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for name, addrs := range parseHosts(data) {
			if name != strings.ToLower(name) || !dns.IsFqdn(name) {
				t.Fatalf("name %q is not a lower-case FQDN", name)
			}
			for _, a := range addrs {
				if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
					t.Fatalf("address %v of %q", a, name)
				}
			}
		}
	})
}
