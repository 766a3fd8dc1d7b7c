use std::sync::{Arc, Mutex};

use saas_audit::{
    AuditError, AuditForwarder, AuditRecord, AuditSink, FanOut, JsonLinesSink, PersonalData,
};
use saas_test_support::both_backends;

use crate::{event, log, sets};

/// Records what it receives; fails once on the delivery of `fail_at`.
#[derive(Debug, Default)]
struct Flaky {
    seen: Mutex<Vec<i64>>,
    fail_at: Mutex<Option<i64>>,
}

#[async_trait::async_trait]
impl AuditSink for Flaky {
    async fn deliver(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let mut fail = self.fail_at.lock().unwrap();
        if *fail == Some(record.event.seq) {
            *fail = None;
            return Err(AuditError::Invalid("sink down".into()));
        }
        self.seen.lock().unwrap().push(record.event.seq);
        Ok(())
    }
}

both_backends! {
    migrations = sets();

    async fn sinks_are_fed_from_the_stored_log_and_a_failing_sink_loses_nothing(t) {
        let (a, b) = t.two_tenants().await;
        let log = log(&t);
        for i in 0..1200 {
            log.record(&a, event(i).personal(None, PersonalData { ip: Some("203.0.113.5".into()), ..Default::default() })).await.map(|_| ()).unwrap_or_else(|e| panic!("{e}"));
            if i % 100 == 0 {
                log.record(&b, event(i)).await.unwrap();
            }
        }
        let flaky = Arc::new(Flaky { fail_at: Mutex::new(Some(700)), ..Default::default() });
        let file = std::env::temp_dir().join(format!("audit-{}.jsonl", uuid::Uuid::now_v7()));
        let fan = FanOut(vec![flaky.clone(), Arc::new(JsonLinesSink::new(&file))]);
        let fwd = AuditForwarder::new(log.clone(), "siem", Arc::new(fan));
        // The sink fails at 700: the first batch (1..=500) is kept, the second retried.
        assert!(fwd.forward(&a).await.is_err());
        let delivered = fwd.forward(&a).await.unwrap();
        assert_eq!(delivered, 700, "501..=1200 after the failure");
        assert_eq!(fwd.forward(&a).await.unwrap(), 0, "nothing new");
        let seen = flaky.seen.lock().unwrap().clone();
        let unique: std::collections::BTreeSet<i64> = seen.iter().copied().collect();
        assert!(unique.len() == 1200 && unique.first() == Some(&1) && unique.last() == Some(&1200), "every event delivered");
        // Redelivery only repeats the failed batch from its start (501..=699), then goes on in order.
        assert_eq!(seen.len(), 1200 + 199);
        assert!(seen.windows(2).all(|w| w[1] == w[0] + 1 || (w[0] == 699 && w[1] == 501)), "delivered in chain order");
        // Tenant B's chain is fed separately and never mixed in.
        assert_eq!(fwd.forward(&b).await.unwrap(), 12);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.lines().count() >= 1212);
        assert!(!text.contains("203.0.113.5"), "sinks never receive personal data");
        std::fs::remove_file(file).unwrap();
    }
}
