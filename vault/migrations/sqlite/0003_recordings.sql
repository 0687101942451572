-- Recordings catalog (one row per gateway session) and the full-text index of their text.

CREATE TABLE recordings (
    id          TEXT PRIMARY KEY,     -- the session id; the file is <recordings dir>/<id>.pcast
    user_name   TEXT NOT NULL,
    target      TEXT NOT NULL,        -- ACCOUNT@RESOURCE
    protocol    TEXT NOT NULL,
    client      TEXT,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    path        TEXT NOT NULL,
    size        INTEGER,
    final_hash  TEXT,
    status      TEXT NOT NULL CHECK (status IN ('live', 'sealed', 'failed', 'truncated')),
    exit_info   TEXT,
    detail      TEXT,
    markers     TEXT,                 -- JSON array of {offset, kind, detail}, set when indexed
    indexed_at  TEXT
);
CREATE INDEX recordings_started ON recordings(started_at);
CREATE INDEX recordings_user ON recordings(user_name, started_at);
CREATE INDEX recordings_target ON recordings(target, started_at);

-- SQLite FTS5 (compiled into the bundled SQLite): one row per indexed line.
CREATE VIRTUAL TABLE recording_text USING fts5(
    text,
    recording_id UNINDEXED,
    kind UNINDEXED,
    offset_s UNINDEXED,
    tokenize = 'unicode61'
);
