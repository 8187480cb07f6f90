package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
)

// Preset is the package-manager registry list (DESIGN §2.5): manager name → host patterns,
// in the NormalizePattern form. A policy with allow_package_managers allows these hosts on
// ports 80 and 443, whatever its web flags say.
//
// A Preset is read-only once used: Match compiles it on first use, so use it by pointer
// (go vet reports copies). The zero value (no managers) and a Preset decoded from JSON work
// as they are.
type Preset struct {
	Managers map[string][]string `json:"managers"`

	once     sync.Once
	compiled *presetMatcher
}

// builtinManagers is the preset out of the box. Registries that are reachable from where this
// code is built and tested are listed by a wildcard of their parent domain only (Go modules,
// npm, Debian), which also covers their mirrors and checksum services.
var builtinManagers = map[string][]string{
	"pip":      {"pypi.org", "files.pythonhosted.org"},
	"uv":       {"pypi.org", "files.pythonhosted.org"},
	"conda":    {"conda.anaconda.org", "repo.anaconda.com"},
	"npm":      {"*.npmjs.org"},
	"yarn":     {"registry.yarnpkg.com", "repo.yarnpkg.com", "*.npmjs.org"},
	"apt":      {"*.debian.org", "*.ubuntu.com"},
	"apk":      {"*.alpinelinux.org"},
	"go":       {"*.golang.org"},
	"cargo":    {"crates.io", "*.crates.io"},
	"rubygems": {"rubygems.org", "*.rubygems.org"},
	"maven":    {"repo1.maven.org", "repo.maven.apache.org"},
	"nuget":    {"api.nuget.org", "*.nuget.org"},
}

// builtin is the shared compiled built-in preset, used when Compile gets a nil preset.
var builtin = sync.OnceValue(func() *Preset {
	p, err := newPreset(builtinManagers)
	if err != nil {
		panic("policy: built-in preset: " + err.Error())
	}
	p.matcher()
	return p
})

// BuiltinPreset returns the built-in preset: pip, uv, conda, npm, yarn, apt (Debian and
// Ubuntu), apk, go, cargo, rubygems, maven and nuget. Each call returns a new copy, which the
// caller may change before first use.
func BuiltinPreset() *Preset { return builtin().Clone() }

// Clone returns a deep copy of p, not yet compiled.
func (p *Preset) Clone() *Preset {
	c := &Preset{Managers: make(map[string][]string, len(p.Managers))}
	for name, hosts := range p.Managers {
		c.Managers[name] = slices.Clone(hosts)
	}
	return c
}

// presetFile is the --package-managers-file format. Managers are decoded one by one, so that
// an error names the manager ("managers.npm").
type presetFile struct {
	Managers map[string]json.RawMessage `json:"managers"`
	Replace  bool                       `json:"replace"`
}

// LoadPresetFile reads a --package-managers-file: {"managers": {"npm": ["registry.npm.test"]},
// "replace": false}. With replace false (the default) its entries are added to the built-in
// ones, manager by manager; with replace true they are the whole preset. Decoding is strict
// (unknown fields and trailing data are errors); every entry goes through NormalizePattern,
// and errors are *FieldError naming the entry ("managers.npm[0]"), wrapped with the path.
func LoadPresetFile(path string) (*Preset, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("package managers file: %w", err)
	}
	p, err := parsePresetFile(data)
	if err != nil {
		return nil, fmt.Errorf("package managers file %s: %w", path, err)
	}
	return p, nil
}

func parsePresetFile(data []byte) (*Preset, error) {
	var f presetFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, presetJSONError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &FieldError{Message: "unexpected data after the JSON object"}
	}
	file := make(map[string][]string, len(f.Managers))
	for name, raw := range f.Managers {
		var hosts []string
		if err := json.Unmarshal(raw, &hosts); err != nil {
			return nil, &FieldError{Field: "managers." + name, Message: "must be a JSON list of host names"}
		}
		file[name] = hosts
	}
	// Validate the file's own entries first, so that errors index the file's lists.
	added, err := newPreset(file)
	if err != nil {
		return nil, err
	}
	if f.Replace {
		return added, nil
	}
	managers := maps.Clone(builtinManagers)
	for name, hosts := range added.Managers {
		managers[name] = append(slices.Clone(managers[name]), hosts...)
	}
	return newPreset(managers)
}

func presetJSONError(err error) error {
	if fe, ok := jsonError(err).(*FieldError); ok {
		if strings.HasPrefix(fe.Message, "unknown field") {
			fe.Message = fmt.Sprintf("unknown field %q; the fields are managers and replace", fe.Field)
		}
		return fe
	}
	return err
}

// newPreset validates and normalises managers into a new Preset.
func newPreset(managers map[string][]string) (*Preset, error) {
	p := &Preset{Managers: make(map[string][]string, len(managers))}
	for _, name := range slices.Sorted(maps.Keys(managers)) {
		if !validManagerName(name) {
			return nil, &FieldError{Field: "managers." + name, Message: fmt.Sprintf("%q is not a manager name; use lower-case letters, digits, '-', '_' or '.', at most 32", name)}
		}
		hosts := make([]string, 0, len(managers[name]))
		for i, h := range managers[name] {
			n, err := NormalizePattern(h)
			if err != nil {
				return nil, &FieldError{Field: fmt.Sprintf("managers.%s[%d]", name, i), Message: err.Error()}
			}
			hosts = append(hosts, n)
		}
		slices.Sort(hosts)
		p.Managers[name] = slices.Compact(hosts)
	}
	return p, nil
}

func validManagerName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Validate reports the first entry of p that is not a valid pattern or manager name, as a
// *FieldError naming it ("managers.npm[0]").
func (p *Preset) Validate() error {
	if p == nil {
		return nil
	}
	_, err := newPreset(p.Managers)
	return err
}

// Match reports which pattern of the preset matches host, a name in NormalizeName form. It
// does not allocate (after the first call, which compiles the preset). Entries that are not
// valid patterns match nothing; Compile rejects such a preset.
func (p *Preset) Match(host string) (pattern string, ok bool) {
	if p == nil {
		return "", false
	}
	e, ok := p.matcher().match(host)
	return e.pattern, ok
}

// presetEntry is one pattern of a compiled preset and the rule a decision reports for it,
// such as "package manager preset pip, uv: pypi.org".
type presetEntry struct {
	pattern string
	rule    string
}

type presetMatcher struct {
	hosts domainSet[presetEntry]
}

func (p *Preset) matcher() *presetMatcher {
	p.once.Do(func() {
		byPattern := map[string][]string{} // pattern → managers
		for name, hosts := range p.Managers {
			for _, h := range hosts {
				n, err := NormalizePattern(h)
				if err != nil {
					continue
				}
				byPattern[n] = append(byPattern[n], name)
			}
		}
		patterns := slices.Sorted(maps.Keys(byPattern))
		entries := make([]presetEntry, len(patterns))
		for i, pat := range patterns {
			names := byPattern[pat]
			slices.Sort(names)
			names = slices.Compact(names)
			entries[i] = presetEntry{pat, "package manager preset " + strings.Join(names, ", ") + ": " + pat}
		}
		p.compiled = &presetMatcher{hosts: newDomainSet(patterns, entries)}
	})
	return p.compiled
}

func (m *presetMatcher) match(host string) (presetEntry, bool) {
	if m == nil {
		return presetEntry{}, false
	}
	return m.hosts.match(host)
}
