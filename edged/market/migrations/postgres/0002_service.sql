-- Wasm blobs move out of the bundles table (listing and showing never read them; EXTERNAL storage keeps them
-- uncompressed so a chunk is read with substring() without loading the whole blob); group membership kept by the
-- marketplace; rollouts executed by `serve` with per-device state; one active rollout per target.
CREATE TABLE blobs (sha256 TEXT PRIMARY KEY, size BIGINT NOT NULL, data BYTEA NOT NULL);
ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL;
INSERT INTO blobs SELECT wasm_sha256, length(wasm), wasm FROM bundles ON CONFLICT DO NOTHING;
ALTER TABLE bundles ADD COLUMN wasm_size BIGINT NOT NULL DEFAULT 0;
UPDATE bundles SET wasm_size = length(wasm);
ALTER TABLE bundles DROP COLUMN wasm;
CREATE TABLE group_members (grp TEXT NOT NULL, device TEXT NOT NULL, PRIMARY KEY (grp, device));
CREATE INDEX group_members_device ON group_members (device);
ALTER TABLE rollouts ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
ALTER TABLE rollouts ADD COLUMN updated_at DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE rollouts ADD COLUMN owner TEXT;
ALTER TABLE rollouts ADD COLUMN lease_until DOUBLE PRECISION NOT NULL DEFAULT 0;
UPDATE rollouts SET state = 'interrupted' WHERE state = 'started';
CREATE UNIQUE INDEX one_active_rollout ON rollouts (target) WHERE state IN ('running', 'paused', 'aborting');
CREATE TABLE rollout_devices (
    rollout BIGINT NOT NULL, device TEXT NOT NULL, stage INTEGER NOT NULL, state TEXT NOT NULL,
    reason TEXT, percent DOUBLE PRECISION NOT NULL DEFAULT 0, seq BIGINT, source TEXT,
    started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION, PRIMARY KEY (rollout, device)
);
CREATE TABLE chunk_grants (
    device TEXT NOT NULL, wasm_sha256 TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, wasm_sha256)
);
