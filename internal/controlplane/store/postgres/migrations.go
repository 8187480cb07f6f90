package postgres

import "github.com/egressd/egressd/internal/controlplane/store/sqlstore"

// schema is the schema's history, oldest step first. Append; never edit a released step.
func schema() sqlstore.Schema {
	return sqlstore.Schema{
		Table: `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer     NOT NULL PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL
		)`,
		Steps: []sqlstore.Migration{
			{Version: 1, Name: "initial schema", Up: sqlstore.ExecSQL(schemaV1)},
			{Version: 2, Name: "nodes", Up: sqlstore.ExecSQL(schemaV2)},
			{Version: 3, Name: "node sandbox ranges and instances", Up: sqlstore.ExecSQL(schemaV3)},
			{Version: 4, Name: "secrets, the secrets key check and the CA", Up: sqlstore.ExecSQL(schemaV4)},
			{Version: 5, Name: "grants", Up: sqlstore.ExecSQL(schemaV5)},
		},
	}
}

// schemaV1 is the first schema, the same tables as the embedded store's (package sqlite).
// Conventions:
//   - times are timestamptz, which keeps microseconds: the Go code truncates to those;
//   - JSON documents (a VM's network, a policy) are jsonb, written and read by Go (jsonb keeps
//     array order, which policies rely on, and lets an operator query them in psql);
//   - revision columns hold the revision of the change that last wrote the row; an API key's
//     is that of its creation, which orders keys created in the same microsecond.
//
// Policies have no foreign key: their id names a VM or a session depending on scope. The Go
// code deletes them together with their object, in the same transaction.
const schemaV1 = `
CREATE TABLE api_keys (
	id         text        NOT NULL PRIMARY KEY,
	tenant     text        NOT NULL,
	admin      boolean     NOT NULL,
	hash       bytea       NOT NULL UNIQUE, -- SHA-256 of the secret
	revision   bigint      NOT NULL,
	created_at timestamptz NOT NULL
);

CREATE TABLE vms (
	tenant     text        NOT NULL,
	id         text        NOT NULL,
	network    jsonb       NOT NULL, -- store.Network
	revision   bigint      NOT NULL,
	created_at timestamptz NOT NULL,
	PRIMARY KEY (tenant, id)
);

-- Session IDs are unique store-wide: the proxy finds a session by ID alone (SessionByID).
CREATE TABLE sessions (
	id         text        NOT NULL PRIMARY KEY,
	tenant     text        NOT NULL,
	vm_id      text        NOT NULL,
	token_hash bytea       NOT NULL, -- SHA-256 of the proxy token
	revision   bigint      NOT NULL,
	created_at timestamptz NOT NULL,
	FOREIGN KEY (tenant, vm_id) REFERENCES vms (tenant, id) ON DELETE CASCADE
);

CREATE INDEX sessions_by_vm ON sessions (tenant, vm_id);

CREATE TABLE policies (
	tenant     text        NOT NULL,
	scope      text        NOT NULL CHECK (scope IN ('session', 'vm')),
	id         text        NOT NULL, -- session id or vm id
	policy     jsonb       NOT NULL, -- policy.Policy
	revision   bigint      NOT NULL,
	updated_at timestamptz NOT NULL,
	PRIMARY KEY (tenant, scope, id)
);

-- The change log. Its key is the store-wide revision. Writers hold an advisory lock while
-- they take revisions and commit, so revisions become visible in order (see package doc).
CREATE TABLE changes (
	revision bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	tenant   text        NOT NULL,
	kind     text        NOT NULL,
	id       text        NOT NULL,
	op       text        NOT NULL CHECK (op IN ('create', 'replace', 'delete')),
	at       timestamptz NOT NULL
);

-- Every statement that logs changes announces the newest revision it logged on the channel
-- egressd_changes (postgres.Channel). PostgreSQL delivers a notification when, and only if,
-- its transaction commits. A trigger rather than a statement of each mutation: it costs no
-- round trip while the write lock is held, and no writer can forget it.
CREATE FUNCTION egressd_notify_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('egressd_changes', (SELECT max(revision) FROM logged)::text);
	RETURN NULL;
END
$$;

CREATE TRIGGER changes_notify AFTER INSERT ON changes
	REFERENCING NEW TABLE AS logged
	FOR EACH STATEMENT EXECUTE FUNCTION egressd_notify_changes();
`

// schemaV2 adds the fleet's nodes (DESIGN §5). A heartbeat replaces its node's row and takes
// no revision: nodes are not in the change log, and notify nobody.
const schemaV2 = `
CREATE TABLE nodes (
	id               text        NOT NULL PRIMARY KEY,
	roles            jsonb       NOT NULL, -- array of strings
	address          text        NOT NULL,
	labels           jsonb       NOT NULL, -- object of strings
	applied_revision bigint      NOT NULL, -- the store revision the node's view has applied
	vms              integer     NOT NULL,
	heartbeat        timestamptz NOT NULL  -- by the server's clock, now()
);
`

// schemaV3 records each transparent node's sandbox range, so that a node starting with a
// range that overlaps another's is refused (DESIGN §5), and the instance of the process that
// holds a node ID, so that a second process with that ID is refused.
const schemaV3 = `
ALTER TABLE nodes ADD COLUMN sandbox_cidr text NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN instance text NOT NULL DEFAULT '';
`

// schemaV4 adds tenants' secrets and what is sealed with the secrets key (DESIGN §2.7). A
// secret's value is only ever stored sealed (package keyring); its placeholder is unique
// store-wide, so that a placeholder seen in traffic names one secret. key_check and ca hold
// one row each (id 1), written once by the first node to start, and take no revision.
const schemaV4 = `
CREATE TABLE secrets (
	tenant      text        NOT NULL,
	name        text        NOT NULL,
	domains     jsonb       NOT NULL, -- array of host patterns
	placeholder text        NOT NULL UNIQUE,
	sealed      bytea       NOT NULL, -- the value, AES-256-GCM under the secrets key
	revision    bigint      NOT NULL,
	created_at  timestamptz NOT NULL,
	updated_at  timestamptz NOT NULL,
	PRIMARY KEY (tenant, name)
);

CREATE TABLE key_check (
	id         integer     NOT NULL PRIMARY KEY CHECK (id = 1),
	value      bytea       NOT NULL, -- HMAC-SHA256 of a fixed string under the secrets key
	created_at timestamptz NOT NULL
);

CREATE TABLE ca (
	id         integer     NOT NULL PRIMARY KEY CHECK (id = 1),
	cert       bytea       NOT NULL, -- DER
	sealed_key bytea       NOT NULL, -- PKCS #8 DER, sealed under the secrets key
	created_at timestamptz NOT NULL
);
`

// schemaV5 adds grants (DESIGN §2.8), as the embedded store's schema version 6 does.
const schemaV5 = `
CREATE TABLE grants (
	id         text        NOT NULL PRIMARY KEY,
	tenant     text        NOT NULL,
	scope      text        NOT NULL CHECK (scope IN ('session', 'vm')),
	object_id  text        NOT NULL,
	domains    jsonb       NOT NULL, -- array of host patterns
	tcp        jsonb       NOT NULL, -- array of name:port
	cidrs      jsonb       NOT NULL, -- array of prefixes
	note       text        NOT NULL,
	revision   bigint      NOT NULL,
	created_at timestamptz NOT NULL,
	expires_at timestamptz NOT NULL
);

CREATE INDEX grants_by_object ON grants (tenant, scope, object_id);
CREATE INDEX grants_by_expiry ON grants (expires_at);
`
