-- The catalog as it was before migrations existed (IF NOT EXISTS: an older catalog.db adopts it as is).
CREATE TABLE IF NOT EXISTS bundles (
    name TEXT NOT NULL, version TEXT NOT NULL, wasm_sha256 TEXT NOT NULL,
    meta TEXT NOT NULL, manifest TEXT NOT NULL, wasm BLOB NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS desired (
    target TEXT PRIMARY KEY, plugins TEXT NOT NULL, seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS playlists (
    target TEXT PRIMARY KEY, items TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, groups TEXT NOT NULL DEFAULT '[]', presence TEXT NOT NULL DEFAULT 'unknown',
    last_seen REAL, reported TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS plugin_status (
    device TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL, PRIMARY KEY (device, name)
);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, version TEXT NOT NULL, target TEXT NOT NULL,
    canary REAL NOT NULL, halt REAL NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
