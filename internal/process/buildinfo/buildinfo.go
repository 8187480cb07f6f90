// Package buildinfo says which build of egressd is running: its version, the commit it was
// built from and the Go version, as `egressd --version`, `egressctl version`, GET /v1/status
// and the egressd_build_info metric report them.
//
// The Go toolchain stamps what it knows into every binary (runtime/debug.ReadBuildInfo): a
// `go build` in a git checkout records the commit, whether the tree had uncommitted changes,
// and a version derived from them (a tag, or a pseudo-version). A release build that is made
// without the repository (a tarball, a container context without .git) sets Version and
// Commit at link time instead:
//
//	go build -ldflags "-X github.com/egressd/egressd/internal/buildinfo.Version=v1.2.0 \
//	    -X github.com/egressd/egressd/internal/buildinfo.Commit=0123abc" ./cmd/...
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Set at link time with -ldflags -X (see the package comment); empty means "read it from the
// binary's build information".
var (
	Version string
	Commit  string
)

// Unknown is what a field says when neither the link-time override nor the binary's build
// information has it (a `go run`, a test binary, a build with -buildvcs=false).
const Unknown = "unknown"

// Info is one build. The JSON names are those of GET /v1/status.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Modified  bool   `json:"modified,omitempty"` // built from a tree with uncommitted changes
	GoVersion string `json:"go_version"`
}

// Get returns this binary's build.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return from(bi, Version, Commit)
}

// from reads a build from the toolchain's stamp bi (nil when the binary has none), with the
// link-time overrides winning over it.
func from(bi *debug.BuildInfo, version, commit string) Info {
	info := Info{Version: version, Commit: commit, GoVersion: runtime.Version()}
	if bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		// "(devel)" is what the toolchain says when it knows no version: say nothing rather.
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		var revision string
		var modified bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		// The tree's state describes the commit the toolchain saw, not one set by hand.
		if info.Commit == "" && revision != "" {
			info.Commit, info.Modified = revision, modified
		}
	}
	if info.Version == "" {
		info.Version = Unknown
	}
	if info.Commit == "" {
		info.Commit = Unknown
	}
	return info
}

// String is the build on one line, for --version: "v1.2.0 (commit 0123abcdef01, go1.26.8)",
// with ", modified" after the commit of a tree that had uncommitted changes.
func (i Info) String() string {
	commit := i.Commit
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if i.Modified {
		commit += ", modified"
	}
	return fmt.Sprintf("%s (commit %s, %s)", i.Version, commit, i.GoVersion)
}

// MetricName is the gauge that says which build runs: always 1, the build in its labels, so
// that a dashboard can show versions across a fleet and join them to other series.
const MetricName = "egressd_build_info"

// Collector is the egressd_build_info gauge of i.
func (i Info) Collector() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        MetricName,
		Help:        "The build of egressd that runs: always 1, with its version, commit and Go version as labels.",
		ConstLabels: prometheus.Labels{"version": i.Version, "commit": i.Commit, "go_version": i.GoVersion},
	})
	g.Set(1)
	return g
}
