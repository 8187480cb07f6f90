package client

import (
	"github.com/egressd/egressd/internal/controlplane/strictjson"
	"github.com/egressd/egressd/policy"
)

// ParsePolicy reads a policy from JSON: the policy's fields alone (DESIGN §2.1), or a stored
// policy as GetSessionPolicy answers it and `egressctl -o json egress get` prints it. The
// stored policy's read-only fields (scope, id, revision, updated_at, warnings, enforced_by,
// lagging) are dropped, so that a policy read from one session or VM can be set again, on it
// or on another:
//
//	egressctl -o json egress get --session S | egressctl egress set --session S -f -
//
// It reads with egressd's own strict decoder, so that a mistake fails here rather than be
// lost when the policy is encoded again: one JSON object and nothing after it, field names
// exactly as written in §2.1 (no other case), no field twice, no field that neither a policy
// nor a stored policy has (a typo such as "allowed_domain" must not silently mean "deny
// nothing").
func ParsePolicy(data []byte) (policy.Policy, error) {
	var stored Policy
	if err := strictjson.Decode(data, &stored); err != nil {
		return policy.Policy{}, err
	}
	return stored.Policy, nil
}
