use saas_core::config::TenantConfigs;
use saas_core::subject::{CoreSubjectStore, DataSubject, DataSubjectStore};
use saas_test_support::both_backends;

use crate::populate;

both_backends! {
    async fn an_erased_user_leaves_no_reference_while_org_data_stays(t) {
        let (a, _b) = t.two_tenants().await;
        let ws = populate(&t.db, &a).await;
        let user = a.principal().user_id().unwrap();
        let store = CoreSubjectStore::new(t.db.clone());
        let subject = DataSubject::user(user);
        let found = store.find(&a, &subject).await.unwrap();
        assert_eq!(found.records.iter().map(|r| r.count).sum::<u64>(), 4);
        let export = store.export(&a, &subject).await.unwrap();
        assert_eq!(export.data["workspaces_created"].as_array().unwrap().len(), 2);
        assert_eq!(export.data["configuration_versions_saved"].as_array().unwrap().len(), 2);
        let report = store.erase(&a, &subject).await.unwrap();
        assert_eq!(report.anonymised.iter().map(|r| r.count).sum::<u64>(), 4);
        assert!(store.find(&a, &subject).await.unwrap().records.is_empty());

        let insp = t.inspector().await;
        let user_tenant = user.as_uuid();
        assert_eq!(insp.count_where("workspaces", "created_by_user", user_tenant).await, 0);
        assert_eq!(insp.count_where("tenant_config_versions", "changed_by_user", user_tenant).await, 0);
        // The organization's data is intact.
        assert_eq!(insp.count_where("workspaces", "tenant_id", a.tenant().as_uuid()).await, ws.len() as i64);
        assert_eq!(TenantConfigs::new(t.db.clone()).history(&a, 10).await.unwrap().len(), 2);
    }
}
