use saas_core::CoreError;
use saas_core::db::{self, Migration, MigrationSet, applied_migrations};
use saas_test_support::both_backends;

const V1: Migration = Migration {
    version: 1,
    name: "widgets",
    postgres: "CREATE TABLE widgets (id integer PRIMARY KEY);",
    sqlite: "CREATE TABLE widgets (id INTEGER PRIMARY KEY);",
};
const V1_EDITED: Migration = Migration {
    version: 1,
    name: "widgets",
    postgres: "CREATE TABLE widgets (id bigint PRIMARY KEY);",
    sqlite: "CREATE TABLE widgets (id TEXT PRIMARY KEY);",
};
const V2: Migration = Migration {
    version: 2,
    name: "gadgets",
    postgres: "CREATE TABLE gadgets (id integer PRIMARY KEY);",
    sqlite: "CREATE TABLE gadgets (id INTEGER PRIMARY KEY);",
};
const BROKEN: Migration = Migration {
    version: 3,
    name: "broken",
    postgres: "CREATE TABLE half_done (id integer); SELECT no_such_function();",
    sqlite: "CREATE TABLE half_done (id INTEGER); INSERT INTO no_such_table VALUES (1);",
};

both_backends! {
    async fn migrations_apply_from_an_empty_database_and_rerun_as_a_no_op(t) {
        let applied = applied_migrations(&t.db).await.unwrap();
        assert!(applied.contains(&("saas-core".to_string(), 1)));
        db::migrate(&t.db, &[saas_core::migrations()]).await.unwrap();
        assert_eq!(applied_migrations(&t.db).await.unwrap(), applied);
        let tables = t.inspector().await.all_tables().await;
        for table in ["tenants", "workspaces", "tenant_config_versions", "jobs", "dead_jobs", "platform_operators", "saas_migrations"] {
            assert!(tables.contains(&table.to_string()), "{table} missing from {tables:?}");
        }
    }

    async fn a_migration_edited_after_it_was_applied_is_refused(t) {
        db::migrate(&t.db, &[MigrationSet { component: "widgets", migrations: &[V1] }]).await.unwrap();
        let err = db::migrate(&t.db, &[MigrationSet { component: "widgets", migrations: &[V1_EDITED] }])
            .await
            .unwrap_err();
        assert!(matches!(err, CoreError::Migration(ref m) if m.contains("changed after it was applied")), "{err}");
    }

    async fn a_database_newer_than_the_binary_is_refused(t) {
        db::migrate(&t.db, &[MigrationSet { component: "widgets", migrations: &[V1, V2] }]).await.unwrap();
        let err = db::migrate(&t.db, &[MigrationSet { component: "widgets", migrations: &[V1] }])
            .await
            .unwrap_err();
        assert!(matches!(err, CoreError::Migration(ref m) if m.contains("unknown to this binary")), "{err}");
    }

    async fn a_failing_migration_leaves_nothing_behind(t) {
        let err = db::migrate(&t.db, &[MigrationSet { component: "widgets", migrations: &[V1, V2, BROKEN] }])
            .await
            .unwrap_err();
        assert!(matches!(err, CoreError::Migration(_)), "{err}");
        let tables = t.inspector().await.all_tables().await;
        assert!(tables.contains(&"gadgets".to_string()));
        assert!(!tables.contains(&"half_done".to_string()), "partial migration left a table");
        let applied = applied_migrations(&t.db).await.unwrap();
        assert!(!applied.contains(&("widgets".to_string(), 3)));
    }
}
