package policy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var snakeCase = regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`)

// TestReasonList: every code is snake_case (no variable part, fit for a metrics label),
// listed once, and has a sentence.
func TestReasonList(t *testing.T) {
	seen := map[Reason]bool{}
	for _, r := range Reasons() {
		if !snakeCase.MatchString(string(r.Reason)) {
			t.Errorf("reason %q is not snake_case", r.Reason)
		}
		if seen[r.Reason] {
			t.Errorf("reason %q is listed twice", r.Reason)
		}
		seen[r.Reason] = true
		if r.Message == "" || r.Message == string(r.Reason) {
			t.Errorf("reason %q has no sentence", r.Reason)
		}
		if !r.Reason.Known() {
			t.Errorf("reason %q is not Known", r.Reason)
		}
	}
	if Reason("host is not allowed").Known() {
		t.Error("a sentence is taken for a code")
	}
}

// TestEveryReasonConstantIsListed reads this package's source: a Reason constant declared
// anywhere but missing from the list would become "unknown" in metrics and the docs.
func TestEveryReasonConstantIsListed(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Reason" {
					continue
				}
				for _, v := range vs.Values {
					lit, ok := v.(*ast.BasicLit)
					if !ok {
						continue
					}
					code, _ := strconv.Unquote(lit.Value)
					found++
					if !Reason(code).Known() {
						t.Errorf("%s: Reason %q is declared but not in the list", f, code)
					}
				}
			}
		}
	}
	if found < len(reasonList) {
		t.Errorf("found %d Reason constants, the list has %d", found, len(reasonList))
	}
}

// TestReasonsAreDocumented: docs/reasons.md lists every code, so the docs cannot fall behind.
func TestReasonsAreDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "reasons.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range Reasons() {
		if !strings.Contains(string(doc), "| `"+string(r.Reason)+"` |") {
			t.Errorf("docs/reasons.md does not list %q", r.Reason)
		}
	}
}
