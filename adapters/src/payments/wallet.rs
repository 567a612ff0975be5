//! The wallet provider: prepaid balances per customer, kept in the adapter's ledger database.
//! Top-ups add, a paid order debits its total, a refund credits it back; every change is an
//! entry in the wallet's history. Each operation runs under the ledger's lock (read, check,
//! write), so concurrent debits never take a balance below zero, and each is keyed (the top-up's
//! idempotency key, the order id, the refund key) so a repeat finds the first answer.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ledger::{Ledger, LedgerError, WalletTrees};
use super::provider::Outcome;

/// Longest customer id or idempotency key taken, bytes.
pub const MAX_TEXT_BYTES: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Account {
    balance_minor: u64,
    currency: String,
    last_seq: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    TopUp,
    Debit,
    Credit,
}

/// One change of a balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub kind: EntryKind,
    pub amount_minor: u64,
    pub balance_after_minor: u64,
    pub order_id: String,
    pub at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("{0}")]
    Invalid(String),
    #[error("no wallet for customer `{0}`")]
    NotFound(String),
    #[error("the wallet holds {wallet}; a top-up in {asked} is refused")]
    Currency { wallet: String, asked: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// A balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub balance_minor: u64,
    pub currency: String,
}

#[derive(Clone)]
pub struct Wallet {
    ledger: Arc<Ledger>,
}

fn io(e: std::io::Error) -> LedgerError {
    LedgerError::from(e)
}

fn decode<T: for<'a> Deserialize<'a>>(bytes: &[u8], what: &str) -> Result<T, LedgerError> {
    postcard::from_bytes(bytes).map_err(|e| LedgerError::new(format!("wallet {what}: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("wallet values encode")
}

/// History key: customer length, customer, sequence (big-endian), so a customer's entries are
/// one ordered range.
fn history_key(customer: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + customer.len() + 8);
    key.extend_from_slice(&(customer.len() as u16).to_be_bytes());
    key.extend_from_slice(customer.as_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn check_text(what: &str, text: &str) -> Result<(), WalletError> {
    if text.is_empty() || text.len() > MAX_TEXT_BYTES {
        return Err(WalletError::Invalid(format!(
            "{what} must be 1 to {MAX_TEXT_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Adds an entry to the account and the history, under the caller's lock.
fn change(
    trees: &WalletTrees,
    customer: &str,
    account: &mut Account,
    kind: EntryKind,
    amount_minor: u64,
    order_id: &str,
) -> Result<(), LedgerError> {
    account.balance_minor = match kind {
        EntryKind::Debit => account
            .balance_minor
            .checked_sub(amount_minor)
            .expect("debits are checked against the balance first"),
        EntryKind::TopUp | EntryKind::Credit => account.balance_minor.saturating_add(amount_minor),
    };
    account.last_seq += 1;
    let entry = Entry {
        seq: account.last_seq,
        kind,
        amount_minor,
        balance_after_minor: account.balance_minor,
        order_id: order_id.to_string(),
        at_ms: crate::unix_ms(),
    };
    trees
        .history
        .insert(history_key(customer, entry.seq), encode(&entry))
        .map_err(io)?;
    trees
        .accounts
        .insert(customer.as_bytes(), encode(account))
        .map_err(io)?;
    Ok(())
}

impl Wallet {
    pub fn new(ledger: Arc<Ledger>) -> Wallet {
        Wallet { ledger }
    }

    /// Adds `amount_minor` to the customer's balance; the same `key` again repeats the first
    /// answer. Durable before it returns.
    pub fn top_up(
        &self,
        customer: &str,
        amount_minor: u64,
        currency: &str,
        key: &str,
    ) -> Result<Balance, WalletError> {
        check_text("customer_id", customer)?;
        check_text("idempotency_key", key)?;
        if amount_minor == 0 {
            return Err(WalletError::Invalid(
                "amount_minor must be at least 1".into(),
            ));
        }
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(WalletError::Invalid(
                "currency must be an ISO 4217 code such as EUR".into(),
            ));
        }
        let op = format!("topup:{customer}:{key}");
        let balance = self
            .ledger
            .with_wallet(|trees| -> Result<Balance, WalletError> {
                if let Some(first) = trees.ops.get(op.as_bytes()).map_err(io)? {
                    return Ok(decode(&first, "top-up")?);
                }
                let mut account = match trees.accounts.get(customer.as_bytes()).map_err(io)? {
                    Some(a) => decode::<Account>(&a, "account")?,
                    None => Account {
                        balance_minor: 0,
                        currency: currency.to_string(),
                        last_seq: 0,
                    },
                };
                if account.currency != currency {
                    return Err(WalletError::Currency {
                        wallet: account.currency,
                        asked: currency.to_string(),
                    });
                }
                change(
                    trees,
                    customer,
                    &mut account,
                    EntryKind::TopUp,
                    amount_minor,
                    "",
                )?;
                let balance = Balance {
                    balance_minor: account.balance_minor,
                    currency: account.currency,
                };
                trees
                    .ops
                    .insert(op.as_bytes(), encode(&balance))
                    .map_err(io)?;
                Ok(balance)
            })?;
        self.ledger.flush()?;
        Ok(balance)
    }

    pub fn balance(&self, customer: &str) -> Result<Balance, WalletError> {
        check_text("customer_id", customer)?;
        self.ledger.with_wallet(|trees| {
            let account = trees
                .accounts
                .get(customer.as_bytes())
                .map_err(io)?
                .ok_or_else(|| WalletError::NotFound(customer.to_string()))?;
            let account: Account = decode(&account, "account")?;
            Ok(Balance {
                balance_minor: account.balance_minor,
                currency: account.currency,
            })
        })
    }

    /// Up to `limit` entries before sequence `before` (all if `None`), newest first, and the
    /// sequence to continue from if there are more.
    pub fn history(
        &self,
        customer: &str,
        limit: usize,
        before: Option<u64>,
    ) -> Result<(Vec<Entry>, Option<u64>), WalletError> {
        self.balance(customer)?;
        self.ledger.with_wallet(|trees| {
            let from = history_key(customer, 0);
            let to = history_key(customer, before.unwrap_or(u64::MAX));
            let mut entries = Vec::new();
            for kv in trees.history.range(from..to).rev() {
                let (_, v) = kv.map_err(io)?;
                entries.push(decode::<Entry>(&v, "entry")?);
                if entries.len() > limit {
                    break;
                }
            }
            let next = (entries.len() > limit).then(|| {
                entries.truncate(limit);
                entries.last().map_or(0, |e| e.seq)
            });
            Ok((entries, next))
        })
    }

    /// Pays order `order_id` of `customer` from the balance: approved and debited if the balance
    /// covers it in its currency, declined otherwise. Repeated, it gives the first answer.
    pub fn debit(
        &self,
        order_id: &str,
        customer: &str,
        amount_minor: u64,
        currency: &str,
    ) -> Result<Outcome, LedgerError> {
        let op = format!("debit:{order_id}");
        self.ledger.with_wallet(|trees| {
            if let Some(first) = trees.ops.get(op.as_bytes()).map_err(io)? {
                return decode(&first, "debit");
            }
            let account = match trees.accounts.get(customer.as_bytes()).map_err(io)? {
                Some(a) => Some(decode::<Account>(&a, "account")?),
                None => None,
            };
            let outcome = match account {
                None => Outcome::Declined {
                    reason: "no wallet for this customer".into(),
                },
                Some(a) if a.currency != currency => Outcome::Declined {
                    reason: format!(
                        "the wallet holds {}, the order is in {currency}",
                        a.currency
                    ),
                },
                Some(a) if a.balance_minor < amount_minor => Outcome::Declined {
                    reason: "insufficient funds".into(),
                },
                Some(mut a) => {
                    change(
                        trees,
                        customer,
                        &mut a,
                        EntryKind::Debit,
                        amount_minor,
                        order_id,
                    )?;
                    let provider_ref = format!("wlt_{}", order_id.replace('-', ""));
                    trees
                        .ops
                        .insert(
                            format!("ref:{provider_ref}").as_bytes(),
                            customer.as_bytes(),
                        )
                        .map_err(io)?;
                    Outcome::Approved {
                        provider_ref,
                        amount_minor,
                        currency: currency.to_string(),
                    }
                }
            };
            trees
                .ops
                .insert(op.as_bytes(), encode(&outcome))
                .map_err(io)?;
            Ok(outcome)
        })
    }

    /// Gives `amount_minor` of payment `provider_ref` back to its customer, once per `key`.
    pub fn credit(
        &self,
        key: &str,
        provider_ref: &str,
        amount_minor: u64,
    ) -> Result<(), LedgerError> {
        let op = format!("credit:{key}");
        self.ledger.with_wallet(|trees| {
            if trees.ops.contains_key(op.as_bytes()).map_err(io)? {
                return Ok(());
            }
            let Some(customer) = trees
                .ops
                .get(format!("ref:{provider_ref}").as_bytes())
                .map_err(io)?
            else {
                return Err(LedgerError::new(format!(
                    "no wallet payment {provider_ref} to refund"
                )));
            };
            let customer = String::from_utf8_lossy(&customer).into_owned();
            let mut account: Account = decode(
                &trees
                    .accounts
                    .get(customer.as_bytes())
                    .map_err(io)?
                    .ok_or_else(|| LedgerError::new(format!("wallet of {customer} is gone")))?,
                "account",
            )?;
            let order_id = provider_ref.trim_start_matches("wlt_");
            change(
                trees,
                &customer,
                &mut account,
                EntryKind::Credit,
                amount_minor,
                order_id,
            )?;
            trees.ops.insert(op.as_bytes(), &[][..]).map_err(io)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_thousand_concurrent_debits_never_overdraw_and_a_refund_credits_once() {
        let dir = tempfile::tempdir().unwrap();
        let wallet = Wallet::new(Arc::new(Ledger::open(dir.path()).unwrap()));
        wallet.top_up("ana", 100, "EUR", "first").unwrap();
        // The same key again: the first answer, nothing added.
        assert_eq!(
            wallet
                .top_up("ana", 100, "EUR", "first")
                .unwrap()
                .balance_minor,
            100
        );
        let tasks: Vec<_> = (0..1_000)
            .map(|n| {
                let wallet = wallet.clone();
                tokio::spawn(async move {
                    wallet
                        .debit(&format!("order-{n}"), "ana", 1, "EUR")
                        .unwrap()
                })
            })
            .collect();
        let mut approved = Vec::new();
        for (n, task) in tasks.into_iter().enumerate() {
            if let Outcome::Approved { provider_ref, .. } = task.await.unwrap() {
                approved.push((n, provider_ref));
            }
        }
        assert_eq!(approved.len(), 100, "exactly the balance was spent");
        assert_eq!(wallet.balance("ana").unwrap().balance_minor, 0);
        // Repeats give the first answers.
        let (n, reference) = &approved[0];
        assert!(matches!(
            wallet
                .debit(&format!("order-{n}"), "ana", 1, "EUR")
                .unwrap(),
            Outcome::Approved { .. }
        ));
        assert_eq!(wallet.balance("ana").unwrap().balance_minor, 0);
        for _ in 0..3 {
            wallet.credit("refund-1", reference, 1).unwrap();
        }
        assert_eq!(wallet.balance("ana").unwrap().balance_minor, 1);
        let (entries, next) = wallet.history("ana", 5, None).unwrap();
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[0].kind, EntryKind::Credit);
        assert_eq!(entries[0].seq, 102);
        let (rest, _) = wallet.history("ana", 1_000, next).unwrap();
        assert_eq!(rest.len(), 97);
        assert_eq!(rest.last().unwrap().kind, EntryKind::TopUp);
        // Reopened, it is all there.
        drop(wallet);
        let wallet = Wallet::new(Arc::new(Ledger::open(dir.path()).unwrap()));
        assert_eq!(wallet.balance("ana").unwrap().balance_minor, 1);
    }

    #[test]
    fn bad_top_ups_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let wallet = Wallet::new(Arc::new(Ledger::open(dir.path()).unwrap()));
        wallet.top_up("bo", 10, "EUR", "k").unwrap();
        for (customer, amount, currency, key, why) in [
            ("", 1, "EUR", "k1", "customer_id"),
            ("bo", 0, "EUR", "k2", "amount_minor"),
            ("bo", 1, "eur", "k3", "currency"),
            ("bo", 1, "EUR", "", "idempotency_key"),
            ("bo", 1, "USD", "k4", "USD"),
        ] {
            let err = wallet.top_up(customer, amount, currency, key).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        assert!(wallet.top_up(&long, 1, "EUR", "k5").is_err());
        assert_eq!(wallet.balance("bo").unwrap().balance_minor, 10);
        assert!(matches!(
            wallet.balance("nobody"),
            Err(WalletError::NotFound(_))
        ));
    }
}
