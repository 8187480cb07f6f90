package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// body is shaped like egressd's request bodies: a nested object, a nested policy, a list of
// objects, a map and a raw value. (Package policy decodes with this package, so its own
// type cannot be used here.)
type body struct {
	VMID    string     `json:"vm_id"`
	Policy  *policyish `json:"egress_policy"`
	Network *struct {
		Mode string `json:"mode"`
	} `json:"network"`
	Rules  []rule            `json:"rules"`
	Labels map[string]string `json:"labels"`
	Raw    json.RawMessage   `json:"raw"`
	Hidden string            `json:"-"`
	embedded
}

type policyish struct {
	AllowPackageManagers bool     `json:"allow_package_managers"`
	AllowHTTPS           bool     `json:"allow_https"`
	AllowedDomains       []string `json:"allowed_domains"`
	Mode                 string   `json:"mode"`
}

type rule struct {
	Path string `json:"path"`
}

type embedded struct {
	Admin bool `json:"admin"`
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name, data string
		field, msg string // expected error; both "" for success
	}{
		{"ok", `{"vm_id": "a", "egress_policy": {"allow_https": true}, "network": {"mode": "none"}}`, "", ""},
		{"ok empty object", `{}`, "", ""},
		{"ok white space around", " \n{}\t\n", "", ""},
		{"ok promoted field", `{"admin": true}`, "", ""},
		{"ok map keys are free", `{"labels": {"Team": "a", "team": "b"}}`, "", ""},
		{"ok raw value", `{"raw": {"Anything": [1, {"x": 2}]}}`, "", ""},
		{"ok nulls", `{"egress_policy": null, "network": null, "rules": null}`, "", ""},
		{"ok escaped key", `{"vm_\u0069d": "a"}`, "", ""},
		{"ok null fields inside a list entry", `{"rules": [{"path": null}]}`, "", ""},
		{"ok anything in a raw value", `{"raw": [null, 1, "x", {"a": null}]}`, "", ""},

		{"upper case", `{"VM_ID": "a"}`, "VM_ID", `did you mean "vm_id"`},
		{"mixed case", `{"Vm_Id": "a"}`, "Vm_Id", "case-sensitive"},
		{"long s U+017F in a nested policy", `{"egress_policy": {"allow_httpſ": true}}`, "egress_policy.allow_httpſ", `did you mean "allow_https"`},
		{"Kelvin sign U+212A", "{\"egress_policy\": {\"allow_pac\u212Aage_managers\": true}}", "egress_policy.allow_pac\u212Aage_managers", "case-sensitive"},
		{"unknown", `{"vm": "a"}`, "vm", "the fields here are vm_id, egress_policy"},
		{"hidden field", `{"Hidden": "x"}`, "Hidden", "unknown field"},
		{"unknown nested", `{"network": {"mode": "none", "netns": "x"}}`, "network.netns", "unknown field"},
		{"unknown in a list of objects", `{"rules": [{"path": "/"}, {"Path": "/"}]}`, "rules[1].Path", "did you mean"},
		{"policy case folding", `{"egress_policy": {"allowed_domains": ["a.test"], "ALLOWED_DOMAINS": []}}`, "egress_policy.ALLOWED_DOMAINS", "case-sensitive"},

		{"duplicate", `{"vm_id": "a", "vm_id": "b"}`, "vm_id", "given twice"},
		{"duplicate through an escape", `{"vm_id": "a", "vm_\u0069d": "b"}`, "vm_id", "given twice"},
		{"duplicate nested", `{"network": {"mode": "none", "mode": "netns"}}`, "network.mode", "given twice"},
		{"duplicate in a map", `{"labels": {"a": "1", "a": "2"}}`, "labels.a", "given twice"},
		{"duplicate in a raw value", `{"raw": {"x": 1, "x": 2}}`, "raw.x", "given twice"},

		{"null body", `null`, "", "the body is null"},
		{"empty body", ``, "", "empty"},
		{"white space body", " \n ", "", "empty"},
		{"list body", `[]`, "", "the body is a list"},
		{"string body", `"x"`, "", "the body is a string"},
		{"trailing ]", `{}]`, "", "after the JSON object"},
		{"trailing }", `{"vm_id": "a"}}`, "", "after the JSON object"},
		{"second object", `{} {}`, "", "another object after the JSON object"},
		{"trailing garbage", `{}x`, "", "after the JSON object"},
		{"trailing null", `{} null`, "", "null after the JSON object"},
		{"cut short", `{"vm_id": "a"`, "", "cut short"},
		{"malformed", `{"vm_id" "a"}`, "", "malformed JSON"},
		{"trailing comma", `{"vm_id": "a",}`, "", "malformed JSON"},

		{"wrong type", `{"vm_id": 7}`, "vm_id", "must be a JSON string, not number"},
		{"wrong nested type", `{"egress_policy": {"allow_https": "yes"}}`, "egress_policy.allow_https", "must be a JSON boolean (true or false), not string"},
		{"wrong list type", `{"egress_policy": {"allowed_domains": "a.test"}}`, "egress_policy.allowed_domains", "must be a JSON list of strings"},
		{"object where a string goes", `{"vm_id": {"a": 1, "a": 2}}`, "vm_id", "must be a JSON string, not object"},
		{"object where a list goes", `{"egress_policy": {"allowed_domains": {"a": 1}}}`, "egress_policy.allowed_domains", "must be a JSON list of strings, not object"},
		{"list where a string goes", `{"vm_id": ["a"]}`, "vm_id", "must be a JSON string, not array"},
		{"wrong type in a list names the index", `{"egress_policy": {"allowed_domains": ["a.test", 7]}}`, "egress_policy.allowed_domains[1]", "must be a JSON string, not number"},
		{"wrong type in a list of objects names the index", `{"rules": [{"path": "/"}, {"path": true}]}`, "rules[1].path", "must be a JSON string, not bool"},
		{"string where an object goes in a list", `{"rules": ["/"]}`, "rules[0]", "must be a JSON object, not string"},
		{"wrong type in a map value", `{"labels": {"a": 1}}`, "labels.a", "must be a JSON string, not number"},
		{"null entry in a list of objects", `{"rules": [{"path": "/"}, null]}`, "rules[1]", "is null; a list entry must be a JSON object"},
		{"null entry in a list of strings", `{"egress_policy": {"allowed_domains": [null]}}`, "egress_policy.allowed_domains[0]", "is null"},
		{"too deep", `{"raw": ` + strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1) + `}`, "raw" + strings.Repeat("[0]", MaxDepth-1), "levels deep"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v body
			err := Decode([]byte(tt.data), &v)
			if tt.field == "" && tt.msg == "" {
				if err != nil {
					t.Fatalf("Decode(%s) = %v, want success", tt.data, err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode(%s) = %v (%T), want an *Error", tt.data, err, err)
			}
			if e.Field != tt.field || !strings.Contains(e.Message, tt.msg) {
				t.Errorf("Decode(%s) = {%q, %q}, want {%q, ...%q...}", tt.data, e.Field, e.Message, tt.field, tt.msg)
			}
		})
	}
}

// TestDecodeFillsTheValue: what passes the checks is decoded as encoding/json would.
func TestDecodeFillsTheValue(t *testing.T) {
	var v body
	err := Decode([]byte(`{"vm_id": "a", "admin": true, "egress_policy": {"allowed_domains": ["x.test"]}, "rules": [{"path": "/p"}], "raw": [1]}`), &v)
	if err != nil {
		t.Fatal(err)
	}
	if v.VMID != "a" || !v.Admin || v.Policy == nil || !reflect.DeepEqual(v.Policy.AllowedDomains, []string{"x.test"}) ||
		len(v.Rules) != 1 || v.Rules[0].Path != "/p" || string(v.Raw) != "[1]" {
		t.Errorf("decoded %+v", v)
	}
}

func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{
		`{}`, `null`, `[]`, `{} {}`, `{}]`, `{"vm_id": "a"}`, `{"VM_ID": "a"}`, `{"vm_id": "a", "vm_id": "b"}`,
		`{"egress_policy": {"allow_httpſ": true}}`, `{"egress_policy": {"allowed_domains": ["a.test"], "ALLOWED_DOMAINS": []}}`,
		`{"network": {"mode": "netns"}}`, `{"rules": [{"path": "/"}]}`, `{"labels": {"a": "b"}}`, `{"raw": {"a": [1, 2]}}`,
		`{"admin": true}`, `{"vm_\u0069d": "a"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var v body
		err := Decode(data, &v)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode error %v is %T, not *Error", err, err)
			}
			return
		}
		// Accepted: exactly one object, and encoding/json, strict as it can be, agrees on
		// the value.
		trimmed := bytes.TrimSpace(data)
		if !json.Valid(data) || len(trimmed) == 0 || trimmed[0] != '{' {
			t.Fatalf("accepted %q, which is not one JSON object", data)
		}
		var w body
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&w); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", data, err)
		}
		if !reflect.DeepEqual(v, w) {
			t.Fatalf("accepted %q as %+v; encoding/json decodes %+v", data, v, w)
		}
		// Every key of the top level is an exact name, each given once.
		d := json.NewDecoder(bytes.NewReader(data))
		d.Token()
		seen := map[string]bool{}
		names, _ := fieldsFor(reflect.TypeFor[body]())
		for d.More() {
			tok, _ := d.Token()
			key := tok.(string)
			if _, ok := names.byName[key]; !ok || seen[key] {
				t.Fatalf("accepted %q with the key %q (known: %v, seen before: %v)", data, key, ok, seen[key])
			}
			seen[key] = true
			var skip json.RawMessage
			if err := d.Decode(&skip); err != nil {
				t.Fatal(err)
			}
		}
	})
}
