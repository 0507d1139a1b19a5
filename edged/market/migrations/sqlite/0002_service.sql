-- Wasm blobs move out of the bundles table (listing and showing never read them); group membership kept by the
-- marketplace; rollouts executed by `serve` with per-device state; one active rollout per target.
CREATE TABLE blobs (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, data BLOB NOT NULL);
INSERT OR IGNORE INTO blobs SELECT wasm_sha256, length(wasm), wasm FROM bundles;
ALTER TABLE bundles ADD COLUMN wasm_size INTEGER NOT NULL DEFAULT 0;
UPDATE bundles SET wasm_size = length(wasm);
ALTER TABLE bundles DROP COLUMN wasm;
CREATE TABLE group_members (grp TEXT NOT NULL, device TEXT NOT NULL, PRIMARY KEY (grp, device));
CREATE INDEX group_members_device ON group_members (device);
ALTER TABLE rollouts ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
ALTER TABLE rollouts ADD COLUMN updated_at REAL NOT NULL DEFAULT 0;
ALTER TABLE rollouts ADD COLUMN owner TEXT;
ALTER TABLE rollouts ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
-- rollouts of the old CLI were run by its own process; one that was killed stays as it was left
UPDATE rollouts SET state = 'interrupted' WHERE state = 'started';
CREATE UNIQUE INDEX one_active_rollout ON rollouts (target) WHERE state IN ('running', 'paused', 'aborting');
CREATE TABLE rollout_devices (
    rollout INTEGER NOT NULL, device TEXT NOT NULL, stage INTEGER NOT NULL, state TEXT NOT NULL,
    reason TEXT, percent REAL NOT NULL DEFAULT 0, seq INTEGER, source TEXT,
    started_at REAL, finished_at REAL, PRIMARY KEY (rollout, device)
);
CREATE TABLE chunk_grants (
    device TEXT NOT NULL, wasm_sha256 TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (device, wasm_sha256)
);
