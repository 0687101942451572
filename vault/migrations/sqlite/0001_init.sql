-- Postern vault schema, SQLite flavour. Portable SQL: TEXT ids (UUIDs), RFC 3339
-- UTC timestamps as TEXT, INTEGER booleans, BLOB ciphertexts. The PostgreSQL
-- backend uses the same statements with BYTEA for BLOB and BIGSERIAL for the
-- audit sequence (a second migrations folder).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id                   TEXT PRIMARY KEY,
    username             TEXT NOT NULL UNIQUE,
    email                TEXT,
    role                 TEXT NOT NULL,
    super_admin          INTEGER NOT NULL DEFAULT 0,
    password_hash        TEXT,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    totp_enabled         INTEGER NOT NULL DEFAULT 0,
    totp_last_step       INTEGER,
    enabled              INTEGER NOT NULL DEFAULT 1,
    failed_logins        INTEGER NOT NULL DEFAULT 0,
    locked_until         TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);

CREATE TABLE user_groups (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    created_at  TEXT NOT NULL
);

CREATE TABLE user_group_members (
    group_id TEXT NOT NULL REFERENCES user_groups(id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE resources (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    resource_type TEXT NOT NULL,
    host          TEXT NOT NULL,
    port          INTEGER NOT NULL,
    description   TEXT,
    landing_chain TEXT NOT NULL DEFAULT '[]',
    extra         TEXT NOT NULL DEFAULT '{}',
    owner_id      TEXT REFERENCES users(id),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE accounts (
    id                  TEXT PRIMARY KEY,
    resource_id         TEXT NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
    login               TEXT NOT NULL,
    notes               TEXT,
    owner_id            TEXT REFERENCES users(id),
    password_changed_at TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    UNIQUE (resource_id, login)
);

-- Every sealed secret: account passwords and keys, users' TOTP secrets.
-- `owner` names the row it belongs to and is the AEAD associated data.
CREATE TABLE sealed (
    owner       TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    wrapped_dek BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX sealed_key_id ON sealed(key_id);

CREATE TABLE resource_groups (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    owner_id    TEXT REFERENCES users(id),
    created_at  TEXT NOT NULL
);

CREATE TABLE resource_group_members (
    group_id    TEXT NOT NULL REFERENCES resource_groups(id) ON DELETE CASCADE,
    resource_id TEXT NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, resource_id)
);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash   TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);

CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    actor_id    TEXT,
    actor_name  TEXT NOT NULL,
    action      TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id   TEXT,
    object_name TEXT,
    client_ip   TEXT,
    reason      TEXT,
    outcome     TEXT NOT NULL,
    detail      TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_events_at ON audit_events(at);
CREATE INDEX audit_events_actor ON audit_events(actor_name);
