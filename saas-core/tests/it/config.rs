use saas_core::CoreError;
use saas_core::config::TenantConfigs;
use saas_core::tenant::Tier;
use saas_test_support::both_backends;
use serde_json::json;

both_backends! {
    async fn every_configuration_change_keeps_the_previous_version(t) {
        let ctx = t.tenant("cfg", Tier::Team).await;
        let configs = TenantConfigs::new(t.db.clone());
        assert_eq!(configs.current(&ctx).await.unwrap().version, 0);
        configs.put(&ctx, json!({"locale": "en"}), None).await.unwrap();
        configs.put(&ctx, json!({"locale": "pt-BR"}), Some(1)).await.unwrap();
        let current = configs.current(&ctx).await.unwrap();
        assert_eq!((current.version, current.config.clone()), (2, json!({"locale": "pt-BR"})));
        let history = configs.history(&ctx, 10).await.unwrap();
        assert_eq!(history.iter().map(|v| v.version).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(history[1].config, json!({"locale": "en"}));
        assert_eq!(history[0].changed_by, "user");
        assert_eq!(history[0].changed_by_user, ctx.principal().user_id());
    }

    async fn a_stale_expected_version_is_a_conflict_and_writes_nothing(t) {
        let ctx = t.tenant("cfg", Tier::Team).await;
        let configs = TenantConfigs::new(t.db.clone());
        configs.put(&ctx, json!({"a": 1}), None).await.unwrap();
        let err = configs.put(&ctx, json!({"a": 2}), Some(0)).await.unwrap_err();
        assert_eq!(err.code(), "config_version_conflict");
        assert_eq!(configs.current(&ctx).await.unwrap().config, json!({"a": 1}));
    }

    async fn configuration_must_be_a_bounded_json_object(t) {
        let ctx = t.tenant("cfg", Tier::Team).await;
        let configs = TenantConfigs::new(t.db.clone());
        let err = configs.put(&ctx, json!([1, 2]), None).await.unwrap_err();
        assert!(matches!(err, CoreError::Validation { field: "config", .. }));
        let big = json!({"blob": "x".repeat(70 * 1024)});
        let err = configs.put(&ctx, big, None).await.unwrap_err();
        assert!(matches!(err, CoreError::Validation { field: "config", .. }));
        assert!(configs.history(&ctx, 10).await.unwrap().is_empty());
    }
}
