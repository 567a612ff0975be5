//! The email adapter's own durable state, in sled under its data directory: every send (one email:
//! order, kind, address, what it was made from, and how far it got), the events it has read (for
//! the names and times in notices), each order's rendered tickets (for a resend) and the orders
//! refunded (whose tickets are no longer sent).
//!
//! It is what makes the adapter send at most once: a send is recorded as `Sending` and flushed
//! before the SMTP server is asked, and as `Sent` (flushed) after it answered. A send found
//! `Sending` at start was under way when the adapter stopped: it becomes `Unknown`, for an
//! operator, and is never sent again by itself; one an operator's call left `Retrying` is
//! parked.

use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("mail ledger: {0}")]
pub struct LedgerError(String);

fn sled_error(e: std::io::Error) -> LedgerError {
    LedgerError(format!("state database: {e}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Sending,
    Retrying,
    Sent,
    Parked,
    Unknown,
}

/// What an email is made from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// An encoded `boxoffice.v1.TicketsRendered`: the tickets, with the PDF attached.
    Tickets(Vec<u8>),
    /// An encoded `boxoffice.v1.Order` and its encoded `boxoffice.v1.Event` (empty if the
    /// adapter never read it): a notice.
    Order { order: Vec<u8>, event: Vec<u8> },
}

/// One email.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    pub order_id: String,
    pub event_id: String,
    /// `tickets`, `cancelled`, `unpaid`, `refunded` or `resend:<request id>`.
    pub kind: String,
    pub to: String,
    /// The contact's language tag; empty: the default.
    pub language: String,
    pub source: Source,
    pub state: State,
    pub attempts: u32,
    /// The SMTP server's last answer or error, or why it was parked.
    pub detail: String,
    pub updated_at_ms: u64,
    /// Order of making, across the adapter: sends of an order are listed in it.
    pub seq: u64,
    /// Whether an operator's call (a resend, a retry) drives it rather than a message: such a
    /// send left RETRYING by a stop has no message to bring it back, so it is parked at start.
    pub by_operator: bool,
}

/// sled 1.0's handles are not `Sync`, so the trees sit behind a mutex. A flush (twice per email:
/// before and after the SMTP server is asked) runs on a handle of its own, outside that mutex, and
/// is shared: sends that ask for one while another is under way wait for the next, which covers
/// them all (group commit), so parallel sends do not queue for an fsync each.
pub struct Ledger {
    trees: Mutex<Trees>,
    /// Flushes asked for so far; each asker's changes were made before it counted itself.
    asked: std::sync::atomic::AtomicU64,
    /// The count of `asked` read before the last finished flush began: every asker up to it is
    /// durable.
    flushed: Mutex<u64>,
}

struct Trees {
    db: sled::Db,
    /// `<order id>/<kind>` -> `Send`.
    sends: sled::Tree,
    /// event id -> encoded `boxoffice.v1.Event`.
    events: sled::Tree,
    /// order id -> encoded `boxoffice.v1.TicketsRendered`.
    tickets: sled::Tree,
    /// order id -> (nothing): orders whose `OrderRefunded` was read.
    refunded: sled::Tree,
    /// The next `Send::seq`: one past the highest stored.
    next_seq: u64,
}

fn key(order_id: &str, kind: &str) -> Vec<u8> {
    format!("{order_id}/{kind}").into_bytes()
}

fn decode(bytes: &[u8]) -> Result<Send, LedgerError> {
    postcard::from_bytes(bytes).map_err(|e| LedgerError(format!("a stored send is corrupt: {e}")))
}

/// zstd's fast level for the leaves sled compresses at every flush, as the engine's log: sends
/// are keyed by order ids, which grow with time, so each flush compresses the last leaf again
/// (measured with `boxoffice-bench email`). The leaves keep sled's default size: sled refuses to
/// open a database with another one than it was made with, and ledgers made before must open.
const ZSTD_LEVEL: i32 = -5;

impl Ledger {
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        let db: sled::Db = sled::Config::new()
            .path(dir)
            // Flushed when a send needs it; no timer of its own.
            .flush_every_ms(None)
            .zstd_compression_level(ZSTD_LEVEL)
            .open()
            .map_err(|e| LedgerError(format!("cannot open {}: {e}", dir.display())))?;
        let tree = |name: &str| db.open_tree(name).map_err(sled_error);
        let sends = tree("sends")?;
        let mut next_seq = 0;
        for item in sends.iter() {
            let (_, v) = item.map_err(sled_error)?;
            next_seq = next_seq.max(decode(&v)?.seq + 1);
        }
        Ok(Ledger {
            trees: Mutex::new(Trees {
                sends,
                events: tree("events")?,
                tickets: tree("tickets")?,
                refunded: tree("refunded")?,
                next_seq,
                db,
            }),
            asked: std::sync::atomic::AtomicU64::new(0),
            flushed: Mutex::new(0),
        })
    }

    fn trees(&self) -> std::sync::MutexGuard<'_, Trees> {
        self.trees.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every change recorded before the call durable (blocking). One flush at a time; a
    /// caller that finds a flush begun after it asked already done returns without its own.
    pub fn flush(&self) -> Result<(), LedgerError> {
        use std::sync::atomic::Ordering::SeqCst;
        let ticket = self.asked.fetch_add(1, SeqCst) + 1;
        let mut flushed = self.flushed.lock().unwrap_or_else(|e| e.into_inner());
        if *flushed >= ticket {
            return Ok(());
        }
        // Everyone counted so far made their changes before counting: this flush covers them.
        let upto = self.asked.load(SeqCst);
        let db = self.trees().db.clone();
        db.flush().map_err(sled_error)?;
        *flushed = upto;
        Ok(())
    }

    pub fn send(&self, order_id: &str, kind: &str) -> Result<Option<Send>, LedgerError> {
        match self
            .trees()
            .sends
            .get(key(order_id, kind))
            .map_err(sled_error)?
        {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Records `send` (not flushed).
    pub fn put_send(&self, send: &Send) -> Result<(), LedgerError> {
        let bytes = postcard::to_stdvec(send).expect("in-memory encoding cannot fail");
        self.trees()
            .sends
            .insert(key(&send.order_id, &send.kind), bytes)
            .map_err(sled_error)?;
        Ok(())
    }

    /// The next number in the order of making.
    pub fn next_seq(&self) -> u64 {
        let mut trees = self.trees();
        trees.next_seq += 1;
        trees.next_seq - 1
    }

    /// An order's sends, in the order they were made.
    pub fn sends_of(&self, order_id: &str) -> Result<Vec<Send>, LedgerError> {
        let trees = self.trees();
        let mut sends = Vec::new();
        for item in trees.sends.scan_prefix(format!("{order_id}/").as_bytes()) {
            let (_, v) = item.map_err(sled_error)?;
            sends.push(decode(&v)?);
        }
        sends.sort_by_key(|s| s.seq);
        Ok(sends)
    }

    /// Sends in any of `states`, at most `limit`, oldest first.
    pub fn sends_in(&self, states: &[State], limit: usize) -> Result<Vec<Send>, LedgerError> {
        let trees = self.trees();
        let mut sends = Vec::new();
        for item in trees.sends.iter() {
            let (_, v) = item.map_err(sled_error)?;
            let send = decode(&v)?;
            if states.contains(&send.state) {
                sends.push(send);
            }
        }
        sends.sort_by_key(|s| s.seq);
        sends.truncate(limit);
        Ok(sends)
    }

    pub fn put_event(&self, event_id: &str, event: &[u8]) -> Result<(), LedgerError> {
        self.trees()
            .events
            .insert(event_id.as_bytes(), event)
            .map_err(sled_error)?;
        Ok(())
    }

    pub fn event(&self, event_id: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        Ok(self
            .trees()
            .events
            .get(event_id.as_bytes())
            .map_err(sled_error)?
            .map(|v| v.to_vec()))
    }

    pub fn put_tickets(&self, order_id: &str, rendered: &[u8]) -> Result<(), LedgerError> {
        self.trees()
            .tickets
            .insert(order_id.as_bytes(), rendered)
            .map_err(sled_error)?;
        Ok(())
    }

    pub fn tickets(&self, order_id: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        Ok(self
            .trees()
            .tickets
            .get(order_id.as_bytes())
            .map_err(sled_error)?
            .map(|v| v.to_vec()))
    }

    /// Notes that `order_id` was refunded (not flushed: the send it comes with is).
    pub fn put_refunded(&self, order_id: &str) -> Result<(), LedgerError> {
        self.trees()
            .refunded
            .insert(order_id.as_bytes(), [0u8; 0])
            .map_err(sled_error)?;
        Ok(())
    }

    pub fn refunded(&self, order_id: &str) -> Result<bool, LedgerError> {
        self.trees()
            .refunded
            .contains_key(order_id.as_bytes())
            .map_err(sled_error)
    }

    /// At start: every send left `Sending` by a stop becomes `Unknown`, and every send an
    /// operator drove left `Retrying` becomes `Parked` (one a message drove goes on when the
    /// message comes again: its offset was not committed), flushed. Returns how many became
    /// `Unknown`.
    pub fn settle_interrupted(&self, now_ms: u64) -> Result<usize, LedgerError> {
        let mut interrupted = self.sends_in(&[State::Sending, State::Retrying], usize::MAX)?;
        interrupted.retain(|s| s.state == State::Sending || s.by_operator);
        let mut unknown = 0;
        for send in &interrupted {
            let (state, detail) = if send.state == State::Sending {
                unknown += 1;
                (
                    State::Unknown,
                    "the adapter stopped while handing it to the SMTP server: it may or may not \
                     have gone out",
                )
            } else {
                (
                    State::Parked,
                    "the adapter stopped between two attempts; retry it",
                )
            };
            self.put_send(&Send {
                state,
                detail: format!("{detail} (last: {})", send.detail),
                updated_at_ms: now_ms,
                ..send.clone()
            })?;
        }
        self.flush()?;
        Ok(unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(order: &str, kind: &str, state: State, seq: u64) -> Send {
        Send {
            order_id: order.into(),
            event_id: "e".into(),
            kind: kind.into(),
            to: "ana@example.com".into(),
            language: String::new(),
            source: Source::Tickets(vec![1, 2]),
            state,
            attempts: 1,
            detail: String::new(),
            updated_at_ms: 1,
            seq,
            by_operator: kind.starts_with("resend:"),
        }
    }

    #[test]
    fn a_send_left_sending_by_a_stop_is_unknown_after_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ledger = Ledger::open(dir.path()).unwrap();
            ledger
                .put_send(&send("o1", "tickets", State::Sent, 1))
                .unwrap();
            ledger
                .put_send(&send("o1", "resend:a", State::Sending, 2))
                .unwrap();
            ledger
                .put_send(&send("o2", "tickets", State::Parked, 3))
                .unwrap();
            // Driven by a message: goes on when it comes again.
            ledger
                .put_send(&send("o3", "tickets", State::Retrying, 4))
                .unwrap();
            // Driven by an operator: nothing brings it back but another call.
            ledger
                .put_send(&send("o3", "resend:b", State::Retrying, 5))
                .unwrap();
            ledger.flush().unwrap();
        }
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.settle_interrupted(9).unwrap(), 1);
        let sends = ledger.sends_of("o1").unwrap();
        assert_eq!(
            sends
                .iter()
                .map(|s| (s.kind.as_str(), s.state))
                .collect::<Vec<_>>(),
            [("tickets", State::Sent), ("resend:a", State::Unknown)]
        );
        let waiting = ledger
            .sends_in(&[State::Parked, State::Unknown], 10)
            .unwrap();
        assert_eq!(waiting.len(), 3);
        assert_eq!(
            ledger.send("o3", "tickets").unwrap().unwrap().state,
            State::Retrying
        );
        assert_eq!(
            ledger.send("o3", "resend:b").unwrap().unwrap().state,
            State::Parked
        );
        assert!(ledger.send("o4", "tickets").unwrap().is_none());
    }
}
