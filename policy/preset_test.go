package policy

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestBuiltinPreset(t *testing.T) {
	p := BuiltinPreset()
	for _, m := range []string{"pip", "uv", "conda", "npm", "yarn", "apt", "apk", "go", "cargo", "rubygems", "maven", "nuget"} {
		if len(p.Managers[m]) == 0 {
			t.Errorf("built-in preset has no hosts for %s", m)
		}
	}
	if err := p.Validate(); err != nil {
		t.Errorf("built-in preset is invalid: %v", err)
	}
	// Registries this code is built next to appear only as wildcards of their parent domain.
	for _, parent := range []string{"golang.org", "npmjs.org", "debian.org"} {
		for m, hosts := range p.Managers {
			for _, h := range hosts {
				if strings.HasSuffix(h, "."+parent) && h != "*."+parent {
					t.Errorf("%s lists %q: use only *.%s", m, h, parent)
				}
			}
		}
	}
	for _, tt := range []struct{ host, pattern string }{
		{"pypi.org", "pypi.org"},
		{"files.pythonhosted.org", "files.pythonhosted.org"},
		{"crates.io", "crates.io"},
		{"static.crates.io", "*.crates.io"},
	} {
		if got, ok := p.Match(tt.host); !ok || got != tt.pattern {
			t.Errorf("Match(%q) = %q, %v; want %q", tt.host, got, ok, tt.pattern)
		}
	}
	for m, pattern := range map[string]string{"go": "*.golang.org", "npm": "*.npmjs.org", "apt": "*.debian.org"} {
		if !slices.Contains(p.Managers[m], pattern) {
			t.Errorf("%s: %q, want %q among them", m, p.Managers[m], pattern)
		}
	}
	for _, host := range []string{"pythonhosted.org", "example.test", "pypi.org.evil.test", "evilpypi.org"} {
		if got, ok := p.Match(host); ok {
			t.Errorf("Match(%q) = %q, want no match", host, got)
		}
	}
	// Each call is a copy: changing one does not change the next.
	p.Managers["pip"] = nil
	if len(BuiltinPreset().Managers["pip"]) == 0 {
		t.Error("BuiltinPreset returned a shared map")
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pm.json")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadPresetFile(t *testing.T) {
	add, err := LoadPresetFile(writeFile(t, `{"managers": {"npm": ["Registry.NPM.test."], "corp": ["*.mirror.corp.test"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(add.Managers["npm"], "registry.npm.test") || !slices.Contains(add.Managers["npm"], "*.npmjs.org") {
		t.Errorf("replace false must add to the built-in npm hosts: %q", add.Managers["npm"])
	}
	if len(add.Managers["pip"]) == 0 {
		t.Error("replace false must keep the other built-in managers")
	}
	if got, ok := add.Match("a.mirror.corp.test"); !ok || got != "*.mirror.corp.test" {
		t.Errorf("Match = %q, %v", got, ok)
	}

	repl, err := LoadPresetFile(writeFile(t, `{"managers": {"npm": ["registry.npm.test"]}, "replace": true}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(repl.Managers) != 1 || !slices.Equal(repl.Managers["npm"], []string{"registry.npm.test"}) {
		t.Errorf("replace true: %q, want only npm: registry.npm.test", repl.Managers)
	}
	if _, ok := repl.Match("pypi.org"); ok {
		t.Error("replace true must drop the built-in hosts")
	}
}

func TestLoadPresetFileErrors(t *testing.T) {
	tests := []struct {
		content   string
		wantField string
		wantMsg   string
	}{
		{`{"managers": {"npm": ["ok.test", "*.com"]}}`, "managers.npm[1]", "too broad"},
		{`{"managers": {"npm": ["1.2.3.4"]}}`, "managers.npm[0]", "IP address"},
		{`{"managers": {"Bad Name": ["a.test"]}}`, "managers.Bad Name", "not a manager name"},
		{`{"managers": {}, "replace": true, "extra": 1}`, "extra", `unknown field "extra"; the fields are managers and replace`},
		{`{"managers": {"npm": "a.test"}}`, "managers.npm", "list of host names"},
		{`{"managers": []}`, "managers", "must be a JSON object, not array"},
		{`{"replace": "yes"}`, "replace", "boolean"},
		{`{} {}`, "", "unexpected data"},
		{`{`, "", "cut short"},
	}
	for _, tt := range tests {
		path := writeFile(t, tt.content)
		_, err := LoadPresetFile(path)
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%s: error %v is not a *FieldError", tt.content, err)
			continue
		}
		if fe.Field != tt.wantField || !strings.Contains(fe.Message, tt.wantMsg) {
			t.Errorf("%s: {%q, %q}, want {%q, ...%q...}", tt.content, fe.Field, fe.Message, tt.wantField, tt.wantMsg)
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %q does not name the file", tt.content, err)
		}
	}
	if _, err := LoadPresetFile(filepath.Join(t.TempDir(), "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want an os.ErrNotExist", err)
	}
}

func TestPresetZeroAndDecoded(t *testing.T) {
	var zero Preset
	if _, ok := zero.Match("pypi.org"); ok {
		t.Error("the zero Preset matched")
	}
	var nilPreset *Preset
	if _, ok := nilPreset.Match("pypi.org"); ok {
		t.Error("a nil Preset matched")
	}
	var decoded Preset
	if err := json.Unmarshal([]byte(`{"managers": {"npm": ["registry.npm.test", "*.npm.test"]}}`), &decoded); err != nil {
		t.Fatal(err)
	}
	if got, ok := decoded.Match("registry.npm.test"); !ok || got != "registry.npm.test" {
		t.Errorf("decoded Match = %q, %v", got, ok)
	}
	if got, ok := decoded.Match("x.npm.test"); !ok || got != "*.npm.test" {
		t.Errorf("decoded Match = %q, %v", got, ok)
	}
	b, err := json.Marshal(testPreset(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), `{"managers":{"apt":["*.deb.test"]`) {
		t.Errorf("JSON = %s", b)
	}
}

func TestCompileRejectsInvalidPreset(t *testing.T) {
	bad := &Preset{Managers: map[string][]string{"npm": {"*"}}}
	if _, err := Compile(Policy{AllowPackageManagers: true}, bad); err == nil {
		t.Error("Compile accepted a preset with an invalid entry")
	}
	if _, err := Compile(Policy{}, bad); err != nil {
		t.Errorf("the preset matters only with allow_package_managers: %v", err)
	}
}

func TestPresetMatchAllocs(t *testing.T) {
	p := testPreset(t)
	p.Match("warm.up")
	if n := testing.AllocsPerRun(100, func() {
		p.Match("pypi.org")
		p.Match("a.b.deb.test")
		p.Match("miss.example.test")
	}); n != 0 {
		t.Errorf("Match allocates %v times per run, want 0", n)
	}
}
