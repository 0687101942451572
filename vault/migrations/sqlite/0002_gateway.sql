-- Gateway support: users' SSH public keys, pinned target host keys, per-resource session policy.

CREATE TABLE user_keys (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    public_key  TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    comment     TEXT,
    created_at  TEXT NOT NULL,
    UNIQUE (user_id, fingerprint)
);
CREATE INDEX user_keys_fingerprint ON user_keys(fingerprint);

-- Trust on first use: the first host key a target presents is pinned per resource.
CREATE TABLE target_host_keys (
    resource_id TEXT NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
    algorithm   TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    first_seen  TEXT NOT NULL,
    PRIMARY KEY (resource_id, algorithm)
);

ALTER TABLE resources ADD COLUMN allow_port_forwarding INTEGER NOT NULL DEFAULT 0;
ALTER TABLE resources ADD COLUMN allow_agent_forwarding INTEGER NOT NULL DEFAULT 0;
