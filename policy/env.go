package policy

import "fmt"

// Env is the operator's setting in which every effective policy is built: which addresses
// are public or always denied (the Classifier), the package-manager preset, and the default
// policy of a sandbox that has no layer set. egressd builds one at start and hands the same
// value to the API and to the gateway, so that the check endpoint and the data path judge
// alike. An Env is immutable; a nil *Env is the built-in setting (the zero Classifier, the
// built-in preset, deny all).
type Env struct {
	classifier   *Classifier
	preset       *Preset
	def          Policy
	defMatcher   *Matcher
	interception bool // the gateway intercepts: see WithInterception
}

// NewEnv validates the operator's setting and compiles the default policy once. nil
// arguments take the built-in values: the zero Classifier, BuiltinPreset, DenyAll.
func NewEnv(c *Classifier, preset *Preset, def *Policy) (*Env, error) {
	e := &Env{classifier: c, preset: preset, def: DenyAll()}
	if e.classifier == nil {
		e.classifier = &Classifier{}
	}
	if e.preset == nil {
		e.preset = builtin()
	} else if err := e.preset.Validate(); err != nil {
		return nil, fmt.Errorf("package-manager preset: %w", err)
	}
	if def != nil {
		e.def = *def
	}
	m, err := Compile(e.def, e.preset)
	if err != nil {
		return nil, fmt.Errorf("default policy: %w", err)
	}
	e.defMatcher = m
	return e, nil
}

var builtinEnv = func() *Env {
	e, err := NewEnv(nil, nil, nil)
	if err != nil {
		panic(err) // the built-in preset and DenyAll are valid: a test proves it
	}
	return e
}()

func (e *Env) orBuiltin() *Env {
	if e == nil {
		return builtinEnv
	}
	return e
}

// WithInterception returns a copy of e for a gateway whose every path to ports 80 and 443
// (explicit proxy, transparent proxy) hands the connections to intercepted hosts to the
// interception engine, which decides each request with DecideRequest and dials with
// Conn.Intercepted set. The check endpoint then answers for such hosts what the engine does,
// and Explain and Normalize stop saying that connections to them are denied. Until then
// (the zero setting), those connections are denied with interception_unavailable: the
// policy side of the interim rule, which Decide applies on its own.
func (e *Env) WithInterception() *Env {
	c := *e.orBuiltin()
	c.interception = true
	return &c
}

// Interception reports whether the gateway intercepts (WithInterception).
func (e *Env) Interception() bool { return e.orBuiltin().interception }

// Normalize is p.NormalizeFor(e.Classifier()), with one more warning while the gateway does
// not intercept: that the hosts p's http_rules name are unreachable until it does.
func (e *Env) Normalize(p Policy) (Policy, []string, error) {
	e = e.orBuiltin()
	np, ws, err := p.NormalizeFor(e.classifier)
	if err != nil {
		return np, nil, err
	}
	if !e.interception && len(np.HTTPRules) > 0 {
		ws = append(ws, "this gateway does not intercept yet: connections to the hosts that http_rules name are denied "+
			"(interception_unavailable) until interception is enabled")
	}
	return np, ws, nil
}

// Classifier is the address classes in force.
func (e *Env) Classifier() *Classifier { return e.orBuiltin().classifier }

// Preset is the package-manager preset in force.
func (e *Env) Preset() *Preset { return e.orBuiltin().preset }

// Default is the policy of a sandbox with no layer set.
func (e *Env) Default() Policy { return e.orBuiltin().def }

// Compile compiles one layer's policy with the preset in force.
func (e *Env) Compile(p Policy) (*Matcher, error) { return Compile(p, e.orBuiltin().preset) }

// Combine is the effective policy of compiled layers: the layers given, or the default policy
// (as LayerDefault) when none is given.
func (e *Env) Combine(layers ...Layered) *Effective {
	e = e.orBuiltin()
	if len(layers) == 0 {
		layers = []Layered{{Layer: LayerDefault, Matcher: e.defMatcher}}
	}
	return NewEffective(e.classifier, layers...)
}

// Effective compiles the layers that are set into the effective policy (DESIGN §2.4): the
// one way the API and the gateway turn stored policies into an Effective. With no layer, the
// default policy applies.
//
// Grants (NamedPolicy.Grants) are added to their layers, with rules that name them. The
// grants of a layer with no policy (NoPolicy) add nothing while another layer is set (that
// layer restricts nothing already); with no layer set they are added to the default policy.
func (e *Env) Effective(layers ...NamedPolicy) (*Effective, error) {
	e = e.orBuiltin()
	layers = e.withDefault(layers)
	ls := make([]Layered, 0, len(layers))
	for _, l := range layers {
		m, err := CompileGrants(l.Policy, e.preset, l.Grants)
		if err != nil {
			return nil, fmt.Errorf("compile the %s policy: %w", l.Layer, err)
		}
		ls = append(ls, Layered{Layer: l.Layer, Matcher: m})
	}
	return e.Combine(ls...), nil
}

// withDefault resolves the layers with no policy (NoPolicy): dropped while another layer is
// set; with none set, their grants go on the default policy, as LayerDefault. With no grant
// either, it returns no layer, and Combine applies the compiled default.
func (e *Env) withDefault(layers []NamedPolicy) []NamedPolicy {
	var set []NamedPolicy
	var orphans []Grant
	for _, l := range layers {
		if l.NoPolicy {
			orphans = append(orphans, l.Grants...)
		} else {
			set = append(set, l)
		}
	}
	if len(set) == 0 && len(orphans) > 0 {
		return []NamedPolicy{{Layer: LayerDefault, Policy: e.def, Grants: orphans}}
	}
	return set
}

// Explain is the effective policy of the layers as one readable object (see Explain); with
// no layer, the default policy's.
func (e *Env) Explain(layers ...NamedPolicy) Explanation {
	e = e.orBuiltin()
	layers = e.withDefault(layers)
	if len(layers) == 0 {
		layers = []NamedPolicy{{Layer: LayerDefault, Policy: e.def}}
	}
	x := Explain(e.preset, layers...)
	if !e.interception && len(x.HTTPRules.Rules) > 0 {
		// Before the hard-denials note, which always comes last.
		n := len(x.Notes) - 1
		x.Notes = append(x.Notes[:n:n], noteNoInterception, x.Notes[n])
	}
	return x
}

const noteNoInterception = "This gateway does not intercept yet: connections to the intercepted domains are denied " +
	"(interception_unavailable), whatever the http_rules allow, until interception is enabled."
