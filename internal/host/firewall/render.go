package firewall

import (
	"fmt"
	"strings"
)

// Render returns the table that Apply(d) would install, in nft syntax: the same sets,
// elements, chains, rules and comments, in the order Apply adds them (sets and maps first,
// as `nft list` shows them). It is deterministic (sandboxes sorted by name, ranges merged
// and sorted), so it serves as a golden file and as a human-readable review of a state;
// `nft -f` loads it into the same ruleset (the fast path's queue rule aside: see doc.go
// "The fast path"). An invalid d renders as a comment line with the error Apply would return.
func Render(d Desired) string {
	st, err := validate(d)
	if err != nil {
		return "# " + err.Error() + "\n"
	}
	return build(st).render()
}

func (p *plan) render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for _, s := range p.sets {
		kind, typ, flags := "set", "ipv4_addr", "interval"
		switch {
		case s.vmap:
			kind, typ, flags = "map", "ifname : verdict", ""
		case s.ifname:
			typ, flags = "ifname", ""
		case s.tcp:
			typ, flags = "ipv4_addr . inet_service", "timeout"
		}
		fmt.Fprintf(&b, "\t%s %s {\n\t\ttype %s\n", kind, s.name, typ)
		if flags != "" {
			fmt.Fprintf(&b, "\t\tflags %s\n", flags)
		}
		if len(s.elemText) > 0 {
			b.WriteString("\t\telements = {\n")
			for i, e := range s.elemText {
				sep := ","
				if i == len(s.elemText)-1 {
					sep = ""
				}
				fmt.Fprintf(&b, "\t\t\t%s%s\n", e, sep)
			}
			b.WriteString("\t\t}\n")
		}
		b.WriteString("\t}\n\n")
	}
	for i, c := range p.chains {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", c.name)
		if c.base != nil {
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %s; policy accept;\n",
				c.base.typ, c.base.hookName, c.base.prioName)
		}
		for _, r := range c.rules {
			fmt.Fprintf(&b, "\t\t%s\n", r.text())
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}
