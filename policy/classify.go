package policy

import (
	"net/netip"
	"strconv"
)

// Classifier holds the operator's address classes: the hard denials of DESIGN §2.2 step 1,
// and what counts as public in step 3. The zero value is the out-of-the-box behaviour. A
// Classifier must not be changed once an Effective uses it.
//
// Hard denials, whatever any policy says and in every mode:
//   - loopback 127.0.0.0/8 and ::1, link-local 169.254.0.0/16 and fe80::/10, and the cloud
//     metadata address fd00:ec2::254 (which lies in the ULA range, not in link-local);
//   - multicast 224.0.0.0/4 and ff00::/8, broadcast 255.255.255.255, the unspecified ::
//     and 0.0.0.0/8 ("this network", which Linux routes to the local host);
//   - the NAT64, 6to4, Teredo, IPv4-compatible and IPv4-translated forms of any of these
//     IPv4 addresses, so that 64:ff9b::7f00:1 is denied as 127.0.0.1 is;
//   - HardDeny, and Self.
//
// An address is public unless it is in one of the IANA special-purpose ranges: for IPv4
// 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10 (CGNAT), 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12,
// 192.0.0.0/24, 192.0.2.0/24, 192.88.99.0/24, 192.168.0.0/16, 198.18.0.0/15,
// 198.51.100.0/24, 203.0.113.0/24, 224.0.0.0/4 and 240.0.0.0/4 (which holds
// 255.255.255.255); for IPv6 anything outside the global unicast space 2000::/3 (which puts
// ::, ::1, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, the discard range 100::/64, ULA fc00::/7,
// fe80::/10 and ff00::/8 out), and inside it 2001::/23 (IETF protocol assignments, with
// Teredo 2001::/32), 2001:db8::/32 and 3fff::/20 (documentation) and 6to4 2002::/16. Every
// IPv6 form that embeds an IPv4 address is therefore non-public, whatever the IPv4 address:
// a gateway must not be talked into reaching a private network through a translator.
// The benchmarking (198.18.0.0/15) and documentation (198.51.100.0/24, 203.0.113.0/24)
// ranges are non-public too, unless listed in Public, as test labs do.
//
// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is classified as the IPv4 address it holds.
type Classifier struct {
	// Public (--public-cidrs) are treated as public internet: they pass the public check of
	// step 3, and the loopback, link-local and metadata denials of step 1 are lifted for
	// them (never the denial of Self, multicast, broadcast, unspecified or HardDeny). Tests
	// use it to make loopback or documentation ranges act as a fake internet.
	Public []netip.Prefix
	// HardDeny extends the step 1 list (an operator's own infrastructure, say).
	HardDeny []netip.Prefix
	// Self are egressd's own listening addresses. A Self entry with a specified address
	// denies that whole address, on every port; one with an unspecified address (0.0.0.0 or
	// ::, listening everywhere) denies its port on every address.
	Self []netip.AddrPort
}

// IsPublic reports whether ip counts as public internet: outside the special-purpose ranges
// listed on Classifier, or inside Public. It does not allocate.
func (c *Classifier) IsPublic(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	if c != nil {
		for _, p := range c.Public {
			if unmapPrefix(p.Masked()).Contains(ip) {
				return true
			}
		}
	}
	return builtinPublic(ip)
}

// special4 are the IPv4 special-purpose ranges that are not public.
var special4 = mustPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
	"198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
)

// special6 are the non-public ranges inside the global unicast space 2000::/3.
var special6 = mustPrefixes("2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20")

// builtinPublic is the public check without the operator's Public list; ip is unmapped.
func builtinPublic(ip netip.Addr) bool {
	if ip.Is4() {
		for _, p := range special4 {
			if p.Contains(ip) {
				return false
			}
		}
		return true
	}
	if !ip.Is6() {
		return false
	}
	if b := ip.As16(); b[0]&0xe0 != 0x20 {
		return false // outside 2000::/3: nothing there is routed on the internet
	}
	for _, p := range special6 {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

func mustPrefixes(ss ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

// form is how an IPv4 address appears in an IPv6 destination.
type form int

const (
	direct     form = iota // the address itself
	nat64                  // 64:ff9b::a.b.c.d (RFC 6052)
	sixToFour              // 2002:AABB:CCDD::/48 (RFC 3056)
	teredo                 // 2001:0::/32, client address inverted in the last 32 bits (RFC 4380)
	compatible             // ::a.b.c.d, IPv4-compatible (RFC 4291, deprecated)
	translated             // ::ffff:0:a.b.c.d, IPv4-translated (RFC 2765)
	numForms
)

var formNames = [numForms]string{"", "NAT64", "6to4", "Teredo", "IPv4-compatible", "IPv4-translated"}

// rulesByForm is one hard-deny rule in every form, built once so that a denial allocates
// nothing: [direct] is "loopback 127.0.0.0/8", [nat64] "NAT64 form of loopback 127.0.0.0/8".
type rulesByForm [numForms]string

func newRulesByForm(rule string) rulesByForm {
	var r rulesByForm
	r[direct] = rule
	for f := direct + 1; f < numForms; f++ {
		r[f] = formNames[f] + " form of " + rule
	}
	return r
}

// embeddedIPv4 returns the IPv4 address that an IPv6 destination reaches through a
// translator or tunnel, if it has such a form.
func embeddedIPv4(ip netip.Addr) (netip.Addr, form, bool) {
	b := ip.As16()
	v4 := func(x []byte) netip.Addr { return netip.AddrFrom4([4]byte(x)) }
	zero := func(x []byte) bool {
		for _, c := range x {
			if c != 0 {
				return false
			}
		}
		return true
	}
	switch {
	case b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && zero(b[4:12]):
		return v4(b[12:]), nat64, true
	case b[0] == 0x20 && b[1] == 0x02:
		return v4(b[2:6]), sixToFour, true
	case b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0:
		x := [4]byte{b[12] ^ 0xff, b[13] ^ 0xff, b[14] ^ 0xff, b[15] ^ 0xff}
		return netip.AddrFrom4(x), teredo, true
	case zero(b[:12]):
		return v4(b[12:]), compatible, true
	case zero(b[:8]) && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0:
		return v4(b[12:]), translated, true
	}
	return netip.Addr{}, direct, false
}

// hardRange is one built-in hard denial. Liftable ones do not apply inside Public.
type hardRange struct {
	prefix   netip.Prefix
	liftable bool
	rules    rulesByForm
}

var builtinHard = func() []hardRange {
	var rs []hardRange
	add := func(cidr, what string, liftable bool) {
		p := netip.MustParsePrefix(cidr)
		rs = append(rs, hardRange{p, liftable, newRulesByForm(what + " " + cidr)})
	}
	add("127.0.0.0/8", "loopback", true)
	add("169.254.0.0/16", "link-local", true)
	add("0.0.0.0/8", "unspecified (this network)", false)
	add("224.0.0.0/4", "multicast", false)
	add("255.255.255.255/32", "broadcast", false)
	add("::1/128", "loopback", true)
	add("fe80::/10", "link-local", true)
	add("fd00:ec2::254/128", "cloud metadata", true)
	add("::/128", "unspecified", false)
	add("ff00::/8", "multicast", false)
	return rs
}()

// classes is a Classifier compiled for one Effective: lookups allocate nothing.
type classes struct {
	public    prefixSet
	hard      prefixSet // HardDeny
	hardRules []rulesByForm
	selfAddrs []netip.Addr
	selfRules []rulesByForm
	selfPorts []uint16
	portRules []string
}

func compileClassifier(c *Classifier) *classes {
	cl := &classes{}
	if c == nil {
		return cl
	}
	clean := func(ps []netip.Prefix) []netip.Prefix {
		out := make([]netip.Prefix, 0, len(ps))
		for _, p := range ps {
			if p.IsValid() {
				out = append(out, unmapPrefix(p.Masked()))
			}
		}
		return out
	}
	cl.public = newPrefixSet(clean(c.Public))
	hard := clean(c.HardDeny)
	cl.hard = newPrefixSet(hard)
	for _, p := range hard {
		cl.hardRules = append(cl.hardRules, newRulesByForm("operator hard deny "+p.String()))
	}
	for _, s := range c.Self {
		a := s.Addr().Unmap().WithZone("")
		switch {
		case !a.IsValid():
		case a.IsUnspecified():
			cl.selfPorts = append(cl.selfPorts, s.Port())
			cl.portRules = append(cl.portRules, "egressd's own port "+strconv.Itoa(int(s.Port()))+" (listening on every address)")
		default:
			cl.selfAddrs = append(cl.selfAddrs, a)
			cl.selfRules = append(cl.selfRules, newRulesByForm("egressd's own address "+a.String()))
		}
	}
	return cl
}

func (cl *classes) isPublic(ip netip.Addr) bool {
	return cl.public.lookup(ip) >= 0 || builtinPublic(ip)
}

// hardDeny applies step 1 to a destination; port 0 means "no port" (a DNS answer). It returns
// the rule that denies, if any.
func (cl *classes) hardDeny(ip netip.Addr, port uint16) (string, bool) {
	ip = ip.Unmap().WithZone("")
	if port != 0 {
		for i, p := range cl.selfPorts {
			if p == port {
				return cl.portRules[i], true
			}
		}
	}
	if rule, ok := cl.hardAddr(ip, direct); ok {
		return rule, true
	}
	if ip.Is6() {
		if v4, f, ok := embeddedIPv4(ip); ok {
			return cl.hardAddr(v4, f)
		}
	}
	return "", false
}

func (cl *classes) hardAddr(ip netip.Addr, f form) (string, bool) {
	for i, a := range cl.selfAddrs {
		if a == ip {
			return cl.selfRules[i][f], true
		}
	}
	if i := cl.hard.lookup(ip); i >= 0 {
		return cl.hardRules[i][f], true
	}
	for i := range builtinHard {
		r := &builtinHard[i]
		if r.prefix.Contains(ip) {
			if r.liftable && cl.public.lookup(ip) >= 0 {
				return "", false
			}
			return r.rules[f], true
		}
	}
	return "", false
}

// HardDenyPrefixes lists the ranges of step 1 for a packet filter, which cannot see names or
// ports the way Decide does: the built-in ranges (those the operator's Public ranges
// overlap are left out, as Decide lifts them there), the operator's HardDeny, and every
// specified Self address. The transparent gateway's firewall never forwards to them.
func (c *Classifier) HardDenyPrefixes() []netip.Prefix {
	var out []netip.Prefix
	var public, hard []netip.Prefix
	var self []netip.AddrPort
	if c != nil {
		public, hard, self = c.Public, c.HardDeny, c.Self
	}
	for _, r := range builtinHard {
		lifted := false
		for _, p := range public {
			if r.liftable && p.Overlaps(r.prefix) {
				lifted = true
			}
		}
		if !lifted {
			out = append(out, r.prefix)
		}
	}
	for _, p := range hard {
		out = append(out, unmapPrefix(p.Masked()))
	}
	for _, s := range self {
		if a := s.Addr().Unmap().WithZone(""); a.IsValid() && !a.IsUnspecified() {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}
