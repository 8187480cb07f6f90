package sqlite

import "github.com/egressd/egressd/internal/controlplane/store/sqlstore"

// schema is the schema's history, oldest step first. Append; never edit a released step.
func schema() sqlstore.Schema {
	return sqlstore.Schema{
		Table: `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER NOT NULL PRIMARY KEY,
			name       TEXT    NOT NULL,
			applied_at INTEGER NOT NULL -- unix nanoseconds, UTC
		) STRICT`,
		Steps: []sqlstore.Migration{
			{Version: 1, Name: "initial schema", Up: sqlstore.ExecSQL(schemaV1)},
			{Version: 2, Name: "api key revisions", Up: sqlstore.ExecSQL(schemaV2)},
			{Version: 3, Name: "nodes", Up: sqlstore.ExecSQL(schemaV3)},
			{Version: 4, Name: "node sandbox ranges and instances", Up: sqlstore.ExecSQL(schemaV4)},
			{Version: 5, Name: "secrets, the secrets key check and the CA", Up: sqlstore.ExecSQL(schemaV5)},
			{Version: 6, Name: "grants", Up: sqlstore.ExecSQL(schemaV6)},
		},
	}
}

// schemaV1 is the first schema. Conventions:
//   - STRICT tables, so a wrong type is an error rather than a silent conversion;
//   - times are INTEGER unix nanoseconds in UTC;
//   - JSON documents (a VM's network, a policy) are TEXT, written and read by Go;
//   - revision columns hold the revision of the change that last wrote the row.
//
// Policies have no foreign key: their id names a VM or a session depending on scope. The Go
// code deletes them together with their object, in the same transaction.
const schemaV1 = `
CREATE TABLE api_keys (
	id         TEXT    NOT NULL PRIMARY KEY,
	tenant     TEXT    NOT NULL,
	admin      INTEGER NOT NULL CHECK (admin IN (0, 1)),
	hash       BLOB    NOT NULL UNIQUE, -- SHA-256 of the secret
	created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE vms (
	tenant     TEXT    NOT NULL,
	id         TEXT    NOT NULL,
	network    TEXT    NOT NULL, -- JSON store.Network
	revision   INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (tenant, id)
) STRICT;

-- Session IDs are unique store-wide: the proxy finds a session by ID alone (SessionByID).
CREATE TABLE sessions (
	id         TEXT    NOT NULL PRIMARY KEY,
	tenant     TEXT    NOT NULL,
	vm_id      TEXT    NOT NULL,
	token_hash BLOB    NOT NULL, -- SHA-256 of the proxy token
	revision   INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	FOREIGN KEY (tenant, vm_id) REFERENCES vms (tenant, id) ON DELETE CASCADE
) STRICT;

CREATE INDEX sessions_by_vm ON sessions (tenant, vm_id);

CREATE TABLE policies (
	tenant     TEXT    NOT NULL,
	scope      TEXT    NOT NULL CHECK (scope IN ('session', 'vm')),
	id         TEXT    NOT NULL, -- session id or vm id
	policy     TEXT    NOT NULL, -- JSON policy.Policy
	revision   INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (tenant, scope, id)
) STRICT, WITHOUT ROWID;

-- The change log. Its key is the store-wide revision; AUTOINCREMENT guarantees that a revision
-- is never handed out twice, even after the newest rows are deleted.
CREATE TABLE changes (
	revision INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
	tenant   TEXT    NOT NULL,
	kind     TEXT    NOT NULL,
	id       TEXT    NOT NULL,
	op       TEXT    NOT NULL CHECK (op IN ('create', 'replace', 'delete')),
	at       INTEGER NOT NULL
) STRICT;
`

// schemaV2 gives API keys the revision of their creation, as PostgreSQL's have had from the
// start, so that both stores order keys created at the same instant the same way. Existing
// keys take it from the change log.
const schemaV2 = `
ALTER TABLE api_keys ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
UPDATE api_keys SET revision = COALESCE((SELECT MAX(c.revision) FROM changes c
	WHERE c.kind = 'api_key' AND c.op = 'create' AND c.id = api_keys.id), 0);
`

// schemaV3 adds the fleet's nodes (DESIGN §5). A heartbeat replaces its node's row and takes
// no revision: nodes are not in the change log.
const schemaV3 = `
CREATE TABLE nodes (
	id               TEXT    NOT NULL PRIMARY KEY,
	roles            TEXT    NOT NULL, -- JSON array of strings
	address          TEXT    NOT NULL,
	labels           TEXT    NOT NULL, -- JSON object of strings
	applied_revision INTEGER NOT NULL, -- the store revision the node's view has applied
	vms              INTEGER NOT NULL,
	heartbeat        INTEGER NOT NULL  -- by the store's clock
) STRICT, WITHOUT ROWID;
`

// schemaV4 records each transparent node's sandbox range, so that a node starting with a
// range that overlaps another's is refused (DESIGN §5), and the instance of the process that
// holds a node ID, so that a second process with that ID is refused.
const schemaV4 = `
ALTER TABLE nodes ADD COLUMN sandbox_cidr TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN instance TEXT NOT NULL DEFAULT '';
`

// schemaV5 adds tenants' secrets and what is sealed with the secrets key (DESIGN §2.7). A
// secret's value is only ever stored sealed (package keyring); its placeholder is unique
// store-wide, so that a placeholder seen in traffic names one secret. key_check and ca hold
// one row each (id 1), written once by the first node to start, and take no revision.
const schemaV5 = `
CREATE TABLE secrets (
	tenant      TEXT    NOT NULL,
	name        TEXT    NOT NULL,
	domains     TEXT    NOT NULL, -- JSON array of host patterns
	placeholder TEXT    NOT NULL UNIQUE,
	sealed      BLOB    NOT NULL, -- the value, AES-256-GCM under the secrets key
	revision    INTEGER NOT NULL,
	created_at  INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL,
	PRIMARY KEY (tenant, name)
) STRICT;

CREATE TABLE key_check (
	id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
	value      BLOB    NOT NULL, -- HMAC-SHA256 of a fixed string under the secrets key
	created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE ca (
	id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
	cert       BLOB    NOT NULL, -- DER
	sealed_key BLOB    NOT NULL, -- PKCS #8 DER, sealed under the secrets key
	created_at INTEGER NOT NULL
) STRICT;
`

// schemaV6 adds grants (DESIGN §2.8): entries added to a session's or VM's layer until
// expires_at. Like policies, they have no foreign key (object_id names a VM or a session
// depending on scope); the Go code deletes them with their object. IDs are unique
// store-wide. Readers ignore expired rows; SweepGrants deletes them (by the expiry index).
const schemaV6 = `
CREATE TABLE grants (
	id         TEXT    NOT NULL PRIMARY KEY,
	tenant     TEXT    NOT NULL,
	scope      TEXT    NOT NULL CHECK (scope IN ('session', 'vm')),
	object_id  TEXT    NOT NULL,
	domains    TEXT    NOT NULL, -- JSON array of host patterns
	tcp        TEXT    NOT NULL, -- JSON array of name:port
	cidrs      TEXT    NOT NULL, -- JSON array of prefixes
	note       TEXT    NOT NULL,
	revision   INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX grants_by_object ON grants (tenant, scope, object_id);
CREATE INDEX grants_by_expiry ON grants (expires_at);
`
