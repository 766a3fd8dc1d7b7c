//! saas-audit's [`DataSubjectStore`]: export returns the events about or by a
//! person with their personal data readable; erasure destroys the person's key,
//! after which the events remain, verifiable, but anonymous.

use saas_core::TenantContext;
use saas_core::subject::{
    DataSubject, DataSubjectError, DataSubjectStore, ErasureReport, RecordCount, Retained,
    SubjectExport, SubjectRecords,
};

use crate::store::AuditLog;

const NAME: &str = "saas-audit";

#[async_trait::async_trait]
impl DataSubjectStore for AuditLog {
    fn name(&self) -> &str {
        NAME
    }

    async fn find(
        &self,
        ctx: &TenantContext,
        subject: &DataSubject,
    ) -> Result<SubjectRecords, DataSubjectError> {
        let Some(user) = subject.user_id else {
            return Ok(SubjectRecords {
                store: NAME.into(),
                records: Vec::new(),
            });
        };
        let events = self
            .subject_events(ctx, user.as_uuid())
            .await
            .map_err(|e| DataSubjectError::new(NAME, e))?;
        let records = if events.is_empty() {
            Vec::new()
        } else {
            vec![RecordCount {
                kind: "audit_event".into(),
                count: events.len() as u64,
            }]
        };
        Ok(SubjectRecords {
            store: NAME.into(),
            records,
        })
    }

    async fn export(
        &self,
        ctx: &TenantContext,
        subject: &DataSubject,
    ) -> Result<SubjectExport, DataSubjectError> {
        let events = match subject.user_id {
            Some(user) => self
                .subject_events(ctx, user.as_uuid())
                .await
                .map_err(|e| DataSubjectError::new(NAME, e))?,
            None => Vec::new(),
        };
        let data = serde_json::to_value(&events).map_err(|e| DataSubjectError::new(NAME, e))?;
        Ok(SubjectExport {
            store: NAME.into(),
            data: serde_json::json!({ "audit_events": data }),
        })
    }

    async fn erase(
        &self,
        ctx: &TenantContext,
        subject: &DataSubject,
    ) -> Result<ErasureReport, DataSubjectError> {
        let mut report = ErasureReport {
            store: NAME.into(),
            ..ErasureReport::default()
        };
        let Some(user) = subject.user_id else {
            return Ok(report);
        };
        let total = self
            .subject_events(ctx, user.as_uuid())
            .await
            .map_err(|e| DataSubjectError::new(NAME, e))?
            .len() as u64;
        let shredded = self
            .erase_subject(ctx, user.as_uuid())
            .await
            .map_err(|e| DataSubjectError::new(NAME, e))?;
        if shredded > 0 {
            report.anonymised.push(RecordCount {
                kind: "audit_event.personal_data".into(),
                count: shredded,
            });
        }
        if total > 0 {
            report.retained.push(Retained {
                kind: "audit_event".into(),
                count: total,
                reason: "the audit trail is kept for accountability; personal data in it was crypto-shredded and the actor id is a pseudonymous identifier".into(),
            });
        }
        Ok(report)
    }
}
