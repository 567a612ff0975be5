//! The payment adapter's own durable state, in sled under its data directory: per order, the
//! result the provider gave and whether it was published; per refund, that it was made. It is
//! what makes the adapter idempotent per order across crashes: a result is recorded (and
//! flushed) before it is published, and an offset is committed only after both.
//!
//! It never holds card data or secrets: only outcomes and references.

use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("payment ledger: {0}")]
pub struct LedgerError(String);

impl LedgerError {
    pub fn new(what: String) -> LedgerError {
        LedgerError(what)
    }
}

impl From<std::io::Error> for LedgerError {
    fn from(e: std::io::Error) -> Self {
        LedgerError(e.to_string())
    }
}

/// What the adapter did about one order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub event_id: String,
    /// The encoded `boxoffice.v1.PaymentResult` to publish.
    pub result: Vec<u8>,
    /// Whether the broker acknowledged it.
    pub published: bool,
}

/// A payment created at a provider whose outcome has not come yet (the webhook provider).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub order_id: String,
    pub event_id: String,
    pub provider_ref: String,
    pub since_ms: u64,
}

/// A refund made at a provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub order_id: String,
    pub provider: String,
    pub provider_ref: String,
    pub amount_minor: u64,
}

/// sled 1.0's handles are `Send` but not `Sync`, so the trees sit behind a mutex; every use is a
/// short in-memory operation except `flush`, which holds it for an fsync (twice per batch, once
/// per top-up, twice per settled webhook).
pub struct Ledger(Mutex<Trees>);

struct Trees {
    db: sled::Db,
    charges: sled::Tree,
    refunds: sled::Tree,
    /// The test provider's own record of the payments it took and gave back.
    provider: sled::Tree,
    /// The wallet provider's balances, entries and operations done (`super::wallet`).
    wallet: WalletTrees,
    /// Payments pending at the webhook provider, by provider reference.
    pending: sled::Tree,
}

/// The wallet's trees, used under the ledger's lock so that each operation is atomic.
pub struct WalletTrees {
    pub accounts: sled::Tree,
    pub history: sled::Tree,
    pub ops: sled::Tree,
}

impl Ledger {
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        std::fs::create_dir_all(dir)?;
        let db: sled::Db = sled::Config::new()
            .path(dir)
            // Durability is the batch's flush, never a timer's.
            .flush_every_ms(None)
            .open()
            .map_err(|e| LedgerError(format!("cannot open {}: {e}", dir.display())))?;
        Ok(Ledger(Mutex::new(Trees {
            charges: db.open_tree("charges")?,
            refunds: db.open_tree("refunds")?,
            provider: db.open_tree("test_provider")?,
            pending: db.open_tree("pending")?,
            wallet: WalletTrees {
                accounts: db.open_tree("wallet_accounts")?,
                history: db.open_tree("wallet_history")?,
                ops: db.open_tree("wallet_ops")?,
            },
            db,
        })))
    }

    fn trees(&self) -> std::sync::MutexGuard<'_, Trees> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the wallet's trees with the ledger locked: no other ledger operation runs in
    /// between, so a read-check-write in `f` is atomic.
    pub fn with_wallet<R>(&self, f: impl FnOnce(&WalletTrees) -> R) -> R {
        f(&self.trees().wallet)
    }

    pub fn put_pending(&self, pending: &Pending) -> Result<(), LedgerError> {
        let bytes = postcard::to_allocvec(pending).expect("a pending payment encodes");
        self.trees()
            .pending
            .insert(pending.provider_ref.as_bytes(), bytes)?;
        Ok(())
    }

    pub fn pending(&self, provider_ref: &str) -> Result<Option<Pending>, LedgerError> {
        match self.trees().pending.get(provider_ref.as_bytes())? {
            None => Ok(None),
            Some(v) => postcard::from_bytes(&v)
                .map(Some)
                .map_err(|e| LedgerError(format!("pending {provider_ref}: {e}"))),
        }
    }

    pub fn remove_pending(&self, provider_ref: &str) -> Result<(), LedgerError> {
        self.trees().pending.remove(provider_ref.as_bytes())?;
        Ok(())
    }

    /// Every pending payment.
    pub fn pendings(&self) -> Result<Vec<Pending>, LedgerError> {
        self.trees()
            .pending
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                postcard::from_bytes(&v).map_err(|e| LedgerError(format!("pending: {e}")))
            })
            .collect()
    }

    /// A value the test provider stored under `key`.
    pub fn provider_get(&self, key: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        Ok(self
            .trees()
            .provider
            .get(key.as_bytes())?
            .map(|v| v.to_vec()))
    }

    pub fn provider_put(&self, key: &str, value: &[u8]) -> Result<(), LedgerError> {
        self.trees().provider.insert(key.as_bytes(), value)?;
        Ok(())
    }

    /// Every key the test provider stored, with its value.
    pub fn provider_entries(&self) -> Result<Vec<(String, Vec<u8>)>, LedgerError> {
        self.trees()
            .provider
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    pub fn charge(&self, order_id: &str) -> Result<Option<Charge>, LedgerError> {
        match self.trees().charges.get(order_id.as_bytes())? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| LedgerError(format!("charge of {order_id} does not decode: {e}"))),
        }
    }

    pub fn put_charge(&self, order_id: &str, charge: &Charge) -> Result<(), LedgerError> {
        let bytes = postcard::to_allocvec(charge).expect("a charge encodes");
        self.trees().charges.insert(order_id.as_bytes(), bytes)?;
        Ok(())
    }

    pub fn has_refund(&self, key: &str) -> Result<bool, LedgerError> {
        Ok(self.trees().refunds.contains_key(key.as_bytes())?)
    }

    pub fn put_refund(&self, key: &str, refund: &Refund) -> Result<(), LedgerError> {
        let bytes = postcard::to_allocvec(refund).expect("a refund encodes");
        self.trees().refunds.insert(key.as_bytes(), bytes)?;
        Ok(())
    }

    /// Makes everything written so far durable (fsync).
    pub fn flush(&self) -> Result<(), LedgerError> {
        self.trees().db.flush()?;
        Ok(())
    }

    /// Every charge, by order id.
    pub fn charges(&self) -> Result<Vec<(String, Charge)>, LedgerError> {
        self.trees()
            .charges
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let order = String::from_utf8_lossy(&k).into_owned();
                let charge = postcard::from_bytes(&v)
                    .map_err(|e| LedgerError(format!("charge of {order} does not decode: {e}")))?;
                Ok((order, charge))
            })
            .collect()
    }

    /// Every refund, by key.
    pub fn refunds(&self) -> Result<Vec<(String, Refund)>, LedgerError> {
        self.trees()
            .refunds
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let key = String::from_utf8_lossy(&k).into_owned();
                let refund = postcard::from_bytes(&v)
                    .map_err(|e| LedgerError(format!("refund {key} does not decode: {e}")))?;
                Ok((key, refund))
            })
            .collect()
    }
}
