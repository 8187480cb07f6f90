package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/policy"
)

// printJSON writes v as the API writes it: the SDK's types are the server's wire types, so
// encoding what the SDK decoded gives back the API's JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// field is one line of a key: value block. A value with several lines (a list) continues
// under the first, aligned.
type field struct {
	key   string
	value []string
}

func one(key, value string) field { return field{key, []string{value}} }

// printFields writes a key: value block with the values aligned.
func printFields(w io.Writer, fields ...field) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, f := range fields {
		vals := f.value
		if len(vals) == 0 {
			vals = []string{"-"}
		}
		fmt.Fprintf(tw, "%s:\t%s\n", f.key, vals[0])
		for _, v := range vals[1:] {
			fmt.Fprintf(tw, "\t%s\n", v)
		}
	}
	return tw.Flush()
}

// printTable writes rows under a header, columns aligned; an empty cell prints as "-".
func printTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			if c == "" {
				c = "-"
			}
			cells[i] = c
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// policyFields is the readable form of a stored policy, under the API's field names so that
// what a person reads maps onto what a script sends.
func policyFields(p *client.Policy) []field {
	fs := []field{
		one("scope", p.Scope+" "+p.ID),
		one("revision", strconv.FormatInt(p.Revision, 10)),
		one("updated", formatTime(p.UpdatedAt)),
	}
	return append(append(fs, rulesFields(p.Policy)...), field{"warning", p.Warnings}.orOmit()...)
}

// rulesFields is the readable form of the DESIGN §2.1 fields.
func rulesFields(p policy.Policy) []field {
	mode := string(p.Mode)
	if mode == "" {
		mode = string(policy.Enforce)
	}
	domains := p.AllowedDomains
	if len(domains) == 0 {
		// An empty list means no restriction by name, which a bare "-" would hide.
		if p.AllowHTTP || p.AllowHTTPS {
			domains = []string{"(any public host)"}
		} else {
			domains = []string{"(none)"}
		}
	}
	fs := []field{
		one("mode", mode),
		one("allow_http", strconv.FormatBool(p.AllowHTTP)),
		one("allow_https", strconv.FormatBool(p.AllowHTTPS)),
		one("allow_package_managers", strconv.FormatBool(p.AllowPackageManagers)),
		{"allowed_domains", domains},
		{"allowed_cidrs", orNone(p.AllowedCIDRs)},
		{"denied_domains", orNone(p.DeniedDomains)},
		{"allowed_tcp", orNone(p.AllowedTCP)},
	}
	if len(p.HTTPRules) > 0 {
		// In the form --http-rule takes, so that a line can be copied into a command.
		rules := make([]string, len(p.HTTPRules))
		for i, r := range p.HTTPRules {
			rules[i] = formatHTTPRule(r)
		}
		fs = append(fs, field{"http_rules", rules})
	}
	return fs
}

func orNone(list []string) []string {
	if len(list) == 0 {
		return []string{"(none)"}
	}
	return list
}

// orOmit drops a field whose value is empty.
func (f field) orOmit() []field {
	if len(f.value) == 0 {
		return nil
	}
	return []field{f}
}

// summarizePolicy is a policy in a few words, for one line: "https, package managers,
// 2 domains", or "deny all".
func summarizePolicy(p *client.Policy) string {
	if p == nil {
		return "none"
	}
	var parts []string
	if p.Mode == policy.Monitor {
		parts = append(parts, "monitor")
	}
	if p.AllowHTTP {
		parts = append(parts, "http")
	}
	if p.AllowHTTPS {
		parts = append(parts, "https")
	}
	if p.AllowPackageManagers {
		parts = append(parts, "package managers")
	}
	count := func(n int, what string) {
		if n == 1 {
			parts = append(parts, "1 "+what)
		} else if n > 1 {
			parts = append(parts, fmt.Sprintf("%d %ss", n, what))
		}
	}
	count(len(p.AllowedDomains), "domain")
	count(len(p.AllowedCIDRs), "cidr")
	count(len(p.DeniedDomains), "denied domain")
	count(len(p.AllowedTCP), "tcp endpoint")
	if len(parts) == 0 || (len(parts) == 1 && parts[0] == "monitor") {
		parts = append(parts, "deny all")
	}
	return strings.Join(parts, ", ")
}
