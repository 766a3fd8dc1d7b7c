use saas_core::operator::Operators;
use saas_test_support::both_backends;

both_backends! {
    async fn operator_tokens_verify_only_while_live_and_exact(t) {
        let ops = Operators::new(t.db.clone());
        assert!(!ops.any().await.unwrap());
        let (op, token) = ops.create(&t.platform(), "bootstrap").await.unwrap();
        assert!(ops.any().await.unwrap());
        assert_eq!(ops.authenticate(token.expose()).await.unwrap(), Some(op.id));
        let mut wrong = token.expose().to_string();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert_eq!(ops.authenticate(&wrong).await.unwrap(), None);
        assert_eq!(ops.authenticate("sop_garbage").await.unwrap(), None);
        assert_eq!(ops.authenticate("").await.unwrap(), None);
        assert!(!format!("{token:?}").contains(&token.expose()[10..]));
        // Only the hash is stored.
        let insp = t.inspector().await;
        let secret = token.expose().rsplit('_').next().unwrap().to_string();
        assert_eq!(insp.execute(&format!("UPDATE platform_operators SET name = name WHERE name = '{secret}'")).await, 0);
        ops.revoke(&t.platform(), op.id).await.unwrap();
        assert_eq!(ops.authenticate(token.expose()).await.unwrap(), None);
    }
}
