use saas_audit::{AuditQuery, PersonalData};
use saas_core::subject::{DataSubject, DataSubjectStore};
use saas_core::tenant::Tier;
use saas_test_support::both_backends;

use crate::{event, log, sets};

const IP: &str = "203.0.113.42";
const EMAIL: &str = "maria.silva@example.org";

both_backends! {
    migrations = sets();

    async fn erasure_destroys_personal_data_and_every_chain_still_verifies(t) {
        let ctx = t.tenant("acme", Tier::Team).await;
        let user = ctx.principal().user_id().unwrap();
        let log = log(&t);
        let pd = PersonalData { ip: Some(IP.into()), user_agent: Some("Firefox/140".into()), fields: [("email".to_string(), EMAIL.to_string())].into() };
        for i in 0..4 {
            log.record(&ctx, event(i).personal(None, pd.clone())).await.unwrap();
        }
        // Someone else's event with personal data, and one with none.
        let other = uuid::Uuid::now_v7();
        log.record(&ctx, event(9).personal(Some(other), PersonalData { ip: Some("198.51.100.5".into()), ..Default::default() })).await.unwrap();
        log.record(&ctx, event(10)).await.unwrap();
        log.checkpoint(&ctx).await.unwrap();

        let subject = DataSubject::user(user);
        assert_eq!(log.find(&ctx, &subject).await.unwrap().records[0].count, 6, "4 about the user, and the user acted in all 6");
        let export = DataSubjectStore::export(&log, &ctx, &subject).await.unwrap();
        let text = export.data.to_string();
        assert!(text.contains(IP) && text.contains(EMAIL), "the data-subject export shows their personal data");

        let report = log.erase(&ctx, &subject).await.unwrap();
        assert_eq!(report.anonymised[0].count, 4);
        assert!(!report.retained.is_empty());

        // The chain verifies, in the database and as an export.
        assert!(log.verify(&ctx, 1).await.unwrap().is_valid());
        let mut file = Vec::new();
        log.export(&ctx, 1, None, &mut file).await.unwrap();
        assert!(saas_audit::verify_export(&file[..], Some(log.signer())).unwrap().is_valid());

        // Nothing personal of theirs can be read: not through queries, not in an export, not in the raw tables.
        let page = log.query(&ctx, &AuditQuery::default()).await.unwrap();
        for r in &page.records {
            if r.event.subject_id == Some(user.as_uuid()) {
                assert!(r.personal_data.is_none() && r.personal_erased);
            }
        }
        let theirs = page.records.iter().find(|r| r.event.subject_id == Some(other)).unwrap();
        assert_eq!(theirs.personal_data.as_ref().unwrap().ip.as_deref(), Some("198.51.100.5"), "another subject is untouched");
        let audit_export = String::from_utf8(file).unwrap();
        let dsar_export = DataSubjectStore::export(&log, &ctx, &subject).await.unwrap().data.to_string();
        for haystack in [&audit_export, &dsar_export] {
            assert!(!haystack.contains(IP) && !haystack.contains(EMAIL) && !haystack.contains("Firefox"));
        }
        let insp = t.inspector().await;
        for table in ["audit_events", "audit_subject_keys"] {
            assert_eq!(insp.count_where(table, "subject_id", user.as_uuid()).await, if table == "audit_events" { 4 } else { 0 }, "{table}");
        }
        let dump = raw_dump(&t).await;
        assert!(!dump.contains(IP) && !dump.contains(EMAIL), "plaintext personal data in the tables");
    }
}

/// Every text and blob column of the audit tables as a superuser sees them.
async fn raw_dump(t: &saas_test_support::TestDb) -> String {
    use sqlx::Row;
    let sql = "SELECT actor_reason, action, target_id, details, personal FROM audit_events";
    let mut out = String::new();
    match t.inspector().await {
        saas_test_support::Inspector::Sqlite(p) => {
            for r in sqlx::query(sql).fetch_all(&p).await.unwrap() {
                out.push_str(&format!(
                    "{:?}{:?}{:?}{:?}",
                    r.get::<Option<String>, _>(0),
                    r.get::<String, _>(1),
                    r.get::<Option<String>, _>(3),
                    String::from_utf8_lossy(&r.get::<Option<Vec<u8>>, _>(4).unwrap_or_default())
                ));
            }
        }
        saas_test_support::Inspector::Postgres(p) => {
            for r in sqlx::query(sql).fetch_all(&p).await.unwrap() {
                out.push_str(&format!(
                    "{:?}{:?}{:?}{:?}",
                    r.get::<Option<String>, _>(0),
                    r.get::<String, _>(1),
                    r.get::<Option<String>, _>(3),
                    String::from_utf8_lossy(&r.get::<Option<Vec<u8>>, _>(4).unwrap_or_default())
                ));
            }
        }
    }
    out
}
