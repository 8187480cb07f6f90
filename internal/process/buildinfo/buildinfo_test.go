package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestFrom(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	stamped := func(version string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Path: "github.com/egressd/egressd", Version: version}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	tests := []struct {
		name            string
		bi              *debug.BuildInfo
		version, commit string // the link-time overrides
		want            Info
	}{
		{
			name: "a build in a clean checkout",
			bi:   stamped("v0.0.0-20250102150405-0123456789ab", "vcs.revision", rev, "vcs.modified", "false"),
			want: Info{Version: "v0.0.0-20250102150405-0123456789ab", Commit: rev, GoVersion: "go1.99.1"},
		},
		{
			name: "uncommitted changes",
			bi:   stamped("v0.0.0-20250102150405-0123456789ab+dirty", "vcs.revision", rev, "vcs.modified", "true"),
			want: Info{Version: "v0.0.0-20250102150405-0123456789ab+dirty", Commit: rev, Modified: true, GoVersion: "go1.99.1"},
		},
		{
			name: "no version control: (devel) is no version",
			bi:   stamped("(devel)"),
			want: Info{Version: Unknown, Commit: Unknown, GoVersion: "go1.99.1"},
		},
		{
			name:    "link-time overrides win",
			bi:      stamped("(devel)", "vcs.revision", rev, "vcs.modified", "true"),
			version: "v1.2.0", commit: "feedface",
			want: Info{Version: "v1.2.0", Commit: "feedface", GoVersion: "go1.99.1"},
		},
		{
			name:    "a version override keeps the stamped commit",
			bi:      stamped("v0.0.0-20250102150405-0123456789ab", "vcs.revision", rev, "vcs.modified", "true"),
			version: "v1.2.0",
			want:    Info{Version: "v1.2.0", Commit: rev, Modified: true, GoVersion: "go1.99.1"},
		},
		{
			name: "no build information at all",
			want: Info{Version: Unknown, Commit: Unknown, GoVersion: runtime.Version()},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := from(tt.bi, tt.version, tt.commit); got != tt.want {
				t.Errorf("from = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		info Info
		want string
	}{
		{Info{Version: "v1.2.0", Commit: "0123456789abcdef0123", GoVersion: "go1.99.1"}, "v1.2.0 (commit 0123456789ab, go1.99.1)"},
		{Info{Version: "v1.2.0", Commit: "0123456789abcdef0123", Modified: true, GoVersion: "go1.99.1"}, "v1.2.0 (commit 0123456789ab, modified, go1.99.1)"},
		{Info{Version: Unknown, Commit: Unknown, GoVersion: "go1.99.1"}, "unknown (commit unknown, go1.99.1)"},
	}
	for _, tt := range tests {
		if got := tt.info.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.info, got, tt.want)
		}
	}
}

func TestCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(Info{Version: "v1.2.0", Commit: "feedface", GoVersion: "go1.99.1"}.Collector())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(families) != 1 || families[0].GetName() != MetricName || len(families[0].GetMetric()) != 1 {
		t.Fatalf("gathered %v", families)
	}
	m := families[0].GetMetric()[0]
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	want := map[string]string{"version": "v1.2.0", "commit": "feedface", "go_version": "go1.99.1"}
	if fmt.Sprint(labels) != fmt.Sprint(want) || m.GetGauge().GetValue() != 1 {
		t.Errorf("%s = %v with labels %v, want 1 with %v", MetricName, m.GetGauge().GetValue(), labels, want)
	}
}
