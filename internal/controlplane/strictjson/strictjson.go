// Package strictjson decodes the JSON bodies that egressd accepts, strictly (DESIGN §2.1):
// field names match the struct's json names exactly, byte for byte; a name given twice in
// one object is an error; the body is one JSON object and nothing after it.
//
// encoding/json alone cannot do this: it matches names case-insensitively (with Unicode
// folding, so "allow_httpſ" with U+017F finds allow_https), lets the last of two equal names
// win, and takes "null" for an empty object. A policy body such as
// {"allowed_domains":["a.test"],"ALLOWED_DOMAINS":[]} would silently store an empty list,
// which allows any host. So Decode first walks the body's tokens beside the target type,
// checking every key of every object against the json names of the struct it lands in, and
// only then lets encoding/json fill the value, when every key is one it matches exactly.
//
// The walk also checks each value's JSON type against the Go type it lands in, so that an
// error names the whole path with list indexes ("http_rules[2].methods[0]"), and refuses null
// as a list entry (["a.test", null] would decode to an empty string nobody wrote). A field
// given as null still takes its default, as encoding/json leaves it.
package strictjson

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// MaxDepth is how deeply objects and lists may nest. egressd's bodies nest a few levels; the
// bound keeps a hostile body of a million '[' from costing a deep recursion.
const MaxDepth = 32

// Error is a body that is refused. Field is the path of the JSON field to blame
// ("network.mode", "allowed_domains", "rules[2].path"), "" when the body as a whole is wrong.
type Error struct {
	Field   string
	Message string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// Decode decodes data, which must be exactly one JSON object, into v (a pointer to a struct,
// usually). Every error is an *Error. Data that is empty or only white space is an error too:
// a caller for which an empty body means {} checks for that first.
func Decode(data []byte, v any) error {
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer {
		return fmt.Errorf("strictjson: Decode needs a pointer, not %T", v) // a bug in the caller
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return &Error{Message: "the body is empty; send one JSON object"}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	first, err := dec.Token()
	if err != nil {
		return syntaxError(err, dec)
	}
	if d, ok := first.(json.Delim); !ok || d != '{' {
		return &Error{Message: fmt.Sprintf("the body is %s; send one JSON object, {...}", tokenKind(first))}
	}
	w := walker{dec: dec}
	if err := w.object(t.Elem(), "", 1); err != nil {
		return err
	}
	if tok, err := dec.Token(); err != io.EOF {
		what := "unexpected data"
		if err == nil {
			what = tokenKind(tok)
		}
		return &Error{Message: fmt.Sprintf("%s after the JSON object at byte %d; send exactly one object and nothing after it", what, dec.InputOffset())}
	}
	// Every key is now known to be an exact name, so encoding/json's case-insensitive
	// matching has nothing left to fold.
	if err := json.Unmarshal(data, v); err != nil {
		return decodeError(err)
	}
	return nil
}

// walker checks keys while it reads a body's tokens.
type walker struct{ dec *json.Decoder }

// value checks the value that starts with tok and is to be decoded into t (nil: any type,
// whose objects may have any keys but still not one key twice).
func (w walker) value(tok json.Token, t reflect.Type, path string, depth int) error {
	d, ok := tok.(json.Delim)
	if !ok {
		return checkScalar(tok, t, path)
	}
	if depth > MaxDepth {
		return &Error{Field: path, Message: fmt.Sprintf("nests more than %d levels deep", MaxDepth)}
	}
	// The container's own type first: "allowed_cidrs: must be a JSON list of strings, not
	// object" says more than an error about something inside it.
	if d == '{' {
		if err := checkKind(t, "object", path); err != nil {
			return err
		}
		return w.object(t, path, depth)
	}
	if err := checkKind(t, "array", path); err != nil {
		return err
	}
	elem := elemType(t)
	for i := 0; ; i++ {
		tok, err := w.dec.Token()
		if err != nil {
			return syntaxError(err, w.dec)
		}
		if tok == json.Delim(']') {
			return nil
		}
		at := path + "[" + strconv.Itoa(i) + "]"
		if tok == nil && elem != nil && !nullable(elem) {
			// encoding/json would decode the null as a zero value (an empty string, an
			// empty object) and a list entry would silently mean something nobody wrote.
			return &Error{Field: at, Message: fmt.Sprintf("is null; a list entry must be a JSON %s", Kind(elem))}
		}
		if err := w.value(tok, elem, at, depth+1); err != nil {
			return err
		}
	}
}

// checkScalar checks a scalar token against the type it is to be decoded into, so that a
// wrong type is reported with the whole path ("http_rules[2].methods[0]"): encoding/json
// names the field without list indexes. null is left to encoding/json, which keeps the
// zero value: a field given as null takes its default.
func checkScalar(tok json.Token, t reflect.Type, path string) error {
	var kind string
	switch tok.(type) {
	case nil:
		return nil
	case string:
		kind = "string"
	case bool:
		kind = "bool"
	default:
		kind = "number"
	}
	return checkKind(t, kind, path)
}

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// checkKind reports a JSON value of kind ("string", "number", "bool", "array", "object",
// encoding/json's words) that cannot be decoded into t. Types that decode themselves, and
// interfaces, take anything here: encoding/json judges them.
func checkKind(t reflect.Type, kind, path string) error {
	t = deref(t)
	if t == nil || t.Kind() == reflect.Interface || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	if reflect.PointerTo(t).Implements(textUnmarshalerType) {
		if kind == "string" {
			return nil
		}
	} else {
		switch t.Kind() {
		case reflect.String:
			if kind == "string" {
				return nil
			}
		case reflect.Bool:
			if kind == "bool" {
				return nil
			}
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
			reflect.Float32, reflect.Float64:
			if kind == "number" {
				return nil
			}
		case reflect.Slice, reflect.Array:
			if kind == "array" || kind == "string" && t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 {
				return nil // []byte is a base64 string
			}
		case reflect.Struct, reflect.Map:
			if kind == "object" {
				return nil
			}
		default:
			return nil
		}
	}
	return &Error{Field: path, Message: fmt.Sprintf("must be a JSON %s, not %s", Kind(t), kind)}
}

// nullable reports whether null is a meaningful value of t: a pointer, an interface or a
// type that decodes itself (json.RawMessage keeps the null).
func nullable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.Interface:
		return true
	}
	return reflect.PointerTo(t).Implements(unmarshalerType)
}

// object checks the keys of an object whose '{' has been read.
func (w walker) object(t reflect.Type, path string, depth int) error {
	fields, strict := fieldsFor(t)
	seen := make(map[string]bool)
	for {
		tok, err := w.dec.Token()
		if err != nil {
			return syntaxError(err, w.dec)
		}
		if tok == json.Delim('}') {
			return nil
		}
		key, _ := tok.(string) // the decoder allows nothing else here
		field := key
		if path != "" {
			field = path + "." + key
		}
		if seen[key] {
			return &Error{Field: field, Message: fmt.Sprintf("%q is given twice; give each field once", key)}
		}
		seen[key] = true
		var ft reflect.Type
		if strict {
			f, ok := fields.byName[key]
			if !ok {
				return &Error{Field: field, Message: unknownField(key, fields.names)}
			}
			ft = f
		} else {
			ft = elemType(t)
		}
		tok, err = w.dec.Token()
		if err != nil {
			return syntaxError(err, w.dec)
		}
		if err := w.value(tok, ft, field, depth+1); err != nil {
			return err
		}
	}
}

func unknownField(key string, names []string) string {
	for _, n := range names {
		if strings.EqualFold(n, key) {
			return fmt.Sprintf("unknown field %q: field names are case-sensitive; did you mean %q?", key, n)
		}
	}
	return fmt.Sprintf("unknown field %q; the fields here are %s", key, strings.Join(names, ", "))
}

// structFields is the json names of a struct type and the type each leads to.
type structFields struct {
	byName map[string]reflect.Type
	names  []string // in declaration order, for messages
}

var fieldCache sync.Map // reflect.Type → *structFields

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// fieldsFor returns the fields of t when its objects have a fixed set of keys (a struct that
// decodes itself field by field), and strict false otherwise: a map, an interface, or a type
// with its own UnmarshalJSON, whose keys only must not repeat.
func fieldsFor(t reflect.Type) (f *structFields, strict bool) {
	t = deref(t)
	if t == nil || t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil, false
	}
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields), true
	}
	f = collectFields(t)
	fieldCache.Store(t, f)
	return f, true
}

// collectFields follows encoding/json's rules as far as egressd's types need them: a json tag
// names a field ("-" hides it), an untagged field is named by its Go name, and the fields of
// an untagged embedded struct are promoted, a shallower name hiding a deeper one.
func collectFields(t reflect.Type) *structFields {
	f := &structFields{byName: make(map[string]reflect.Type)}
	level := []reflect.Type{t}
	for len(level) > 0 {
		var next []reflect.Type
		found := make(map[string]reflect.Type)
		var order []string
		for _, st := range level {
			for i := range st.NumField() {
				sf := st.Field(i)
				tag := sf.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, _, _ := strings.Cut(tag, ",")
				if sf.Anonymous && name == "" {
					if et := deref(sf.Type); et.Kind() == reflect.Struct {
						next = append(next, et)
						continue
					}
				}
				if !sf.IsExported() {
					continue
				}
				if name == "" {
					name = sf.Name
				}
				if _, hidden := f.byName[name]; hidden {
					continue
				}
				if _, dup := found[name]; !dup {
					found[name] = sf.Type
					order = append(order, name)
				}
			}
		}
		for _, name := range order {
			f.byName[name] = found[name]
			f.names = append(f.names, name)
		}
		level = next
	}
	return f
}

func deref(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// elemType is what the elements of a list or the values of a map decode into (nil: any).
func elemType(t reflect.Type) reflect.Type {
	t = deref(t)
	if t == nil || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array, reflect.Map:
		return t.Elem()
	}
	return nil
}

func tokenKind(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		switch v {
		case '[':
			return "a list"
		case '{':
			return "another object"
		}
		return fmt.Sprintf("a stray %q", string(v))
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	}
	return "a number"
}

func syntaxError(err error, dec *json.Decoder) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &Error{Message: "the body is cut short; send one complete JSON object"}
	}
	return &Error{Message: fmt.Sprintf("malformed JSON at byte %d: %v", dec.InputOffset(), err)}
}

// decodeError names the field of an error from encoding/json.
func decodeError(err error) error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return &Error{Field: typeErr.Field, Message: fmt.Sprintf("must be a JSON %s, not %s", Kind(typeErr.Type), typeErr.Value)}
	}
	return &Error{Message: err.Error()}
}

// Kind names a Go type the way a JSON author thinks of it: "boolean (true or false)",
// "list of strings", "object".
func Kind(t reflect.Type) string {
	t = deref(t)
	switch t.Kind() {
	case reflect.Bool:
		return "boolean (true or false)"
	case reflect.Slice, reflect.Array:
		if e := noun(t.Elem()); e != "" {
			return "list of " + e + "s"
		}
		return "list"
	}
	if n := noun(t); n != "" {
		return n
	}
	return t.Kind().String()
}

// noun is the one-word JSON name of a type's kind ("" when there is none).
func noun(t reflect.Type) string {
	switch deref(t).Kind() {
	case reflect.Bool:
		return "boolean"
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice, reflect.Array:
		return "list"
	}
	return ""
}
