package gateway

import "context"

// WaitApplied returns once the kernel rules in force reflect every store change up to rev
// (the view had rev when the table in force was built from it), or ctx's error. A write is
// answered only after this (DESIGN §3), so that a forwarded flow that a tightened
// allowed_cidrs no longer allows cannot start right after the answer.
func (g *Gateway) WaitApplied(ctx context.Context, rev int64) error {
	_, err := g.enforced.Wait(ctx, rev)
	return err
}

// Revision is the store revision of the kernel rules in force: what this node enforces, as
// its heartbeat reports it for ?wait=fleet on other nodes. It trails the view's revision
// while an apply is under way, and stays behind it while applies fail.
func (g *Gateway) Revision() int64 { return g.enforced.Current() }
