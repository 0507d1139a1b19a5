-- The catalog's first schema (the same tables as SQLite's 0001).
CREATE TABLE bundles (
    name TEXT NOT NULL, version TEXT NOT NULL, wasm_sha256 TEXT NOT NULL,
    meta TEXT NOT NULL, manifest TEXT NOT NULL, wasm BYTEA NOT NULL, created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE desired (target TEXT PRIMARY KEY, plugins TEXT NOT NULL, seq BIGINT NOT NULL);
CREATE TABLE playlists (target TEXT PRIMARY KEY, items TEXT NOT NULL);
CREATE TABLE devices (
    id TEXT PRIMARY KEY, groups TEXT NOT NULL DEFAULT '[]', presence TEXT NOT NULL DEFAULT 'unknown',
    last_seen DOUBLE PRECISION, reported TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE plugin_status (device TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL, PRIMARY KEY (device, name));
CREATE TABLE rollouts (
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, target TEXT NOT NULL,
    canary DOUBLE PRECISION NOT NULL, halt DOUBLE PRECISION NOT NULL, state TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, detail TEXT NOT NULL DEFAULT '{}'
);
