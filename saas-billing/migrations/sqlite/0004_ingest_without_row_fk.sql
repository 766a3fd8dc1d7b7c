-- saas-billing 0004: on PostgreSQL, ingestion stops checking the tenant
-- foreign key per event (a per-batch lock and a purge trigger replace it).
-- SQLite's foreign key check is an in-process lookup and stays as it is.
SELECT 1;
