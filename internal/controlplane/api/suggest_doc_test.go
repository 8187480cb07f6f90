package api_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/egressd/egressd/client"
)

// TestAPIDocSuggestion: the example answer of docs/api.md's suggestion section is the wire
// shape: it decodes strictly into client.Suggestion and names every one of its fields.
func TestAPIDocSuggestion(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := jsonBlocks(t, string(raw), "## Suggestions")
	if len(blocks) != 1 {
		t.Fatalf("%d json blocks under ## Suggestions, want 1", len(blocks))
	}
	dec := json.NewDecoder(strings.NewReader(blocks[0]))
	dec.DisallowUnknownFields()
	var s client.Suggestion
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("the example is not a suggestion: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(blocks[0]), &m); err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeOf(s)
	for i := 0; i < typ.NumField(); i++ {
		name := strings.Split(typ.Field(i).Tag.Get("json"), ",")[0]
		if _, ok := m[name]; !ok {
			t.Errorf("the example lacks %q", name)
		}
	}
	if s.Policy == nil || len(s.AllowedDomains) == 0 || len(s.AllowedDomains[0].Names) < 3 || len(s.NotAllowable) == 0 {
		t.Errorf("the example shows too little: %+v", s)
	}
}
