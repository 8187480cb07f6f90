package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/egressd/egressd/policy"
)

// readOnlyPolicyFields are the fields of a stored policy (Policy) that the API answers but
// does not take: ParsePolicy drops them.
var readOnlyPolicyFields = []string{"scope", "id", "revision", "updated_at", "warnings"}

// ParsePolicy reads a policy from JSON: the policy's fields alone (DESIGN §2.1), or a stored
// policy as GetSessionPolicy answers it and `egressctl -o json egress get` prints it. The
// stored policy's read-only fields (scope, id, revision, updated_at, warnings) are dropped, so
// that a policy read from one session or VM can be set again, on it or on another:
//
//	egressctl -o json egress get --session S | egressctl egress set --session S -f -
//
// It reads as strictly as egressd does, so that a mistake fails here rather than be lost
// when the policy is encoded again: one JSON object and nothing after it, field names exactly
// as written in §2.1 (no other case), no field twice, no field that neither a policy nor a
// stored policy has (a typo such as "allowed_domain" must not silently mean "deny nothing").
func ParsePolicy(data []byte) (policy.Policy, error) {
	if err := checkPolicyKeys(data); err != nil {
		return policy.Policy{}, err
	}
	// The keys are known: decode the policy's fields and let the read-only ones fall away.
	var p policy.Policy
	if err := json.Unmarshal(data, &p); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return policy.Policy{}, fmt.Errorf("%s: must be a JSON %s, not %s", typeErr.Field, jsonKind(typeErr.Type.Kind()), typeErr.Value)
		}
		return policy.Policy{}, fmt.Errorf("malformed JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return p, nil
}

// policyKeys are the names ParsePolicy takes: policy.Policy's JSON names (so that a field
// added to the policy is taken at once) and the read-only ones.
var policyKeys = func() map[string]bool {
	keys := map[string]bool{}
	t := reflect.TypeFor[policy.Policy]()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			keys[name] = true
		}
	}
	for _, name := range readOnlyPolicyFields {
		keys[name] = true
	}
	return keys
}()

// checkPolicyKeys checks the shape of data's top level: one object, known keys spelt exactly,
// each once, and nothing after the object. encoding/json alone would match keys in any case
// and keep the last of two.
func checkPolicyKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("want one JSON object, such as {\"allow_https\": true}")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("malformed JSON: %w", err)
		}
		key, _ := tok.(string)
		switch {
		case !policyKeys[key]:
			return fmt.Errorf("unknown field %q (field names are lower case, as in \"allowed_domains\")", key)
		case seen[key]:
			return fmt.Errorf("field %q is given twice; give it once", key)
		}
		seen[key] = true
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return fmt.Errorf("malformed JSON in %q: %w", key, err)
		}
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("malformed JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the policy object")
	}
	return nil
}

// jsonKind names a Go kind as a JSON author thinks of it.
func jsonKind(k reflect.Kind) string {
	switch k {
	case reflect.Bool:
		return "boolean"
	case reflect.Slice, reflect.Array:
		return "list"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.String:
		return "string"
	}
	return "number"
}
