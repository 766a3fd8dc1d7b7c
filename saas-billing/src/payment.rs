//! Payments behind a trait: what billing asks of a payment provider
//! ([`PaymentProvider`]: collect, refund, verify a webhook), the outcomes it
//! gets back as data ([`PaymentOutcome`]), and the webhook signature scheme
//! ([`sign_webhook`], [`verify_signature`]) that providers and tests share.
//!
//! Two providers ship here: [`ManualProvider`], the default, which asks the
//! customer to pay by bank transfer and leaves the rest to an operator, and
//! [`SimulatedCardProvider`], a scriptable card processor for tests and demos
//! that signs its webhooks like a real one. Adapters for real processors live
//! outside this crate (see `docs/stripe-adapter.md`). This module does no I/O
//! and keeps no clock: callers pass `now`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use hmac::digest::Key;
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::error::BillingError;
use crate::money::Money;

/// The header that carries a webhook's signature, lower-cased:
/// `t=<unix seconds>,v1=<hex hmac-sha256>`.
pub const SIGNATURE_HEADER: &str = "x-saas-signature";

/// How far a webhook's signed timestamp may be from `now`, either way, before
/// it is refused as a replay (or as coming from a badly skewed clock).
pub const WEBHOOK_TOLERANCE: Duration = Duration::minutes(5);

/// The longest idempotency key a request may carry, in bytes (the limit the
/// common card processors apply).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Bytes of a secret made by [`WebhookSecret::generate`].
const GENERATED_SECRET_LEN: usize = 32;
/// The shortest secret accepted: 128 bits.
const MIN_SECRET_LEN: usize = 16;
/// The longest secret accepted: one SHA-256 block, so the key is used as is.
const MAX_SECRET_LEN: usize = 64;
/// A signature header longer than this is refused before it is parsed.
const MAX_SIGNATURE_HEADER_LEN: usize = 1024;
/// At most this many `v1=` entries are checked (rotation needs two).
const MAX_SIGNATURES: usize = 8;
/// Bytes of an HMAC-SHA256 tag.
const MAC_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

// ---------------------------------------------------------------------------
// Requests and outcomes
// ---------------------------------------------------------------------------

/// A request to collect the amount due on one invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    /// The tenant being charged.
    pub tenant_id: Uuid,
    /// The invoice being paid.
    pub invoice_id: Uuid,
    /// The invoice's human-readable number, e.g. `INV-2025-0042`, which bank
    /// transfers quote and statements show.
    pub invoice_number: String,
    /// The amount to collect; positive.
    pub amount: Money,
    /// The provider must not charge twice for one key: a retry with the same
    /// key returns the first attempt's outcome. Billing derives it from the
    /// invoice and the attempt, never at random per call.
    pub idempotency_key: String,
    /// What the customer's statement or receipt should say.
    pub description: String,
}

impl PaymentRequest {
    /// Checks what every provider relies on: a positive amount, a non-empty
    /// idempotency key of at most [`MAX_IDEMPOTENCY_KEY_LEN`] bytes, and an
    /// invoice number.
    ///
    /// # Errors
    ///
    /// [`BillingError::Validation`] naming the first offending field.
    pub fn validate(&self) -> Result<(), BillingError> {
        if self.amount.amount <= 0 {
            return Err(BillingError::validation("amount", "must be positive"));
        }
        validate_idempotency_key(&self.idempotency_key)?;
        if self.invoice_number.trim().is_empty() {
            return Err(BillingError::validation(
                "invoice_number",
                "must not be empty",
            ));
        }
        Ok(())
    }
}

fn validate_idempotency_key(key: &str) -> Result<(), BillingError> {
    if key.trim().is_empty() {
        return Err(BillingError::validation(
            "idempotency_key",
            "must not be empty",
        ));
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(BillingError::validation(
            "idempotency_key",
            format!("must be at most {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
        ));
    }
    Ok(())
}

/// What became of a payment or refund that the provider accepted to process.
///
/// A declined card is an outcome ([`PaymentOutcome::Failed`]), not an error:
/// billing records it and starts dunning. Serialises tagged by `status`:
/// `{"status": "failed", "code": "card_declined", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PaymentOutcome {
    /// The money moved.
    Succeeded {
        /// The provider's reference for the charge or refund.
        reference: String,
    },
    /// The money has not moved yet: a manual bank transfer awaiting an
    /// operator, or a payment awaiting the provider's webhook.
    Pending {
        /// The provider's reference, if it assigned one yet.
        reference: Option<String>,
        /// What the customer (or the operator) has to do.
        instructions: String,
    },
    /// The provider refused this payment, e.g. the card was declined.
    Failed {
        /// A stable code such as `card_declined`, `insufficient_funds` or
        /// `expired_card`.
        code: String,
        /// A message fit to show the customer.
        message: String,
        /// Whether trying again later (dunning) may succeed; `false` for a
        /// card that is expired, lost or stolen.
        retryable: bool,
    },
}

impl PaymentOutcome {
    /// The provider's reference, if there is one.
    #[must_use]
    pub fn reference(&self) -> Option<&str> {
        match self {
            Self::Succeeded { reference } => Some(reference),
            Self::Pending { reference, .. } => reference.as_deref(),
            Self::Failed { .. } => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------

/// The headers of an incoming webhook: lower-cased names to values, so this
/// module needs no HTTP crate. The server copies the request's headers in.
///
/// ```
/// use saas_billing::payment::WebhookHeaders;
/// let mut headers = WebhookHeaders::new();
/// headers.insert("X-Saas-Signature", "t=1,v1=00");
/// assert_eq!(headers.get("x-saas-signature"), Some("t=1,v1=00"));
/// assert_eq!(headers.get("X-SAAS-SIGNATURE"), Some("t=1,v1=00"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookHeaders {
    values: BTreeMap<String, String>,
}

impl WebhookHeaders {
    /// No headers.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets header `name` (matched case-insensitively) to `value`, returning
    /// the value it replaces.
    pub fn insert(&mut self, name: &str, value: impl Into<String>) -> Option<String> {
        self.values.insert(name.to_ascii_lowercase(), value.into())
    }

    /// The value of header `name`, matched case-insensitively.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// Every header, as (lower-cased name, value), sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for WebhookHeaders {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut headers = Self::new();
        for (name, value) in iter {
            headers.insert(name.as_ref(), value);
        }
        headers
    }
}

/// What a provider's webhook reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    /// A payment completed (e.g. a pending payment cleared).
    PaymentSucceeded,
    /// A payment failed after it was accepted.
    PaymentFailed,
    /// A refund completed.
    RefundSucceeded,
}

/// A verified webhook from a payment provider, in billing's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// The provider's event id: the server processes each id once, so
    /// providers deliver at least once and adapters need not deduplicate.
    pub id: String,
    /// What happened.
    pub kind: WebhookKind,
    /// The tenant the payment belongs to (carried in the provider's metadata).
    pub tenant_id: Uuid,
    /// The invoice the payment belongs to (carried in the provider's metadata).
    pub invoice_id: Uuid,
    /// The amount paid, failed or refunded.
    pub amount: Money,
    /// The provider's reference for the charge or refund.
    pub reference: String,
    /// For [`WebhookKind::PaymentFailed`], the provider's failure code.
    pub failure_code: Option<String>,
    /// When it happened, by the provider's clock.
    pub occurred_at: DateTime<Utc>,
}

/// The secret shared with a provider's webhook endpoint, 16 to 64 bytes.
///
/// Its `Debug` output is redacted; [`WebhookSecret::to_hex`] is the only way
/// out, for storing it in a secrets store.
///
/// ```
/// use saas_billing::payment::WebhookSecret;
/// let secret = WebhookSecret::generate();
/// assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
/// let again = WebhookSecret::from_hex(&secret.to_hex()).unwrap();
/// assert_eq!(again.to_hex(), secret.to_hex());
/// ```
#[derive(Clone)]
pub struct WebhookSecret {
    bytes: Vec<u8>,
}

impl WebhookSecret {
    /// A new secret of 32 bytes from the operating system's random number
    /// generator.
    ///
    /// # Panics
    ///
    /// Only if the operating system cannot supply random bytes at all, as
    /// every generator in `rand` does: no secret is better than a weak one.
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = vec![0_u8; GENERATED_SECRET_LEN];
        UnwrapErr(SysRng).fill_bytes(&mut bytes);
        Self { bytes }
    }

    /// The secret whose raw bytes are `bytes`, e.g. the UTF-8 bytes of a
    /// provider's `whsec_...` string.
    ///
    /// # Errors
    ///
    /// [`BillingError::Validation`] if it is shorter than 16 or longer than
    /// 64 bytes.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, BillingError> {
        let bytes = bytes.into();
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&bytes.len()) {
            return Err(BillingError::validation(
                "webhook secret",
                format!("must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes long"),
            ));
        }
        Ok(Self { bytes })
    }

    /// The secret written by [`WebhookSecret::to_hex`].
    ///
    /// # Errors
    ///
    /// [`BillingError::Validation`] if `hex` is not hexadecimal or the secret
    /// is shorter than 16 or longer than 64 bytes.
    pub fn from_hex(hex: &str) -> Result<Self, BillingError> {
        let bytes = hex::decode(hex.trim())
            .map_err(|_| BillingError::validation("webhook secret", "must be hexadecimal"))?;
        Self::from_bytes(bytes)
    }

    /// The secret as lower-case hexadecimal, for a secrets store. Never log it.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(&self.bytes)
    }

    /// An HMAC-SHA256 keyed with this secret.
    fn keyed_mac(&self) -> HmacSha256 {
        // HMAC pads a key shorter than the hash's block to a full block with
        // zeros; the constructors keep secrets within one block (64 bytes), so
        // padding here yields the very same key, and the infallible
        // constructor applies.
        let mut block = Key::<HmacSha256>::default();
        for (dst, src) in block.iter_mut().zip(&self.bytes) {
            *dst = *src;
        }
        <HmacSha256 as KeyInit>::new(&block)
    }

    /// The MAC state after absorbing `"{timestamp}.{body}"`.
    fn signed_payload_mac(&self, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed_mac();
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The [`SIGNATURE_HEADER`] value for `body` sent at `at`:
/// `t=<unix seconds>,v1=<hex hmac-sha256 of "{t}.{body}">`.
///
/// ```
/// use chrono::Utc;
/// use saas_billing::payment::{sign_webhook, verify_signature, WebhookSecret, WEBHOOK_TOLERANCE};
/// let secret = WebhookSecret::generate();
/// let now = Utc::now();
/// let header = sign_webhook(&secret, br#"{"id":"evt_1"}"#, now);
/// assert!(header.starts_with(&format!("t={},v1=", now.timestamp())));
/// verify_signature(&secret, &header, br#"{"id":"evt_1"}"#, now, WEBHOOK_TOLERANCE).unwrap();
/// assert!(verify_signature(&secret, &header, br#"{"id":"evt_2"}"#, now, WEBHOOK_TOLERANCE).is_err());
/// ```
#[must_use]
pub fn sign_webhook(secret: &WebhookSecret, body: &[u8], at: DateTime<Utc>) -> String {
    let timestamp = at.timestamp();
    let tag = secret
        .signed_payload_mac(timestamp, body)
        .finalize()
        .into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Checks a [`SIGNATURE_HEADER`] value against `body`.
///
/// The header must hold exactly one `t=` (unix seconds) and one to eight
/// `v1=` entries (64 lower-case hex digits each); it verifies if any `v1`
/// matches, so an endpoint can rotate its secret by signing with both for a
/// while. Entries of other schemes (`v0=`, ...) are ignored. The timestamp
/// must be within `tolerance` of `now`, either way. MACs are compared in
/// constant time.
///
/// # Errors
///
/// - [`BillingError::WebhookSignature`] if the header is empty, garbled or
///   too long, the timestamp is outside the tolerance, or no signature
///   matches.
/// - [`BillingError::Validation`] if `tolerance` is negative.
pub fn verify_signature(
    secret: &WebhookSecret,
    header: &str,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), BillingError> {
    if tolerance < Duration::zero() {
        return Err(BillingError::validation(
            "tolerance",
            "must not be negative",
        ));
    }
    let parsed = parse_signature_header(header)?;
    let signed_at = DateTime::<Utc>::from_timestamp(parsed.timestamp, 0)
        .ok_or_else(|| rejected("timestamp out of range"))?;
    let age = now.signed_duration_since(signed_at);
    if age > tolerance {
        return Err(rejected("timestamp is older than the tolerance"));
    }
    if age < -tolerance {
        return Err(rejected(
            "timestamp is further in the future than the tolerance",
        ));
    }
    let expected = secret.signed_payload_mac(parsed.timestamp, body);
    // Check every candidate, not just up to the first match.
    let matched = parsed.signatures.iter().fold(false, |matched, candidate| {
        expected.clone().verify_slice(candidate).is_ok() | matched
    });
    if matched {
        Ok(())
    } else {
        Err(rejected("no signature matches"))
    }
}

fn rejected(reason: &str) -> BillingError {
    BillingError::WebhookSignature(reason.to_owned())
}

/// A signature header, parsed.
#[derive(Debug)]
struct SignatureHeader {
    timestamp: i64,
    signatures: Vec<[u8; MAC_LEN]>,
}

fn parse_signature_header(header: &str) -> Result<SignatureHeader, BillingError> {
    if header.trim().is_empty() {
        return Err(rejected("empty signature header"));
    }
    if header.len() > MAX_SIGNATURE_HEADER_LEN {
        return Err(rejected("signature header too long"));
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for element in header.split(',') {
        let (key, value) = element
            .trim()
            .split_once('=')
            .ok_or_else(|| rejected("malformed signature header"))?;
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(rejected("more than one timestamp"));
                }
                timestamp = Some(parse_timestamp(value)?);
            }
            "v1" => {
                if signatures.len() == MAX_SIGNATURES {
                    return Err(rejected("too many signatures"));
                }
                signatures.push(parse_mac(value)?);
            }
            other if is_scheme_name(other) => {}
            _ => return Err(rejected("malformed signature header")),
        }
    }
    let timestamp = timestamp.ok_or_else(|| rejected("missing timestamp"))?;
    if signatures.is_empty() {
        return Err(rejected("missing v1 signature"));
    }
    Ok(SignatureHeader {
        timestamp,
        signatures,
    })
}

/// A name such as `v0` or `v2`: another signature scheme, ignored.
fn is_scheme_name(key: &str) -> bool {
    key.strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_timestamp(value: &str) -> Result<i64, BillingError> {
    // Unix seconds: digits only (no sign, no spaces), and few enough of them
    // that the number fits.
    if value.is_empty() || value.len() > 12 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(rejected("malformed timestamp"));
    }
    value.parse().map_err(|_| rejected("malformed timestamp"))
}

fn parse_mac(value: &str) -> Result<[u8; MAC_LEN], BillingError> {
    let lower_hex = value
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let mut mac = [0_u8; MAC_LEN];
    if !lower_hex || hex::decode_to_slice(value, &mut mac).is_err() {
        return Err(rejected("malformed v1 signature"));
    }
    Ok(mac)
}

// ---------------------------------------------------------------------------
// The trait
// ---------------------------------------------------------------------------

/// A payment processor, as billing sees it: it collects invoices, refunds
/// payments and vouches for its webhooks. Held as `Arc<dyn PaymentProvider>`.
///
/// # The contract
///
/// - **Idempotency.** `collect` and `refund` take an idempotency key; a
///   second call with the same key must not move money again but return the
///   first call's outcome (pass the key to the processor, e.g. as its
///   `Idempotency-Key` header). Reusing a key for a different request is a
///   [`BillingError::Conflict`] with code `idempotency_conflict`.
/// - **Declines are outcomes, outages are errors.** When the processor
///   answers that it will not pay (card declined, insufficient funds, charge
///   not refundable), return `Ok(`[`PaymentOutcome::Failed`]`)` with the
///   processor's code and whether a later retry may succeed. When it cannot
///   be reached, times out, answers 5xx or refuses the request itself, return
///   `Err(`[`BillingError::Provider`]`)`: billing does not know whether money
///   moved and retries later *with the same key*.
/// - **Pending.** When the money moves later (a bank transfer, a 3-D Secure
///   step, an asynchronous method), return [`PaymentOutcome::Pending`]; a
///   webhook or an operator settles it.
/// - **Webhooks.** `verify_webhook` must first verify the signature, with a
///   constant-time comparison, and the timestamp against a tolerance (5
///   minutes by default, [`WEBHOOK_TOLERANCE`]), and only then parse the
///   body. A bad signature or timestamp is [`BillingError::WebhookSignature`];
///   a well-signed body it cannot understand is [`BillingError::Validation`].
///   Deduplicating events by [`WebhookEvent::id`] is the server's job.
/// - No method may block the executor or panic; the trait is dyn-compatible.
///
/// # Example
///
/// ```
/// use saas_billing::money::Money;
/// use saas_billing::payment::{
///     PaymentOutcome, PaymentProvider, PaymentRequest, Scripted, SimulatedCardProvider,
///     WebhookSecret,
/// };
///
/// async fn charge(provider: &dyn PaymentProvider, request: &PaymentRequest) -> String {
///     match provider.collect(request).await {
///         Ok(PaymentOutcome::Succeeded { reference }) => format!("paid ({reference})"),
///         Ok(PaymentOutcome::Pending { instructions, .. }) => format!("awaiting: {instructions}"),
///         Ok(PaymentOutcome::Failed { code, retryable, .. }) => {
///             format!("declined: {code}, retry later: {retryable}")
///         }
///         Err(error) => format!("not charged, try again with the same key: {error}"),
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let provider = SimulatedCardProvider::new(WebhookSecret::generate());
/// provider.script([Scripted::decline("insufficient_funds"), Scripted::Succeed]);
/// let request = PaymentRequest {
///     tenant_id: uuid::Uuid::now_v7(),
///     invoice_id: uuid::Uuid::now_v7(),
///     invoice_number: "INV-0042".into(),
///     amount: Money { amount: 4_900, currency: "EUR".parse().unwrap() },
///     idempotency_key: "invoice-0042-attempt-1".into(),
///     description: "Pro plan, March".into(),
/// };
/// assert_eq!(charge(&provider, &request).await, "declined: insufficient_funds, retry later: true");
/// // The same key returns the same outcome: nothing is charged twice.
/// assert_eq!(charge(&provider, &request).await, "declined: insufficient_funds, retry later: true");
/// // The next attempt has its own key.
/// let retry = PaymentRequest { idempotency_key: "invoice-0042-attempt-2".into(), ..request };
/// assert!(charge(&provider, &retry).await.starts_with("paid (sim_ch_"));
/// # });
/// ```
#[async_trait]
pub trait PaymentProvider: Send + Sync + fmt::Debug {
    /// A stable name such as `manual`, `simulated_card` or `stripe`, stored
    /// with each payment.
    fn name(&self) -> &str;

    /// Collects `request.amount` for `request.invoice_id`, at most once per
    /// `request.idempotency_key`.
    ///
    /// # Errors
    ///
    /// [`BillingError::Provider`] if the provider failed or could not be
    /// reached (retry with the same key), [`BillingError::Validation`] for a
    /// request that fails [`PaymentRequest::validate`],
    /// [`BillingError::Conflict`] if the key was used for another request.
    /// A decline is `Ok(`[`PaymentOutcome::Failed`]`)`.
    async fn collect(&self, request: &PaymentRequest) -> Result<PaymentOutcome, BillingError>;

    /// Refunds `amount` of the payment `payment_reference`, at most once per
    /// `idempotency_key`.
    ///
    /// # Errors
    ///
    /// As for [`PaymentProvider::collect`]; a refusal (nothing left to
    /// refund, unknown payment) is `Ok(`[`PaymentOutcome::Failed`]`)`.
    async fn refund(
        &self,
        payment_reference: &str,
        amount: Money,
        idempotency_key: &str,
    ) -> Result<PaymentOutcome, BillingError>;

    /// Verifies a webhook's signature (in constant time) and timestamp, then
    /// parses its body into a [`WebhookEvent`].
    ///
    /// # Errors
    ///
    /// [`BillingError::WebhookSignature`] if the signature or the timestamp
    /// does not verify (or the provider sends no webhooks),
    /// [`BillingError::Validation`] if a correctly signed body is not an event
    /// this provider knows.
    fn verify_webhook(
        &self,
        headers: &WebhookHeaders,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<WebhookEvent, BillingError>;
}

#[async_trait]
impl<T: PaymentProvider + ?Sized> PaymentProvider for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn collect(&self, request: &PaymentRequest) -> Result<PaymentOutcome, BillingError> {
        (**self).collect(request).await
    }

    async fn refund(
        &self,
        payment_reference: &str,
        amount: Money,
        idempotency_key: &str,
    ) -> Result<PaymentOutcome, BillingError> {
        (**self)
            .refund(payment_reference, amount, idempotency_key)
            .await
    }

    fn verify_webhook(
        &self,
        headers: &WebhookHeaders,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<WebhookEvent, BillingError> {
        (**self).verify_webhook(headers, body, now)
    }
}

#[async_trait]
impl<T: PaymentProvider + ?Sized> PaymentProvider for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn collect(&self, request: &PaymentRequest) -> Result<PaymentOutcome, BillingError> {
        (**self).collect(request).await
    }

    async fn refund(
        &self,
        payment_reference: &str,
        amount: Money,
        idempotency_key: &str,
    ) -> Result<PaymentOutcome, BillingError> {
        (**self)
            .refund(payment_reference, amount, idempotency_key)
            .await
    }

    fn verify_webhook(
        &self,
        headers: &WebhookHeaders,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<WebhookEvent, BillingError> {
        (**self).verify_webhook(headers, body, now)
    }
}

fn validate_refund(amount: Money, idempotency_key: &str) -> Result<(), BillingError> {
    if amount.amount <= 0 {
        return Err(BillingError::validation("amount", "must be positive"));
    }
    validate_idempotency_key(idempotency_key)
}

// ---------------------------------------------------------------------------
// Manual bank transfer
// ---------------------------------------------------------------------------

/// The default provider (`manual`): it asks the customer to pay by bank
/// transfer quoting the invoice number, and leaves matching the transfer to
/// an operator. Every payment stays [`PaymentOutcome::Pending`]; it sends no
/// webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualProvider {
    instructions: String,
}

impl ManualProvider {
    /// A provider whose instructions start with `instructions`, typically the
    /// seller's bank details: `"pay by bank transfer to Example GmbH, IBAN
    /// DE89 3704 0044 0532 0130 00"`. The invoice number and amount are
    /// appended to it.
    #[must_use]
    pub fn new(instructions: impl Into<String>) -> Self {
        Self {
            instructions: instructions.into(),
        }
    }
}

impl Default for ManualProvider {
    /// Instructions of `"pay by bank transfer"`.
    fn default() -> Self {
        Self::new("pay by bank transfer")
    }
}

#[async_trait]
impl PaymentProvider for ManualProvider {
    fn name(&self) -> &str {
        "manual"
    }

    async fn collect(&self, request: &PaymentRequest) -> Result<PaymentOutcome, BillingError> {
        request.validate()?;
        Ok(PaymentOutcome::Pending {
            reference: None,
            instructions: format!(
                "{} quoting {} (amount {})",
                self.instructions, request.invoice_number, request.amount
            ),
        })
    }

    async fn refund(
        &self,
        payment_reference: &str,
        amount: Money,
        idempotency_key: &str,
    ) -> Result<PaymentOutcome, BillingError> {
        validate_refund(amount, idempotency_key)?;
        let instructions = if payment_reference.trim().is_empty() {
            format!("refund {amount} to the customer by bank transfer")
        } else {
            format!(
                "refund {amount} to the customer by bank transfer for payment {payment_reference}"
            )
        };
        Ok(PaymentOutcome::Pending {
            reference: None,
            instructions,
        })
    }

    fn verify_webhook(
        &self,
        _headers: &WebhookHeaders,
        _body: &[u8],
        _now: DateTime<Utc>,
    ) -> Result<WebhookEvent, BillingError> {
        Err(rejected("the manual provider sends no webhooks"))
    }
}

// ---------------------------------------------------------------------------
// Simulated card processor
// ---------------------------------------------------------------------------

/// What the next [`SimulatedCardProvider::collect`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scripted {
    /// The charge succeeds.
    Succeed,
    /// The card is declined with `code` (`card_declined`,
    /// `insufficient_funds`, `expired_card`, ...): `Ok(Failed)`.
    Decline {
        /// The decline code.
        code: String,
    },
    /// The processor is unreachable: `Err(`[`BillingError::Provider`]`)`.
    Outage,
}

impl Scripted {
    /// [`Scripted::Decline`] with `code`.
    #[must_use]
    pub fn decline(code: impl Into<String>) -> Self {
        Self::Decline { code: code.into() }
    }
}

/// A card processor simulated in memory (`simulated_card`), for tests and
/// demos.
///
/// Charges succeed unless scripted otherwise ([`SimulatedCardProvider::script`],
/// [`SimulatedCardProvider::fail_tenant`]); each idempotency key is charged
/// once, as a real processor does; references look like `sim_ch_<uuid>` for
/// charges and `sim_re_<uuid>` for refunds. It signs webhooks with its
/// [`WebhookSecret`] ([`SimulatedCardProvider::webhook_for`]) and verifies
/// them like a real adapter.
///
/// ```
/// use chrono::Utc;
/// use saas_billing::payment::{
///     PaymentProvider, SimulatedCardProvider, WebhookEvent, WebhookKind, WebhookSecret,
/// };
/// let provider = SimulatedCardProvider::new(WebhookSecret::generate());
/// let event = WebhookEvent {
///     id: "evt_1".into(),
///     kind: WebhookKind::PaymentSucceeded,
///     tenant_id: uuid::Uuid::now_v7(),
///     invoice_id: uuid::Uuid::now_v7(),
///     amount: saas_billing::money::Money { amount: 100, currency: "EUR".parse().unwrap() },
///     reference: "sim_ch_1".into(),
///     failure_code: None,
///     occurred_at: Utc::now(),
/// };
/// let now = Utc::now();
/// let (headers, body) = provider.webhook_for(&event, now);
/// assert_eq!(provider.verify_webhook(&headers, &body, now).unwrap(), event);
/// ```
#[derive(Debug)]
pub struct SimulatedCardProvider {
    secret: WebhookSecret,
    tolerance: Duration,
    state: Mutex<SimulatedState>,
}

#[derive(Debug, Default)]
struct SimulatedState {
    script: VecDeque<Scripted>,
    failing_tenants: HashSet<Uuid>,
    /// Outcomes of `collect`, by idempotency key.
    collections: HashMap<String, Recorded<ChargeFingerprint>>,
    /// Outcomes of `refund`, by idempotency key.
    refunds: HashMap<String, Recorded<RefundFingerprint>>,
    /// Successful charges, by reference.
    charges: HashMap<String, Charge>,
}

/// An outcome remembered for an idempotency key, with what was asked.
#[derive(Debug)]
struct Recorded<F> {
    fingerprint: F,
    outcome: PaymentOutcome,
}

#[derive(Debug, PartialEq, Eq)]
struct ChargeFingerprint {
    tenant_id: Uuid,
    invoice_id: Uuid,
    amount: Money,
}

#[derive(Debug, PartialEq, Eq)]
struct RefundFingerprint {
    payment_reference: String,
    amount: Money,
}

#[derive(Debug)]
struct Charge {
    amount: Money,
    refunded: i64,
}

const SIMULATED: &str = "simulated_card";

impl SimulatedCardProvider {
    /// A provider that signs and verifies webhooks with `secret`, within
    /// [`WEBHOOK_TOLERANCE`].
    #[must_use]
    pub fn new(secret: WebhookSecret) -> Self {
        Self {
            secret,
            tolerance: WEBHOOK_TOLERANCE,
            state: Mutex::new(SimulatedState::default()),
        }
    }

    /// The same provider with another webhook timestamp tolerance.
    #[must_use]
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The webhook secret, e.g. to configure a second provider that verifies
    /// this one's webhooks.
    #[must_use]
    pub fn secret(&self) -> &WebhookSecret {
        &self.secret
    }

    /// Queues `outcomes` for the next charges with new idempotency keys, in
    /// order; once the queue is empty, charges succeed.
    pub fn script(&self, outcomes: impl IntoIterator<Item = Scripted>) {
        self.lock().script.extend(outcomes);
    }

    /// Declines (`card_declined`, retryable) every new charge of `tenant_id`,
    /// before the script is consulted, until [`SimulatedCardProvider::clear`].
    pub fn fail_tenant(&self, tenant_id: Uuid) {
        self.lock().failing_tenants.insert(tenant_id);
    }

    /// Empties the script and forgets failing tenants. Outcomes already given
    /// for idempotency keys are kept, as a real processor keeps them.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.script.clear();
        state.failing_tenants.clear();
    }

    /// A signed webhook for `event` sent at `at`: headers with
    /// [`SIGNATURE_HEADER`] and the JSON body, ready to POST to the server's
    /// webhook route.
    #[must_use]
    pub fn webhook_for(
        &self,
        event: &WebhookEvent,
        at: DateTime<Utc>,
    ) -> (WebhookHeaders, Vec<u8>) {
        // Serialising a struct of strings, ids, numbers and a timestamp
        // cannot fail; an empty body would fail verification anyway.
        let body = serde_json::to_vec(event).unwrap_or_default();
        let mut headers = WebhookHeaders::new();
        headers.insert(SIGNATURE_HEADER, sign_webhook(&self.secret, &body, at));
        headers.insert("content-type", "application/json");
        (headers, body)
    }

    /// The state; a panic elsewhere while it was held leaves it consistent
    /// (every update is a single insert or pop), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, SimulatedState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn new_reference(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::now_v7().simple())
}

fn idempotency_conflict() -> BillingError {
    BillingError::Conflict {
        code: "idempotency_conflict",
        message: "idempotency key already used for a different request".to_owned(),
    }
}

fn declined(code: String) -> PaymentOutcome {
    let (message, retryable) = match code.as_str() {
        "insufficient_funds" => ("the card has insufficient funds", true),
        "expired_card" => ("the card has expired", false),
        "lost_card" | "stolen_card" | "incorrect_number" | "invalid_account" => {
            ("the card cannot be used", false)
        }
        _ => ("the card was declined", true),
    };
    PaymentOutcome::Failed {
        code,
        message: message.to_owned(),
        retryable,
    }
}

#[async_trait]
impl PaymentProvider for SimulatedCardProvider {
    fn name(&self) -> &str {
        SIMULATED
    }

    async fn collect(&self, request: &PaymentRequest) -> Result<PaymentOutcome, BillingError> {
        request.validate()?;
        let fingerprint = ChargeFingerprint {
            tenant_id: request.tenant_id,
            invoice_id: request.invoice_id,
            amount: request.amount,
        };
        let mut state = self.lock();
        if let Some(previous) = state.collections.get(&request.idempotency_key) {
            return if previous.fingerprint == fingerprint {
                Ok(previous.outcome.clone())
            } else {
                Err(idempotency_conflict())
            };
        }
        let step = if state.failing_tenants.contains(&request.tenant_id) {
            Scripted::decline("card_declined")
        } else {
            state.script.pop_front().unwrap_or(Scripted::Succeed)
        };
        let outcome = match step {
            Scripted::Succeed => {
                let reference = new_reference("sim_ch_");
                state.charges.insert(
                    reference.clone(),
                    Charge {
                        amount: request.amount,
                        refunded: 0,
                    },
                );
                PaymentOutcome::Succeeded { reference }
            }
            Scripted::Decline { code } => declined(code),
            // Nothing is remembered: a retry with the same key tries again.
            Scripted::Outage => {
                return Err(BillingError::Provider {
                    provider: SIMULATED.to_owned(),
                    message: "simulated outage: no answer from the processor".to_owned(),
                });
            }
        };
        state.collections.insert(
            request.idempotency_key.clone(),
            Recorded {
                fingerprint,
                outcome: outcome.clone(),
            },
        );
        Ok(outcome)
    }

    async fn refund(
        &self,
        payment_reference: &str,
        amount: Money,
        idempotency_key: &str,
    ) -> Result<PaymentOutcome, BillingError> {
        validate_refund(amount, idempotency_key)?;
        let fingerprint = RefundFingerprint {
            payment_reference: payment_reference.to_owned(),
            amount,
        };
        let mut state = self.lock();
        if let Some(previous) = state.refunds.get(idempotency_key) {
            return if previous.fingerprint == fingerprint {
                Ok(previous.outcome.clone())
            } else {
                Err(idempotency_conflict())
            };
        }
        let outcome = match state.charges.get_mut(payment_reference) {
            None => PaymentOutcome::Failed {
                code: "charge_not_found".to_owned(),
                message: "no such charge".to_owned(),
                retryable: false,
            },
            Some(charge) if charge.amount.currency != amount.currency => {
                return Err(BillingError::validation(
                    "amount",
                    "currency differs from the charge's",
                ));
            }
            Some(charge) => match charge.refunded.checked_add(amount.amount) {
                Some(total) if total <= charge.amount.amount => {
                    charge.refunded = total;
                    PaymentOutcome::Succeeded {
                        reference: new_reference("sim_re_"),
                    }
                }
                _ => PaymentOutcome::Failed {
                    code: "amount_too_large".to_owned(),
                    message: "the refund exceeds what is left of the charge".to_owned(),
                    retryable: false,
                },
            },
        };
        state.refunds.insert(
            idempotency_key.to_owned(),
            Recorded {
                fingerprint,
                outcome: outcome.clone(),
            },
        );
        Ok(outcome)
    }

    fn verify_webhook(
        &self,
        headers: &WebhookHeaders,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<WebhookEvent, BillingError> {
        let header = headers
            .get(SIGNATURE_HEADER)
            .ok_or_else(|| rejected("missing x-saas-signature header"))?;
        verify_signature(&self.secret, header, body, now, self.tolerance)?;
        serde_json::from_slice(body).map_err(|e| {
            BillingError::validation(
                "webhook body",
                format!(
                    "is not a webhook event (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur(amount: i64) -> Money {
        Money {
            amount,
            currency: "EUR".parse().unwrap(),
        }
    }

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).unwrap()
    }

    const NOW: i64 = 1_750_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","kind":"payment_succeeded"}"#;

    fn request(key: &str) -> PaymentRequest {
        PaymentRequest {
            tenant_id: Uuid::now_v7(),
            invoice_id: Uuid::now_v7(),
            invoice_number: "INV-2025-0042".to_owned(),
            amount: eur(4_900),
            idempotency_key: key.to_owned(),
            description: "Pro plan".to_owned(),
        }
    }

    fn event() -> WebhookEvent {
        WebhookEvent {
            id: "evt_123".to_owned(),
            kind: WebhookKind::PaymentFailed,
            tenant_id: Uuid::now_v7(),
            invoice_id: Uuid::now_v7(),
            amount: eur(4_900),
            reference: "sim_ch_abc".to_owned(),
            failure_code: Some("card_declined".to_owned()),
            occurred_at: at(NOW - 3),
        }
    }

    fn verify(secret: &WebhookSecret, header: &str, body: &[u8]) -> Result<(), BillingError> {
        verify_signature(secret, header, body, at(NOW), WEBHOOK_TOLERANCE)
    }

    fn assert_rejected(result: Result<(), BillingError>) {
        assert!(
            matches!(result, Err(BillingError::WebhookSignature(_))),
            "{result:?}"
        );
    }

    #[test]
    fn signature_verifies() {
        let secret = WebhookSecret::generate();
        let header = sign_webhook(&secret, BODY, at(NOW));
        assert!(header.starts_with(&format!("t={NOW},v1=")));
        verify(&secret, &header, BODY).unwrap();
    }

    #[test]
    fn hmac_matches_the_rfc_4231_test_vector_and_unpadded_keys() {
        // RFC 4231 test case 1: key 0x0b * 20, data "Hi There".
        let secret = WebhookSecret::from_bytes(vec![0x0b; 20]).unwrap();
        let mut mac = secret.keyed_mac();
        mac.update(b"Hi There");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // A full 64-byte key is used as is (RFC 4231 uses longer keys only
        // hashed; ours never are).
        let long = WebhookSecret::from_bytes(vec![0xaa; 64]).unwrap();
        let mut expected = <HmacSha256 as KeyInit>::new_from_slice(&[0xaa; 64]).unwrap();
        expected.update(b"x");
        let mut mac = long.keyed_mac();
        mac.update(b"x");
        assert_eq!(mac.finalize(), expected.finalize());
    }

    #[test]
    fn tampered_body_fails() {
        let secret = WebhookSecret::generate();
        let header = sign_webhook(&secret, BODY, at(NOW));
        assert_rejected(verify(
            &secret,
            &header,
            br#"{"id":"evt_1","kind":"refund_succeeded"}"#,
        ));
        assert_rejected(verify(&secret, &header, b""));
    }

    #[test]
    fn wrong_secret_fails() {
        let header = sign_webhook(&WebhookSecret::generate(), BODY, at(NOW));
        assert_rejected(verify(&WebhookSecret::generate(), &header, BODY));
    }

    #[test]
    fn tampered_timestamp_fails() {
        let secret = WebhookSecret::generate();
        let header = sign_webhook(&secret, BODY, at(NOW));
        let moved = header.replacen(&format!("t={NOW}"), &format!("t={}", NOW - 1), 1);
        assert_rejected(verify(&secret, &moved, BODY));
    }

    #[test]
    fn timestamp_six_minutes_old_fails_and_four_minutes_old_passes() {
        let secret = WebhookSecret::generate();
        let old = sign_webhook(&secret, BODY, at(NOW - 6 * 60));
        assert_rejected(verify(&secret, &old, BODY));
        let recent = sign_webhook(&secret, BODY, at(NOW - 4 * 60));
        verify(&secret, &recent, BODY).unwrap();
        let edge = sign_webhook(&secret, BODY, at(NOW - 5 * 60));
        verify(&secret, &edge, BODY).unwrap();
    }

    #[test]
    fn future_timestamp_beyond_tolerance_fails() {
        let secret = WebhookSecret::generate();
        let future = sign_webhook(&secret, BODY, at(NOW + 6 * 60));
        assert_rejected(verify(&secret, &future, BODY));
        let skewed = sign_webhook(&secret, BODY, at(NOW + 4 * 60));
        verify(&secret, &skewed, BODY).unwrap();
    }

    #[test]
    fn custom_tolerance_applies_and_negative_tolerance_is_refused() {
        let secret = WebhookSecret::generate();
        let header = sign_webhook(&secret, BODY, at(NOW - 20));
        verify_signature(&secret, &header, BODY, at(NOW), Duration::seconds(30)).unwrap();
        assert_rejected(verify_signature(
            &secret,
            &header,
            BODY,
            at(NOW),
            Duration::seconds(10),
        ));
        let err =
            verify_signature(&secret, &header, BODY, at(NOW), Duration::seconds(-1)).unwrap_err();
        assert!(matches!(err, BillingError::Validation { .. }), "{err:?}");
    }

    #[test]
    fn garbled_headers_fail_with_webhook_signature_and_never_panic() {
        let secret = WebhookSecret::generate();
        let good = sign_webhook(&secret, BODY, at(NOW));
        let mac = good.split_once(",v1=").unwrap().1.to_owned();
        let cases = [
            String::new(),
            " ".to_owned(),
            ",".to_owned(),
            "=".to_owned(),
            "t=".to_owned(),
            format!("v1={mac}"),
            format!("t={NOW}"),
            format!("t={NOW},v1="),
            format!("t={NOW},v1=zz{}", &mac[2..]),
            format!("t={NOW},v1={}", &mac[1..]),
            format!("t={NOW},v1={mac}00"),
            format!("t={NOW},v1={}", mac.to_uppercase()),
            format!("t={NOW},v1={mac},garbage"),
            format!("t={NOW},x={mac}"),
            format!("t=+{NOW},v1={mac}"),
            format!("t=-{NOW},v1={mac}"),
            format!("t=1e9,v1={mac}"),
            format!("t=99999999999999999999,v1={mac}"),
            format!("t=999999999999,v1={mac}"),
            format!("t={NOW},t={NOW},v1={mac}"),
            format!("t={NOW};v1={mac}"),
            format!("t={NOW},v1={mac}{}", ",v1=".repeat(1000)),
            format!("t={NOW}{}", format!(",v1={mac}").repeat(MAX_SIGNATURES + 1)),
            "t=é,v1=ü".to_owned(),
        ];
        for header in &cases {
            assert_rejected(verify(&secret, header, BODY));
        }
    }

    #[test]
    fn header_with_spaces_and_unknown_schemes_still_verifies() {
        let secret = WebhookSecret::generate();
        let good = sign_webhook(&secret, BODY, at(NOW));
        let (t, mac) = good.split_once(',').unwrap();
        verify(&secret, &format!("{t}, {mac}, v0=deadbeef"), BODY).unwrap();
    }

    #[test]
    fn rotation_passes_when_a_later_v1_entry_matches() {
        let old = WebhookSecret::generate();
        let new = WebhookSecret::generate();
        let by_old = sign_webhook(&old, BODY, at(NOW));
        let by_new = sign_webhook(&new, BODY, at(NOW));
        let old_mac = by_old.split_once(",v1=").unwrap().1;
        let new_mac = by_new.split_once(",v1=").unwrap().1;
        let header = format!("t={NOW},v1={old_mac},v1={new_mac}");
        verify(&new, &header, BODY).unwrap();
        verify(&old, &header, BODY).unwrap();
        assert_rejected(verify(&WebhookSecret::generate(), &header, BODY));
    }

    #[test]
    fn secrets_do_not_appear_in_debug() {
        let secret = WebhookSecret::generate();
        let hex = secret.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(!format!("{secret:?}").contains(&hex));
        let provider = SimulatedCardProvider::new(secret.clone());
        let shown = format!("{provider:?} {:#?}", provider);
        assert!(!shown.contains(&hex), "{shown}");
        assert!(!shown.contains(&hex[..16]), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn secret_hex_round_trips_and_weak_or_garbled_secrets_are_refused() {
        let secret = WebhookSecret::generate();
        assert_eq!(
            WebhookSecret::from_hex(&secret.to_hex()).unwrap().to_hex(),
            secret.to_hex()
        );
        assert_ne!(WebhookSecret::generate().to_hex(), secret.to_hex());
        for bad in [
            "",
            "abc",
            "zz".repeat(32).as_str(),
            &"ab".repeat(15),
            &"ab".repeat(65),
        ] {
            let err = WebhookSecret::from_hex(bad).unwrap_err();
            assert!(matches!(err, BillingError::Validation { .. }), "{err:?}");
            assert!(!err.to_string().contains(bad) || bad.is_empty());
        }
        WebhookSecret::from_bytes(*b"whsec_0123456789abcdefghijklmnopqrstuv").unwrap();
    }

    #[test]
    fn webhook_headers_match_names_case_insensitively() {
        let headers: WebhookHeaders = [("X-Saas-Signature", "a"), ("Content-Type", "b")]
            .into_iter()
            .collect();
        assert_eq!(headers.get("x-saas-signature"), Some("a"));
        assert_eq!(headers.get("CONTENT-TYPE"), Some("b"));
        assert_eq!(headers.get("x-other"), None);
        assert_eq!(
            headers.iter().collect::<Vec<_>>(),
            [("content-type", "b"), ("x-saas-signature", "a")]
        );
    }

    #[test]
    fn payment_outcome_serialises_tagged_by_status() {
        let failed = declined("insufficient_funds".to_owned());
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "status": "failed",
                "code": "insufficient_funds",
                "message": "the card has insufficient funds",
                "retryable": true,
            })
        );
        let pending = PaymentOutcome::Pending {
            reference: None,
            instructions: "x".to_owned(),
        };
        let json = serde_json::to_string(&pending).unwrap();
        assert_eq!(
            json,
            r#"{"status":"pending","reference":null,"instructions":"x"}"#
        );
        assert_eq!(
            serde_json::from_str::<PaymentOutcome>(&json).unwrap(),
            pending
        );
        let kind = serde_json::to_string(&WebhookKind::RefundSucceeded).unwrap();
        assert_eq!(kind, r#""refund_succeeded""#);
    }

    #[tokio::test]
    async fn simulated_provider_follows_its_script_in_order() {
        let provider = SimulatedCardProvider::new(WebhookSecret::generate());
        provider.script([
            Scripted::decline("insufficient_funds"),
            Scripted::Succeed,
            Scripted::decline("expired_card"),
        ]);
        let first = provider.collect(&request("k1")).await.unwrap();
        assert!(
            matches!(first, PaymentOutcome::Failed { ref code, retryable: true, .. } if code == "insufficient_funds")
        );
        let second = provider.collect(&request("k2")).await.unwrap();
        let reference = second.reference().unwrap();
        assert!(reference.starts_with("sim_ch_"), "{reference}");
        assert_eq!(reference.len(), "sim_ch_".len() + 32);
        let third = provider.collect(&request("k3")).await.unwrap();
        assert!(
            matches!(third, PaymentOutcome::Failed { ref code, retryable: false, .. } if code == "expired_card")
        );
        // The queue is empty: charges succeed.
        let fourth = provider.collect(&request("k4")).await.unwrap();
        assert!(matches!(fourth, PaymentOutcome::Succeeded { .. }));
        assert_ne!(fourth.reference(), second.reference());
    }

    #[tokio::test]
    async fn simulated_provider_is_idempotent_per_key() {
        let provider = SimulatedCardProvider::new(WebhookSecret::generate());
        provider.script([
            Scripted::decline("card_declined"),
            Scripted::decline("expired_card"),
        ]);
        let req = request("invoice-1-attempt-1");
        let first = provider.collect(&req).await.unwrap();
        let again = provider.collect(&req).await.unwrap();
        assert_eq!(first, again);
        assert!(
            matches!(again, PaymentOutcome::Failed { ref code, .. } if code == "card_declined")
        );
        // The replay did not consume the second scripted outcome.
        let next = provider
            .collect(&request("invoice-1-attempt-2"))
            .await
            .unwrap();
        assert!(matches!(next, PaymentOutcome::Failed { ref code, .. } if code == "expired_card"));
        // A success replays with the same reference.
        let paid_req = request("k-paid");
        let paid = provider.collect(&paid_req).await.unwrap();
        assert!(matches!(paid, PaymentOutcome::Succeeded { .. }));
        assert_eq!(provider.collect(&paid_req).await.unwrap(), paid);
    }

    #[tokio::test]
    async fn reusing_a_key_for_another_request_is_a_conflict() {
        let provider = SimulatedCardProvider::new(WebhookSecret::generate());
        let first = request("k");
        provider.collect(&first).await.unwrap();
        let other_invoice = request("k");
        let more = PaymentRequest {
            amount: eur(5_000),
            ..first.clone()
        };
        for req in [other_invoice, more] {
            let err = provider.collect(&req).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    BillingError::Conflict {
                        code: "idempotency_conflict",
                        ..
                    }
                ),
                "{err:?}"
            );
        }
        // The description is not part of the charge.
        let reworded = PaymentRequest {
            description: "other words".to_owned(),
            ..first.clone()
        };
        assert!(provider.collect(&reworded).await.is_ok());
    }

    #[tokio::test]
    async fn outage_is_an_error_and_decline_is_a_failed_outcome() {
        let provider = SimulatedCardProvider::new(WebhookSecret::generate());
        provider.script([Scripted::Outage, Scripted::decline("card_declined")]);
        let req = request("k");
        let outage = provider.collect(&req).await;
        assert!(
            matches!(&outage, Err(BillingError::Provider { provider, .. }) if provider == "simulated_card"),
            "{outage:?}"
        );
        // Nothing was charged: a retry with the same key goes on to the next
        // scripted outcome, a decline, which is an outcome.
        let decline = provider.collect(&req).await.unwrap();
        assert!(matches!(decline, PaymentOutcome::Failed { .. }));
    }

    #[tokio::test]
    async fn failing_tenant_is_declined_until_cleared() {
        let provider = SimulatedCardProvider::new(WebhookSecret::generate());
        let req = request("k1");
        provider.fail_tenant(req.tenant_id);
        provider.script([Scripted::decline("expired_card")]);
        let outcome = provider.collect(&req).await.unwrap();
        assert!(
            matches!(outcome, PaymentOutcome::Failed { ref code, .. } if code == "card_declined")
        );
        // Another tenant consumes the script.
        let other = provider.collect(&request("k2")).await.unwrap();
        assert!(matches!(other, PaymentOutcome::Failed { ref code, .. } if code == "expired_card"));
        provider.clear();
        let retry = PaymentRequest {
            idempotency_key: "k3".to_owned(),
            ..req
        };
        assert!(matches!(
            provider.collect(&retry).await.unwrap(),
            PaymentOutcome::Succeeded { .. }
        ));
    }

    #[tokio::test]
    async fn invalid_requests_are_refused_before_anything_is_charged() {
        let provider = SimulatedCardProvider::new(WebhookSecret::generate());
        provider.script([Scripted::decline("card_declined")]);
        let zero = PaymentRequest {
            amount: eur(0),
            ..request("k")
        };
        let no_key = request("  ");
        let long_key = request(&"k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1));
        let no_number = PaymentRequest {
            invoice_number: String::new(),
            ..request("k")
        };
        for (req, field) in [
            (zero, "amount"),
            (no_key, "idempotency_key"),
            (long_key, "idempotency_key"),
            (no_number, "invoice_number"),
        ] {
            let err = provider.collect(&req).await.unwrap_err();
            assert!(
                matches!(&err, BillingError::Validation { field: f, .. } if f == field),
                "{err:?}"
            );
            let err = ManualProvider::default().collect(&req).await.unwrap_err();
            assert!(matches!(err, BillingError::Validation { .. }), "{err:?}");
        }
        // The script is untouched.
        let outcome = provider.collect(&request("k")).await.unwrap();
        assert!(matches!(outcome, PaymentOutcome::Failed { .. }));
    }

    #[tokio::test]
    async fn simulated_refunds_are_idempotent_and_bounded_by_the_charge() {
        let provider = SimulatedCardProvider::new(WebhookSecret::generate());
        let paid = provider.collect(&request("k")).await.unwrap();
        let charge = paid.reference().unwrap().to_owned();
        let part = provider.refund(&charge, eur(900), "r1").await.unwrap();
        assert!(part.reference().unwrap().starts_with("sim_re_"));
        assert_eq!(
            provider.refund(&charge, eur(900), "r1").await.unwrap(),
            part
        );
        let conflict = provider.refund(&charge, eur(901), "r1").await;
        assert!(
            matches!(conflict, Err(BillingError::Conflict { .. })),
            "{conflict:?}"
        );
        let too_much = provider.refund(&charge, eur(4_001), "r2").await.unwrap();
        assert!(
            matches!(too_much, PaymentOutcome::Failed { ref code, retryable: false, .. } if code == "amount_too_large")
        );
        let rest = provider.refund(&charge, eur(4_000), "r3").await.unwrap();
        assert!(matches!(rest, PaymentOutcome::Succeeded { .. }));
        let unknown = provider.refund("sim_ch_nope", eur(1), "r4").await.unwrap();
        assert!(
            matches!(unknown, PaymentOutcome::Failed { ref code, .. } if code == "charge_not_found")
        );
        let usd = Money {
            amount: 1,
            currency: "USD".parse().unwrap(),
        };
        assert!(provider.refund(&charge, usd, "r5").await.is_err());
        assert!(provider.refund(&charge, eur(-1), "r6").await.is_err());
        assert!(provider.refund(&charge, eur(1), "").await.is_err());
    }

    #[tokio::test]
    async fn manual_provider_returns_pending_with_the_invoice_number() {
        let provider = ManualProvider::new(
            "pay by bank transfer to Example GmbH, IBAN DE89 3704 0044 0532 0130 00,",
        );
        assert_eq!(provider.name(), "manual");
        let outcome = provider.collect(&request("k")).await.unwrap();
        let PaymentOutcome::Pending {
            reference,
            instructions,
        } = outcome
        else {
            panic!("expected pending, got {outcome:?}");
        };
        assert_eq!(reference, None);
        assert!(instructions.contains("INV-2025-0042"), "{instructions}");
        assert!(instructions.contains("IBAN DE89"), "{instructions}");
        assert!(instructions.contains("49.00 EUR"), "{instructions}");
        let default = ManualProvider::default()
            .collect(&request("k"))
            .await
            .unwrap();
        assert!(
            matches!(default, PaymentOutcome::Pending { ref instructions, .. }
            if instructions.starts_with("pay by bank transfer quoting INV-2025-0042"))
        );
        let refund = provider.refund("", eur(100), "r").await.unwrap();
        assert!(
            matches!(refund, PaymentOutcome::Pending { ref instructions, .. } if instructions.contains("1.00 EUR"))
        );
    }

    #[test]
    fn manual_provider_refuses_webhooks() {
        let provider = ManualProvider::default();
        let secret = WebhookSecret::generate();
        let mut headers = WebhookHeaders::new();
        headers.insert(SIGNATURE_HEADER, sign_webhook(&secret, BODY, at(NOW)));
        let err = provider
            .verify_webhook(&headers, BODY, at(NOW))
            .unwrap_err();
        assert!(matches!(err, BillingError::WebhookSignature(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "webhook signature rejected: the manual provider sends no webhooks"
        );
    }

    #[test]
    fn webhook_event_round_trips_through_sign_and_verify_webhook() {
        let provider = SimulatedCardProvider::new(WebhookSecret::generate());
        assert_eq!(provider.name(), "simulated_card");
        let event = event();
        let (headers, body) = provider.webhook_for(&event, at(NOW));
        assert_eq!(headers.get("content-type"), Some("application/json"));
        let verified = provider
            .verify_webhook(&headers, &body, at(NOW + 60))
            .unwrap();
        assert_eq!(verified, event);
        // Too late: a replay.
        let late = provider.verify_webhook(&headers, &body, at(NOW + 301));
        assert!(
            matches!(late, Err(BillingError::WebhookSignature(_))),
            "{late:?}"
        );
        // Another endpoint's secret.
        let other = SimulatedCardProvider::new(WebhookSecret::generate());
        let err = other.verify_webhook(&headers, &body, at(NOW)).unwrap_err();
        assert!(matches!(err, BillingError::WebhookSignature(_)), "{err:?}");
        // The same secret elsewhere verifies.
        let twin = SimulatedCardProvider::new(provider.secret().clone())
            .with_tolerance(Duration::seconds(10));
        assert_eq!(
            twin.verify_webhook(&headers, &body, at(NOW + 10)).unwrap(),
            event
        );
        assert!(twin.verify_webhook(&headers, &body, at(NOW + 11)).is_err());
    }

    #[test]
    fn missing_signature_header_is_rejected() {
        let provider = SimulatedCardProvider::new(WebhookSecret::generate());
        let (mut headers, body) = provider.webhook_for(&event(), at(NOW));
        let _ = headers.values.remove(SIGNATURE_HEADER);
        let err = provider
            .verify_webhook(&headers, &body, at(NOW))
            .unwrap_err();
        assert!(matches!(err, BillingError::WebhookSignature(_)), "{err:?}");
    }

    #[test]
    fn malformed_body_after_good_signature_is_a_validation_error() {
        let provider = SimulatedCardProvider::new(WebhookSecret::generate());
        for body in [&b"not json"[..], br#"{"id":"evt_1"}"#, b""] {
            let mut headers = WebhookHeaders::new();
            headers.insert(
                SIGNATURE_HEADER,
                sign_webhook(provider.secret(), body, at(NOW)),
            );
            let err = provider
                .verify_webhook(&headers, body, at(NOW))
                .unwrap_err();
            assert!(matches!(err, BillingError::Validation { .. }), "{err:?}");
        }
    }

    #[tokio::test]
    async fn providers_work_behind_arc_and_box_dyn() {
        let providers: Vec<Arc<dyn PaymentProvider>> = vec![
            Arc::new(ManualProvider::default()),
            Arc::new(SimulatedCardProvider::new(WebhookSecret::generate())),
        ];
        let names: Vec<&str> = providers.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["manual", "simulated_card"]);
        let shared = Arc::clone(&providers[1]);
        assert!(matches!(
            shared.collect(&request("k")).await.unwrap(),
            PaymentOutcome::Succeeded { .. }
        ));
        let boxed: Box<dyn PaymentProvider> = Box::new(ManualProvider::default());
        assert!(matches!(
            boxed.collect(&request("k")).await.unwrap(),
            PaymentOutcome::Pending { .. }
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_headers_are_rejected_without_panicking(header in "\\PC{0,200}") {
            let secret = WebhookSecret::from_bytes(vec![7; 32]).unwrap();
            prop_assert!(matches!(
                verify(&secret, &header, BODY),
                Err(BillingError::WebhookSignature(_))
            ));
        }

        #[test]
        fn mutated_signed_headers_are_rejected_without_panicking(
            position in 0_usize..200,
            replacement in prop::sample::select(vec!['0', '9', 'a', 'f', 'g', 'A', ',', '=', ' ', 'v', 't', '-']),
        ) {
            let secret = WebhookSecret::from_bytes(vec![7; 32]).unwrap();
            let header = sign_webhook(&secret, BODY, at(NOW));
            let position = position % header.len();
            let mut chars: Vec<char> = header.chars().collect();
            prop_assume!(chars[position] != replacement);
            chars[position] = replacement;
            let mutated: String = chars.into_iter().collect();
            // Spaces around elements are tolerated; anything else changed
            // breaks the header or the signature.
            let unchanged = mutated.split(',').map(str::trim).collect::<Vec<_>>().join(",") == header;
            let result = verify(&secret, &mutated, BODY);
            if unchanged {
                prop_assert!(result.is_ok());
            } else {
                prop_assert!(matches!(result, Err(BillingError::WebhookSignature(_))), "{mutated}: {result:?}");
            }
        }
    }
}
