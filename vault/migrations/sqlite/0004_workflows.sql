-- Vault workflows: shares, access-request policies and requests, custom roles,
-- password policies and remote-reset state.

-- A share gives one user or one user group a level on one account, resource or
-- resource group. The effective level is the highest of the direct and group shares.
CREATE TABLE shares (
    id                TEXT PRIMARY KEY,
    user_id           TEXT REFERENCES users(id) ON DELETE CASCADE,
    group_id          TEXT REFERENCES user_groups(id) ON DELETE CASCADE,
    account_id        TEXT REFERENCES accounts(id) ON DELETE CASCADE,
    resource_id       TEXT REFERENCES resources(id) ON DELETE CASCADE,
    resource_group_id TEXT REFERENCES resource_groups(id) ON DELETE CASCADE,
    level             TEXT NOT NULL CHECK (level IN ('connect', 'view', 'modify', 'full')),
    granted_by        TEXT,
    created_at        TEXT NOT NULL,
    CHECK ((user_id IS NULL) <> (group_id IS NULL)),
    CHECK ((account_id IS NOT NULL) + (resource_id IS NOT NULL) + (resource_group_id IS NOT NULL) = 1)
);
CREATE INDEX shares_user ON shares(user_id);
CREATE INDEX shares_group ON shares(group_id);
CREATE INDEX shares_account ON shares(account_id);
CREATE INDEX shares_resource ON shares(resource_id);
CREATE UNIQUE INDEX shares_unique ON shares(
    COALESCE(user_id, ''), COALESCE(group_id, ''), COALESCE(account_id, ''), COALESCE(resource_id, ''),
    COALESCE(resource_group_id, ''));

-- Access control of a resource's accounts (PMP 7.3): sessions and retrievals need an
-- approved, checked-out request.
CREATE TABLE access_policies (
    resource_id            TEXT PRIMARY KEY REFERENCES resources(id) ON DELETE CASCADE,
    require_request        INTEGER NOT NULL DEFAULT 1,
    dual_approval          INTEGER NOT NULL DEFAULT 0,
    exclusive              INTEGER NOT NULL DEFAULT 0,
    -- 'refuse' or 'queue' when exclusive and the account is checked out by someone else.
    exclusive_mode         TEXT NOT NULL DEFAULT 'refuse' CHECK (exclusive_mode IN ('refuse', 'queue')),
    max_window_minutes     INTEGER NOT NULL DEFAULT 480,
    reset_on_checkin       INTEGER NOT NULL DEFAULT 1,
    updated_at             TEXT NOT NULL
);

CREATE TABLE access_requests (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    requester_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    reason          TEXT NOT NULL,
    ticket_id       TEXT,
    window_minutes  INTEGER NOT NULL,
    -- requested | approved | denied | queued | checked_out | checked_in
    state           TEXT NOT NULL,
    approvals       TEXT NOT NULL DEFAULT '[]',
    needed          INTEGER NOT NULL DEFAULT 1,
    denied_by       TEXT,
    checked_out_at  TEXT,
    window_end      TEXT,
    checked_in_at   TEXT,
    checked_in_by   TEXT,
    reset_outcome   TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX access_requests_account ON access_requests(account_id, state);
CREATE INDEX access_requests_requester ON access_requests(requester_id);

-- Custom roles from the operation catalogue; a role (or an edit) takes effect only once
-- another administrator approves it.
CREATE TABLE custom_roles (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    description    TEXT,
    -- approved operations (JSON array of operation ids), NULL until first approval
    operations     TEXT,
    -- proposed operations waiting for approval, NULL when nothing is pending
    pending        TEXT,
    pending_author TEXT,
    approved_by    TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
ALTER TABLE users ADD COLUMN custom_role_id TEXT REFERENCES custom_roles(id);

-- Password policies (PMP 8.x): attached to resource groups and accounts.
CREATE TABLE password_policies (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    min_length      INTEGER NOT NULL,
    max_length      INTEGER NOT NULL,
    lowercase       INTEGER NOT NULL DEFAULT 1,
    uppercase       INTEGER NOT NULL DEFAULT 1,
    digits          INTEGER NOT NULL DEFAULT 1,
    special         INTEGER NOT NULL DEFAULT 1,
    forbidden_chars TEXT NOT NULL DEFAULT '',
    max_age_days    INTEGER,
    created_at      TEXT NOT NULL
);
ALTER TABLE resource_groups ADD COLUMN password_policy_id TEXT REFERENCES password_policies(id);
ALTER TABLE accounts ADD COLUMN password_policy_id TEXT REFERENCES password_policies(id);
-- Last remote reset: NULL (never), 'ok' or 'failed'; the error text is safe to show.
ALTER TABLE accounts ADD COLUMN reset_status TEXT;
ALTER TABLE accounts ADD COLUMN reset_error TEXT;
ALTER TABLE accounts ADD COLUMN reset_at TEXT;
