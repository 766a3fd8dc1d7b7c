use saas_audit::{ChainProblem, CheckpointSigner, verify_export};
use saas_core::tenant::Tier;
use saas_test_support::both_backends;

use crate::{event, log, sets};

both_backends! {
    migrations = sets();

    async fn an_export_verifies_offline_and_any_edit_to_it_is_caught(t) {
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        for i in 0..10 {
            log.record(&ctx, event(i)).await.unwrap();
        }
        log.checkpoint(&ctx).await.unwrap().unwrap();
        let mut file = Vec::new();
        let summary = log.export(&ctx, 1, None, &mut file).await.unwrap();
        assert_eq!((summary.events, summary.checkpoint_seq), (10, Some(10)));
        let report = verify_export(&file[..], Some(log.signer())).unwrap();
        assert!(report.is_valid() && report.checked == 10, "{report:?}");

        let text = String::from_utf8(file.clone()).unwrap();
        // An edited event.
        let edited = text.replacen("\"w4\"", "\"w44\"", 1);
        assert_eq!(verify_export(edited.as_bytes(), Some(log.signer())).unwrap().problem, Some(ChainProblem::HashMismatch { seq: 5 }));
        // A dropped event.
        let lines: Vec<&str> = text.lines().collect();
        let dropped: String = lines.iter().enumerate().filter(|(i, _)| *i != 3).map(|(_, l)| format!("{l}\n")).collect();
        assert!(matches!(verify_export(dropped.as_bytes(), Some(log.signer())).unwrap().problem, Some(ChainProblem::Gap { .. })));
        // A truncated tail (checkpoint kept).
        let truncated: String = lines.iter().enumerate().filter(|(i, _)| !(8..=10).contains(i)).map(|(_, l)| format!("{l}\n")).collect();
        assert!(matches!(verify_export(truncated.as_bytes(), Some(log.signer())).unwrap().problem, Some(ChainProblem::MissingTail { .. })));
        // The wrong key.
        let other = CheckpointSigner::new("test-key", &[9u8; 32]).unwrap();
        assert_eq!(verify_export(&file[..], Some(&other)).unwrap().problem, Some(ChainProblem::BadCheckpointSignature { seq: 10 }));
        // A range verifies from its anchor.
        let mut part = Vec::new();
        log.export(&ctx, 4, Some(7), &mut part).await.unwrap();
        let r = verify_export(&part[..], Some(log.signer())).unwrap();
        assert!(r.is_valid() && r.checked == 4, "{r:?}");
        // Garbage is an error, not a panic.
        assert!(verify_export(&b"not json\n"[..], None).is_err());
        assert!(verify_export(&b""[..], None).is_err());
    }
}
