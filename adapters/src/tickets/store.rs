//! The ticket-file adapter's own durable state: the events it has read (`EventCreated`, for the
//! names and times printed on tickets), per order the file rendered (where it is, its size and
//! SHA-256) and whether its `TicketsRendered` was published, and the orders it could not render
//! (parked, with why), in sled under its data directory. The files themselves are in a directory
//! or a bucket (`crate::files`).
//!
//! It never reads or writes the engine's files; a file is written whole before it is recorded,
//! so a recorded file is always complete.

use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("ticket-file store: {0}")]
pub struct StoreError(String);

fn sled_error(e: std::io::Error) -> StoreError {
    StoreError(format!("state database: {e}"))
}

/// An order's rendered file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    pub event_id: String,
    /// Where the PDF is, as `files::Location::record` writes it: an absolute path (the only form
    /// before buckets, encoded the same) or `s3://bucket/key`.
    pub location: String,
    pub sha256: String,
    pub bytes: u64,
    pub tickets: u32,
    pub rendered_at_ms: u64,
    /// The encoded `boxoffice.v1.TicketsRendered` to publish.
    pub message: Vec<u8>,
    /// Whether the broker acknowledged `message`.
    pub published: bool,
}

/// An order that could not be rendered, kept for an operator (`boxoffice-tickets parked`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    pub event_id: String,
    pub why: String,
    pub at_ms: u64,
    /// The encoded `boxoffice.v1.Order`, to render again once the cause is fixed.
    pub order: Vec<u8>,
}

/// The state database. sled 1.0's handles are not `Sync`, so the trees sit behind a mutex; a
/// flush holds it for its fsync, once or twice per batch.
pub struct Store {
    trees: Mutex<Trees>,
    /// Entries of the `parked` tree, kept in step by `park` and `put_rendered`.
    parked: std::sync::atomic::AtomicUsize,
}

struct Trees {
    db: sled::Db,
    /// event id -> encoded `boxoffice.v1.Event`.
    events: sled::Tree,
    /// order id -> `Rendered`.
    rendered: sled::Tree,
    /// order id -> `Parked`.
    parked: sled::Tree,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("in-memory encoding cannot fail")
}

fn decode<T: for<'a> Deserialize<'a>>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError(format!("a stored {what} is corrupt: {e}")))
}

impl Store {
    /// Opens (or makes) the state database in `state`.
    pub fn open(state: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(state)
            .open()
            .map_err(|e| StoreError(format!("cannot open {}: {e}", state.display())))?;
        let tree = |name: &str| db.open_tree(name).map_err(sled_error);
        let trees = Trees {
            events: tree("events")?,
            rendered: tree("rendered")?,
            parked: tree("parked")?,
            db,
        };
        let parked = trees.parked.iter().count();
        Ok(Store {
            trees: Mutex::new(trees),
            parked: parked.into(),
        })
    }

    fn trees(&self) -> std::sync::MutexGuard<'_, Trees> {
        self.trees.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.trees().db.flush().map_err(sled_error)?;
        Ok(())
    }

    pub fn put_event(&self, event_id: &str, event: &[u8]) -> Result<(), StoreError> {
        self.trees()
            .events
            .insert(event_id.as_bytes(), event)
            .map_err(sled_error)?;
        Ok(())
    }

    pub fn event(&self, event_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .trees()
            .events
            .get(event_id.as_bytes())
            .map_err(sled_error)?
            .map(|v| v.to_vec()))
    }

    pub fn rendered(&self, order_id: &str) -> Result<Option<Rendered>, StoreError> {
        match self
            .trees()
            .rendered
            .get(order_id.as_bytes())
            .map_err(sled_error)?
        {
            Some(v) => Ok(Some(decode("rendered file", &v)?)),
            None => Ok(None),
        }
    }

    pub fn put_rendered(&self, order_id: &str, rendered: &Rendered) -> Result<(), StoreError> {
        let trees = self.trees();
        trees
            .rendered
            .insert(order_id.as_bytes(), encode(rendered))
            .map_err(sled_error)?;
        // Rendered now: no longer parked.
        if trees
            .parked
            .remove(order_id.as_bytes())
            .map_err(sled_error)?
            .is_some()
        {
            self.parked
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Every rendered order, with its record.
    pub fn all_rendered(&self) -> Result<Vec<(String, Rendered)>, StoreError> {
        let trees = self.trees();
        let mut all = Vec::new();
        for item in trees.rendered.iter() {
            let (k, v) = item.map_err(sled_error)?;
            all.push((
                String::from_utf8_lossy(&k).into_owned(),
                decode("rendered file", &v)?,
            ));
        }
        Ok(all)
    }

    pub fn park(&self, order_id: &str, parked: &Parked) -> Result<(), StoreError> {
        let before = self
            .trees()
            .parked
            .insert(order_id.as_bytes(), encode(parked))
            .map_err(sled_error)?;
        if before.is_none() {
            self.parked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// How many orders are parked now.
    pub fn parked_count(&self) -> usize {
        self.parked.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn parked(&self) -> Result<Vec<(String, Parked)>, StoreError> {
        let trees = self.trees();
        let mut all = Vec::new();
        for item in trees.parked.iter() {
            let (k, v) = item.map_err(sled_error)?;
            all.push((
                String::from_utf8_lossy(&k).into_owned(),
                decode("parked order", &v)?,
            ));
        }
        Ok(all)
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let event = "0190a5c8-0000-7000-8000-000000000001";
        let order = "0190a5c8-0000-7000-8000-000000000002";
        {
            let store = Store::open(&state).unwrap();
            store.put_event(event, b"event bytes").unwrap();
            store
                .park(
                    order,
                    &Parked {
                        event_id: event.into(),
                        why: "event unknown".into(),
                        at_ms: 1,
                        order: vec![1],
                    },
                )
                .unwrap();
            assert_eq!(store.parked().unwrap().len(), 1);
            assert_eq!(store.parked_count(), 1);
            let rendered = Rendered {
                event_id: event.into(),
                location: format!("s3://tickets/{event}/{order}.pdf"),
                sha256: hex(&Sha256::digest(b"%PDF-1.7 test")),
                bytes: 13,
                tickets: 1,
                rendered_at_ms: 5,
                message: vec![7],
                published: false,
            };
            store.put_rendered(order, &rendered).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(&state).unwrap();
        assert_eq!(store.event(event).unwrap().unwrap(), b"event bytes");
        let rendered = store.rendered(order).unwrap().unwrap();
        assert_eq!(rendered.sha256, hex(&Sha256::digest(b"%PDF-1.7 test")));
        assert_eq!(
            rendered.location,
            format!("s3://tickets/{event}/{order}.pdf")
        );
        assert!(store.parked().unwrap().is_empty(), "rendered: unparked");
        assert_eq!(store.parked_count(), 0);
    }

    /// A record written before buckets, with the file's path, reads as its location.
    #[test]
    fn a_record_with_a_path_reads_as_a_location() {
        #[derive(Serialize)]
        struct Before {
            event_id: String,
            path: std::path::PathBuf,
            sha256: String,
            bytes: u64,
            tickets: u32,
            rendered_at_ms: u64,
            message: Vec<u8>,
            published: bool,
        }
        let before = Before {
            event_id: "e".into(),
            path: "/srv/files/e/o.pdf".into(),
            sha256: "ab".into(),
            bytes: 13,
            tickets: 2,
            rendered_at_ms: 5,
            message: vec![7, 8],
            published: true,
        };
        let now: Rendered = decode("rendered file", &encode(&before)).unwrap();
        assert_eq!(now.location, "/srv/files/e/o.pdf");
        assert_eq!(
            (now.bytes, now.tickets, &now.message[..], now.published),
            (13, 2, &[7, 8][..], true)
        );
        assert_eq!(encode(&now), encode(&before), "encoded the same");
    }
}
