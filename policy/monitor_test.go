package policy

import "testing"

func TestMonitorOnly(t *testing.T) {
	compile := func(mode Mode) *Matcher {
		m, err := Compile(Policy{Mode: mode}.WithDefaults(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	mon, enf := compile(Monitor), compile(Enforce)
	cases := []struct {
		name   string
		layers []Layered
		want   bool
	}{
		{"no layer", nil, false},
		{"one monitor", []Layered{{LayerVM, mon}}, true},
		{"one enforce", []Layered{{LayerVM, enf}}, false},
		{"monitor and enforce", []Layered{{LayerVM, mon}, {LayerSession, enf}}, false},
		{"enforce and monitor", []Layered{{LayerVM, enf}, {LayerSession, mon}}, false},
		{"two monitors", []Layered{{LayerVM, mon}, {LayerSession, mon}}, true},
		{"a nil matcher", []Layered{{LayerVM, mon}, {LayerSession, nil}}, false},
	}
	for _, c := range cases {
		if got := NewEffective(nil, c.layers...).MonitorOnly(); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
