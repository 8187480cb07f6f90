package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/egressd/egressd/internal/controlplane/strictjson"
)

// Mode says whether a policy's denials are enforced or only recorded.
type Mode string

const (
	// Enforce blocks what the policy does not allow. It is the default.
	Enforce Mode = "enforce"
	// Monitor evaluates the policy and records would-be denials, but lets traffic through.
	// A monitor layer never loosens an enforce layer.
	Monitor Mode = "monitor"
)

// Limits of one policy (DESIGN §2.3).
const (
	MaxDomains = 10000 // per list: allowed_domains, denied_domains
	MaxCIDRs   = 10000 // allowed_cidrs
)

// Policy is the rule set attached to a session or a VM. The JSON names are the contract
// (DESIGN §2.1). A Policy returned by Parse or Normalize is normalised: names are in the form
// NormalizeName gives, CIDRs are canonical prefixes, lists are sorted without duplicates and
// never nil, and Mode is set.
type Policy struct {
	AllowPackageManagers bool       `json:"allow_package_managers"`
	AllowHTTP            bool       `json:"allow_http"`
	AllowHTTPS           bool       `json:"allow_https"`
	AllowedDomains       []string   `json:"allowed_domains"`
	AllowedCIDRs         []string   `json:"allowed_cidrs"`
	DeniedDomains        []string   `json:"denied_domains"`
	Mode                 Mode       `json:"mode"`
	AllowedTCP           []string   `json:"allowed_tcp"`
	HTTPRules            []HTTPRule `json:"http_rules"`
}

// DenyAll is the policy that allows nothing: every field at its default.
func DenyAll() Policy { return Policy{}.WithDefaults() }

// WithDefaults fills the fields left at their zero value with their defaults (empty lists
// rather than nil, mode enforce) and changes nothing else: no validation, no normalisation.
func (p Policy) WithDefaults() Policy {
	if p.AllowedDomains == nil {
		p.AllowedDomains = []string{}
	}
	if p.AllowedCIDRs == nil {
		p.AllowedCIDRs = []string{}
	}
	if p.DeniedDomains == nil {
		p.DeniedDomains = []string{}
	}
	if p.AllowedTCP == nil {
		p.AllowedTCP = []string{}
	}
	if p.Mode == "" {
		p.Mode = Enforce
	}
	if p.HTTPRules == nil {
		p.HTTPRules = []HTTPRule{}
	}
	return p
}

// FieldError is a validation error that a person can act on: Field names the JSON field to
// blame ("allowed_cidrs[1]"), Message says what is wrong and how to fix it.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// Parse decodes a policy from JSON strictly, with the decoder of every body the API accepts
// (DESIGN §2.1): field names match exactly (ALLOWED_DOMAINS is an unknown field, not
// allowed_domains), a field given twice, wrong types, null and anything after the object are
// errors, so that a typo such as "allowed_domain" never silently means "deny nothing". It
// fills defaults for the fields left out and normalises. Errors are *FieldError.
func Parse(data []byte) (p Policy, warnings []string, err error) {
	var se *strictjson.Error
	if err := strictjson.Decode(data, &p); errors.As(err, &se) {
		return Policy{}, nil, &FieldError{Field: se.Field, Message: se.Message}
	} else if err != nil {
		return Policy{}, nil, err
	}
	return p.Normalize()
}

// jsonError turns encoding/json's errors into FieldErrors that name the field.
func jsonError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		return &FieldError{Field: typeErr.Field, Message: fmt.Sprintf("must be a JSON %s, not %s", jsonKind(typeErr.Type.Kind().String()), typeErr.Value)}
	case errors.As(err, &syntaxErr):
		return &FieldError{Message: fmt.Sprintf("malformed JSON at byte %d: %v", syntaxErr.Offset, err)}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &FieldError{Field: name, Message: fmt.Sprintf("unknown field %q; the fields are allow_package_managers, allow_http, allow_https, allowed_domains, allowed_cidrs, denied_domains, mode, allowed_tcp and http_rules", name)}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &FieldError{Message: "the body is empty or cut short; send one JSON object"}
	}
	return &FieldError{Message: "malformed JSON: " + err.Error()}
}

func jsonKind(k string) string {
	switch k {
	case "bool":
		return "boolean (true or false)"
	case "slice":
		return "list of strings"
	case "map", "struct":
		return "object"
	}
	return k
}
