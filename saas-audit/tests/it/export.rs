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

    async fn a_long_export_is_verified_in_batches_as_one_chain_and_its_checkpoint_is_checked_first(t) {
        // More events than one batch of lines (16,384), so links, gaps and the
        // checkpoint are checked across batch boundaries.
        const EVENTS: usize = 20_000;
        let ctx = t.tenant("acme", Tier::Team).await;
        let log = log(&t);
        let mut tx = t.db.begin(&ctx).await.unwrap();
        log.append_batch(&mut tx, &ctx, (0..EVENTS).map(event).collect()).await.unwrap();
        tx.commit().await.unwrap();
        log.checkpoint(&ctx).await.unwrap().unwrap();
        let mut file = Vec::new();
        log.export(&ctx, 1, None, &mut file).await.unwrap();
        let report = verify_export(&file[..], Some(log.signer())).unwrap();
        assert!(report.is_valid(), "{report:?}");
        assert_eq!((report.checked, report.last_seq, report.checkpoint_seq), (EVENTS as u64, Some(20_000), Some(20_000)));

        let text = String::from_utf8(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let with = |i: usize, line: String| -> String {
            lines.iter().enumerate().map(|(n, l)| if n == i { format!("{line}\n") } else { format!("{l}\n") }).collect()
        };
        // An edit in the second batch (event 18,000 is on line 18,001).
        let edited = with(18_000, lines[18_000].replacen("\"w17999\"", "\"w0\"", 1));
        let r = verify_export(edited.as_bytes(), None).unwrap();
        assert_eq!((r.problem, r.checked), (Some(ChainProblem::HashMismatch { seq: 18_000 }), 17_999));
        // An event dropped right at the batch boundary.
        let dropped: String = lines.iter().enumerate().filter(|(n, _)| *n != 16_384).map(|(_, l)| format!("{l}\n")).collect();
        assert_eq!(verify_export(dropped.as_bytes(), None).unwrap().problem, Some(ChainProblem::Gap { expected: 16_384, found: 16_385 }));
        // A checkpoint vouching for another hash than the chain's head: it
        // comes last in the file, yet is reported before a later problem.
        let mut checkpoint: serde_json::Value = serde_json::from_str(lines[EVENTS + 1]).unwrap();
        let other_hash = serde_json::from_str::<serde_json::Value>(lines[1]).unwrap()["hash"].clone();
        checkpoint["checkpoint"]["hash"] = other_hash;
        let forged = with(EVENTS + 1, checkpoint.to_string());
        assert_eq!(verify_export(forged.as_bytes(), None).unwrap().problem, Some(ChainProblem::CheckpointMismatch { seq: 20_000 }));
        let mut early = checkpoint.clone();
        early["checkpoint"]["seq"] = serde_json::json!(100);
        let both: String = with(EVENTS + 1, early.to_string()).replacen("\"w17999\"", "\"w0\"", 1);
        let r = verify_export(both.as_bytes(), None).unwrap();
        assert_eq!((r.problem, r.checked, r.last_seq), (Some(ChainProblem::CheckpointMismatch { seq: 100 }), 99, Some(99)));
    }
}
