-- saas-core 0002: workspace tags, a sorted JSON array of short labels that
-- tenant Cedar policies test as `resource.tags` (e.g. "eu"). Stored as text
-- so both backends read and write it through one code path.

ALTER TABLE workspaces ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
