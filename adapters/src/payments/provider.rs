//! Payment providers, chosen per order by the scheme of its payment reference (`test:approve` is
//! provider `test`) or, for a reference without a known scheme, by `--default-provider`. Every
//! call carries an idempotency key (the order id for a charge), so a call repeated after a crash
//! finds the payment already made instead of making a second one.
//!
//! `webhook` creates the payment at the provider's HTTP API and learns the outcome from its
//! webhook (`super::webhook`; a `webhook:` reference).
//!
//! `wallet` debits the customer's prepaid balance (`super::wallet`; a `wallet:` reference).
//!
//! `test` gives outcomes decided by the reference, for storefront integration tests:
//! - `test:approve` (or `test:` anything not below): approved for the order's total;
//! - `test:decline`: declined, "card declined";
//! - `test:fail-then-approve`: the first attempt per order fails as a provider outage would
//!   (retried by the adapter), then approved;
//! - `test:slow`: approved after 2 s.
//!
//! It keeps what it charged and refunded in the adapter's ledger database (tree `test_provider`),
//! the way a real provider keeps its own records, so `boxoffice-payments charges` can show that
//! no order was charged twice.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ledger::{Ledger, LedgerError};
use super::wallet::Wallet;
use super::webhook::WebhookProvider;

/// What a charge came to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    Approved {
        provider_ref: String,
        amount_minor: u64,
        currency: String,
    },
    Declined {
        reason: String,
    },
    /// Created at the provider; the outcome comes later (a webhook, or reconciliation).
    Pending {
        provider_ref: String,
    },
}

/// Why a call did not come to an outcome; the adapter retries it.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// A charge to make.
#[derive(Clone, Debug)]
pub struct ChargeRequest {
    /// The idempotency key: the order id.
    pub key: String,
    /// The order's customer id and event id.
    pub customer: String,
    pub event_id: String,
    pub reference: String,
    pub amount_minor: u64,
    pub currency: String,
}

/// The providers the adapter speaks.
#[derive(Clone)]
pub enum Provider {
    Test(TestProvider),
    Wallet(Wallet),
    Webhook(WebhookProvider),
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Test(_) => "test",
            Provider::Wallet(_) => "wallet",
            Provider::Webhook(_) => "webhook",
        }
    }

    pub async fn charge(&self, request: &ChargeRequest) -> Result<Outcome, ProviderError> {
        match self {
            Provider::Test(p) => p.charge(request).await,
            Provider::Wallet(w) => Ok(w.debit(
                &request.key,
                &request.customer,
                request.amount_minor,
                &request.currency,
            )?),
            Provider::Webhook(w) => {
                let payment = w.create(request, &request.event_id).await?;
                Ok(payment.outcome().unwrap_or(Outcome::Pending {
                    provider_ref: payment.id,
                }))
            }
        }
    }

    /// Gives `amount_minor` of payment `provider_ref` back; `key` makes a repeat harmless.
    pub async fn refund(
        &self,
        key: &str,
        provider_ref: &str,
        amount_minor: u64,
    ) -> Result<(), ProviderError> {
        match self {
            Provider::Test(p) => p.refund(key, provider_ref, amount_minor),
            Provider::Wallet(w) => Ok(w.credit(key, provider_ref, amount_minor)?),
            Provider::Webhook(w) => w.refund(key, provider_ref, amount_minor).await,
        }
    }
}

/// The deterministic provider.
#[derive(Clone)]
pub struct TestProvider {
    ledger: Arc<Ledger>,
    /// Orders whose first attempt already failed (`test:fail-then-approve`).
    failed_once: Arc<Mutex<HashSet<String>>>,
}

/// How long `test:slow` takes.
pub const SLOW: Duration = Duration::from_secs(2);

impl TestProvider {
    pub fn new(ledger: Arc<Ledger>) -> TestProvider {
        TestProvider {
            ledger,
            failed_once: Arc::default(),
        }
    }

    async fn charge(&self, request: &ChargeRequest) -> Result<Outcome, ProviderError> {
        let stored = format!("charge:{}", request.key);
        if let Some(previous) = self.ledger.provider_get(&stored)? {
            return postcard::from_bytes(&previous).map_err(|e| {
                ProviderError::Ledger(LedgerError::new(format!("charge {stored}: {e}")))
            });
        }
        let token = request
            .reference
            .split_once(':')
            .map_or(request.reference.as_str(), |(_, t)| t);
        let outcome = match token {
            "decline" => Outcome::Declined {
                reason: "card declined".into(),
            },
            "fail-then-approve"
                if self
                    .failed_once
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(request.key.clone()) =>
            {
                return Err(ProviderError::Unavailable(
                    "test provider: the first attempt fails".into(),
                ));
            }
            "slow" => {
                tokio::time::sleep(SLOW).await;
                approved(request)
            }
            _ => approved(request),
        };
        let bytes = postcard::to_allocvec(&outcome).expect("an outcome encodes");
        self.ledger.provider_put(&stored, &bytes)?;
        Ok(outcome)
    }

    fn refund(
        &self,
        key: &str,
        provider_ref: &str,
        amount_minor: u64,
    ) -> Result<(), ProviderError> {
        let stored = format!("refund:{key}");
        if self.ledger.provider_get(&stored)?.is_none() {
            self.ledger
                .provider_put(&stored, format!("{provider_ref} {amount_minor}").as_bytes())?;
        }
        Ok(())
    }
}

fn approved(request: &ChargeRequest) -> Outcome {
    Outcome::Approved {
        // Derived from the key: the same charge has the same id however often it is asked for.
        provider_ref: format!("tst_{}", request.key.replace('-', "")),
        amount_minor: request.amount_minor,
        currency: request.currency.clone(),
    }
}

/// The provider for a payment reference: its scheme's, else `default`.
pub fn for_reference<'a>(
    providers: &'a [Provider],
    default: &'a Provider,
    reference: &str,
) -> &'a Provider {
    let scheme = reference.split_once(':').map(|(s, _)| s);
    providers
        .iter()
        .find(|p| Some(p.name()) == scheme)
        .unwrap_or(default)
}
