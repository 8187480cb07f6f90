package policy

// THIS FILE IS A PLACEHOLDER: the policy helper replaces it with the real implementation
// (names.go, cidr.go, classify.go, compile.go, decide.go, effective.go, preset.go) and deletes it.
// The exported signatures below are the contract other packages compile against.

import (
	"net/netip"
	"time"
)

// Normalize validates and normalises p (see Policy), filling defaults. Errors are *FieldError
// naming the field ("allowed_domains[3]"). warnings are sentences for the API's "warnings".
func (p Policy) Normalize() (Policy, []string, error) { panic("unimplemented") }

// NormalizeName is the one function that normalises host names, for policy entries and traffic.
func NormalizeName(s string) (string, error) { panic("unimplemented") }

// NormalizePattern normalises a policy entry: a name or "*." followed by a name.
func NormalizePattern(s string) (string, error) { panic("unimplemented") }

// ParseCIDR parses a CIDR or bare address (/32, /128); host bits set is an error naming the masked form.
func ParseCIDR(s string) (netip.Prefix, error) { panic("unimplemented") }

// Layer names where a decision came from.
type Layer string

const (
	LayerSession Layer = "session"
	LayerVM      Layer = "vm"
	LayerDefault Layer = "default"
	LayerHard    Layer = "hard"
)

// Transport of a connection attempt.
type Transport string

const (
	TCP  Transport = "tcp"
	UDP  Transport = "udp"
	ICMP Transport = "icmp"
)

// Classifier holds the operator's address classes: step 1 hard denials and what counts as public.
// The zero value is the out-of-the-box behaviour.
type Classifier struct {
	Public   []netip.Prefix   // --public-cidrs: treated as public internet; lifts loopback/link-local denial
	HardDeny []netip.Prefix   // operator extension of the hard-deny list
	Self     []netip.AddrPort // egressd's own listening addresses: always hard denied
}

// Preset is the package-manager registry list: manager name → host patterns.
type Preset struct {
	Managers map[string][]string `json:"managers"`
}

func BuiltinPreset() *Preset                                  { panic("unimplemented") }
func LoadPresetFile(path string) (*Preset, error)             { panic("unimplemented") }
func (p *Preset) Match(host string) (pattern string, ok bool) { panic("unimplemented") }

// Matcher is one compiled, immutable policy.
type Matcher struct{}

func Compile(p Policy, preset *Preset) (*Matcher, error) { panic("unimplemented") }
func (m *Matcher) Policy() Policy                        { panic("unimplemented") }

// Conn is one connection attempt. IP is the destination that would be dialled; when it is
// the zero Addr the host name is judged as a name only (no address checks).
type Conn struct {
	IP        netip.Addr
	Port      uint16
	Transport Transport
	Host      string // normalised host name; "" when the gateway sees none
}

// Query is one DNS query: a normalised name and a numeric type (1 = A, 28 = AAAA, 65 = HTTPS...).
type Query struct {
	Name string
	Type uint16
}

// Decision is the outcome for one attempt or query.
type Decision struct {
	Allow     bool
	WouldDeny bool // a monitor layer would have denied it
	Reason    string
	Rule      string
	Layer     Layer
}

// Layered is one set layer of an effective policy.
type Layered struct {
	Layer   Layer
	Matcher *Matcher
}

// Set is the effective policy of one sandbox: hard denials AND every layer.
type Set struct{}

func NewSet(c *Classifier, layers ...Layered) *Set { panic("unimplemented") }
func (s *Set) Decide(c Conn) Decision              { panic("unimplemented") }
func (s *Set) DecideQuery(q Query) Decision        { panic("unimplemented") }
func (s *Set) KeepAnswer(a netip.Addr) bool        { panic("unimplemented") }

// NamedPolicy is a stored layer for Explain.
type NamedPolicy struct {
	Layer     Layer
	Policy    Policy
	Revision  int64
	UpdatedAt time.Time
}

// Effective is the readable effective policy (GET .../effective).
type Effective struct{}

func Explain(preset *Preset, layers ...NamedPolicy) Effective { panic("unimplemented") }
