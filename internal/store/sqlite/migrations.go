package sqlite

// migrations is the schema's history, oldest first. Append; never edit a released step.
func migrations() []migration {
	return []migration{
		{version: 1, name: "initial schema", up: execSQL(schemaV1)},
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
