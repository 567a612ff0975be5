//! The `webhook` provider: the redirect-and-callback kind (Stripe, Asaas, Mercado Pago). A charge
//! creates a payment at the provider's HTTP API (idempotency key = the order id); the outcome comes
//! later, in a webhook the provider sends to the adapter's own HTTP endpoint, or, if none comes, by
//! looking the payment up (reconciliation).
//!
//! Webhooks are signed in Stripe's scheme: header `Stripe-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "<t>.<raw body>">` (several `v1` during the provider's own rotation). The
//! signature is checked over the raw bytes received, in constant time, against every configured
//! secret (several during a rotation of ours), and `t` must lie within the tolerance of now, so a
//! captured webhook cannot be replayed later. Anything else is refused before the body is parsed.
//!
//! The provider's API, as this adapter speaks it (JSON):
//! - `POST {api}/v1/payments` with `Idempotency-Key`, body `{"amount_minor", "currency",
//!   "reference", "order_id", "event_id"}` -> `{"id", "status": "pending" | "succeeded" |
//!   "failed", "failure_message"?}`;
//! - `GET {api}/v1/payments/{id}` -> the same object;
//! - `POST {api}/v1/refunds` with `Idempotency-Key`, body `{"payment", "amount_minor"}`.
//!
//! A webhook's body: `{"type": "payment.updated", "data": <the payment object>}`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::provider::{ChargeRequest, Outcome, ProviderError};

/// The header a signature comes in.
pub const SIGNATURE_HEADER: &str = "stripe-signature";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header is not t=<unix>,v1=<hex>")]
    Malformed,
    #[error("the signature's time is {age_s} s from now, past the tolerance of {tolerance_s} s")]
    Stale { age_s: u64, tolerance_s: u64 },
    #[error("no signature matches a configured secret")]
    Mismatch,
}

/// At most this many `v1` signatures in one header.
const MAX_SIGNATURES: usize = 8;

/// Shortest signing secret accepted, bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// HMAC-SHA256 of `"<t>.<body>"` under `secret`.
fn mac(secret: &str, t: u64, body: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The header value that signs `body` at unix time `t` with `secret`.
pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    let hex: String = mac(secret, t, body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Checks a webhook's signature header against `secrets`, over the raw `body`.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[String],
    now_s: u64,
    tolerance_s: u64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<u64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) => {
                // A SHA-256 MAC, no more than a few: the check's cost is bounded before any MAC.
                if v.len() != 64 || signatures.len() == MAX_SIGNATURES {
                    return Err(SignatureError::Malformed);
                }
                let bytes: [u8; 32] = unhex(v)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(SignatureError::Malformed)?;
                signatures.push(bytes);
            }
            Some(_) => {} // other schemes (v0) are ignored, as Stripe's own libraries do
            None => return Err(SignatureError::Malformed),
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age_s = now_s.abs_diff(t);
    if age_s > tolerance_s {
        return Err(SignatureError::Stale { age_s, tolerance_s });
    }
    let mut matched = subtle::Choice::from(0);
    for secret in secrets {
        let expected: [u8; 32] = mac(secret, t, body);
        for signature in &signatures {
            // Constant time; every pair is compared, so the time says nothing of which matched.
            matched |= expected.ct_eq(signature);
        }
    }
    let matched = bool::from(matched);
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// A payment at the provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderPayment {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub failure_message: Option<String>,
    #[serde(default)]
    pub amount_minor: u64,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub order_id: String,
}

impl ProviderPayment {
    /// The outcome, or `None` while it is pending.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.status.as_str() {
            "succeeded" => Some(Outcome::Approved {
                provider_ref: self.id.clone(),
                amount_minor: self.amount_minor,
                currency: self.currency.clone(),
            }),
            "failed" | "canceled" => Some(Outcome::Declined {
                reason: self
                    .failure_message
                    .clone()
                    .unwrap_or_else(|| "declined by the provider".into()),
            }),
            _ => None,
        }
    }
}

/// A webhook's body.
#[derive(Clone, Debug, Deserialize)]
pub struct WebhookEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub data: ProviderPayment,
}

/// The provider's API client.
#[derive(Clone)]
pub struct WebhookProvider {
    client: reqwest::Client,
    api: String,
    api_key: String,
}

impl WebhookProvider {
    pub fn new(api: &str, api_key: &str) -> anyhow::Result<WebhookProvider> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(WebhookProvider {
            client,
            api: api.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
        })
    }

    fn unavailable(e: impl std::fmt::Display) -> ProviderError {
        ProviderError::Unavailable(format!("webhook provider: {e}"))
    }

    async fn answer(response: reqwest::Response) -> Result<ProviderPayment, ProviderError> {
        let status = response.status();
        if !status.is_success() {
            return Err(Self::unavailable(format!("HTTP {status}")));
        }
        response.json().await.map_err(Self::unavailable)
    }

    /// Creates the payment (or finds the one made before under the same key).
    pub async fn create(
        &self,
        request: &ChargeRequest,
        event_id: &str,
    ) -> Result<ProviderPayment, ProviderError> {
        let response = self
            .client
            .post(format!("{}/v1/payments", self.api))
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", &request.key)
            .json(&serde_json::json!({
                "amount_minor": request.amount_minor,
                "currency": request.currency,
                "reference": request.reference,
                "order_id": request.key,
                "event_id": event_id,
            }))
            .send()
            .await
            .map_err(Self::unavailable)?;
        Self::answer(response).await
    }

    /// The payment as the provider has it now.
    pub async fn lookup(&self, id: &str) -> Result<ProviderPayment, ProviderError> {
        let response = self
            .client
            .get(format!("{}/v1/payments/{id}", self.api))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .map_err(Self::unavailable)?;
        Self::answer(response).await
    }

    pub async fn refund(
        &self,
        key: &str,
        provider_ref: &str,
        amount_minor: u64,
    ) -> Result<(), ProviderError> {
        let response = self
            .client
            .post(format!("{}/v1/refunds", self.api))
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({ "payment": provider_ref, "amount_minor": amount_minor }))
            .send()
            .await
            .map_err(Self::unavailable)?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(Self::unavailable(format!("HTTP {}", response.status())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn signatures_are_checked_over_the_raw_body_with_every_secret_and_a_tolerance() {
        let body = br#"{"type":"payment.updated","data":{"id":"pay_1","status":"succeeded"}}"#;
        let secrets = vec!["whsec_old".to_string(), "whsec_new".to_string()];
        let good = sign("whsec_new", NOW, body);
        assert_eq!(verify(Some(&good), body, &secrets, NOW + 10, 300), Ok(()));
        // The old secret, during our rotation.
        let old = sign("whsec_old", NOW, body);
        assert_eq!(verify(Some(&old), body, &secrets, NOW, 300), Ok(()));
        // Several v1 during the provider's rotation: one matching is enough.
        let wrong = sign("whsec_other", NOW, body);
        let both = format!("{good},v1={}", wrong.rsplit("v1=").next().unwrap());
        assert_eq!(verify(Some(&both), body, &secrets, NOW, 300), Ok(()));
        for (header, body, expected) in [
            (Some(wrong.as_str()), &body[..], SignatureError::Mismatch),
            (
                Some(good.as_str()),
                &br#"{"type":"payment.updated","data":{"id":"pay_2"}}"#[..],
                SignatureError::Mismatch,
            ),
            (None, &body[..], SignatureError::Missing),
            (Some("v1=abcd"), &body[..], SignatureError::Malformed),
            (Some("t=1,v1=zz"), &body[..], SignatureError::Malformed),
            (Some("t=1,v1="), &body[..], SignatureError::Malformed),
            (Some("garbage"), &body[..], SignatureError::Malformed),
        ] {
            assert_eq!(verify(header, body, &secrets, NOW, 300), Err(expected));
        }
        assert_eq!(
            verify(Some(&good), body, &secrets, NOW + 301, 300),
            Err(SignatureError::Stale {
                age_s: 301,
                tolerance_s: 300
            })
        );
    }
}
