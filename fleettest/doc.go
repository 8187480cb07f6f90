// Package fleettest holds the end-to-end tests of a fleet (DESIGN §5, docs/fleet.md): real
// egressd processes of different roles on one PostgreSQL store, a policy written through one
// node and enforced by another, and a database outage that the nodes ride out. It has no
// code of its own besides the tests; they need a PostgreSQL server (see package pgtest) and
// skip without one, except under CI=true.
package fleettest
