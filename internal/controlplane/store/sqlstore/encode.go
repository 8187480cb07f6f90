package sqlstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/policy"
)

// timeValue scans a time column of either database: INTEGER unix nanoseconds (SQLite) or
// timestamptz (PostgreSQL). NULL leaves it invalid.
type timeValue struct {
	t     time.Time
	valid bool
}

func (v *timeValue) Scan(src any) error {
	switch x := src.(type) {
	case nil:
		*v = timeValue{}
	case int64:
		*v = timeValue{time.Unix(0, x).UTC(), true}
	case time.Time:
		*v = timeValue{x.UTC(), true}
	default:
		return fmt.Errorf("a time column holds a %T", src)
	}
	return nil
}

// networkDoc is a VM's network as the vms table stores it (a JSON document). Its names are
// the store's own, fixed by the databases already written: they do not follow the API.
type networkDoc struct {
	Mode    string `json:"mode"`
	Node    string `json:"node,omitempty"`
	State   string `json:"state,omitempty"`
	Error   string `json:"error,omitempty"`
	Netns   string `json:"netns,omitempty"`
	Path    string `json:"path,omitempty"`
	Address string `json:"address,omitempty"`
	Gateway string `json:"gateway,omitempty"`
}

func encodeNetwork(n store.Network) (string, error) {
	doc, err := json.Marshal(networkDoc(n))
	return string(doc), err
}

func decodeNetwork(doc []byte) (store.Network, error) {
	var n networkDoc
	if err := json.Unmarshal(doc, &n); err != nil {
		return store.Network{}, fmt.Errorf("decode network: %w", err)
	}
	return store.Network(n), nil
}

// decodePolicy reads a stored policy strictly. A field this binary does not know can only
// come from a newer egressd, and ignoring it might ignore a restriction: failing is the safe
// way to be wrong for a firewall.
func decodePolicy(doc []byte) (policy.Policy, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	var p policy.Policy
	if err := dec.Decode(&p); err != nil {
		return policy.Policy{}, fmt.Errorf("decode stored policy: %w", err)
	}
	return p, nil
}
