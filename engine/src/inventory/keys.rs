//! Client keys: a request that comes back with the key it came with gets the first answer again,
//! and one with another request under the same key is refused. Keys are fingerprinted,
//! remembered when their record applies, and forgotten by age and by count.

use std::hash::{Hash, Hasher};

use super::spec::check_string;
use super::*;

/// Fingerprint of a request for idempotency: FNV-1a over its `Hash` feed. FNV has fixed constants,
/// so a fingerprint stored in a snapshot matches the same request after a restart.
fn fingerprint<T: Hash>(value: &T) -> u64 {
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    value.hash(&mut h);
    h.finish()
}

/// A request's client key: where its first answer is kept, and what goes into the record.
pub(super) struct Keyed {
    pub(super) id: KeyId,
    pub(super) record: KeyRecord,
}

/// Checks a request's optional client key and, if there is one, fingerprints the request (only
/// then: the hash is not free on the hot path).
pub(super) fn keyed<T: Hash>(
    scope: KeyScope,
    owner: &str,
    key: &Option<String>,
    request: &T,
    limits: &Limits,
) -> Result<Option<Keyed>, Rejection> {
    let Some(key) = key else {
        return Ok(None);
    };
    check_string("idempotency key", key, limits)?;
    Ok(Some(Keyed {
        id: KeyId {
            scope,
            owner: owner.to_string(),
            key: key.clone(),
        },
        record: KeyRecord {
            key: key.clone(),
            fingerprint: fingerprint(request),
        },
    }))
}

impl Inventory {
    /// The first answer to a reservation whose client key was seen before, if it was. Changes
    /// nothing: for a caller that may not make new holds now but must still repeat old answers.
    pub fn repeated_reserve(
        &self,
        req: &ReserveRequest,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<Option<Hold>, Rejection> {
        Ok(self.reserve_key(req, now_ms, limits)?.1)
    }

    /// A reservation's checked client key, and the first answer if the key repeats.
    pub(super) fn reserve_key(
        &self,
        req: &ReserveRequest,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<(Option<Keyed>, Option<Hold>), Rejection> {
        check_string("customer id", &req.customer, limits)?;
        let keyed = keyed(
            KeyScope::Reserve,
            &req.customer,
            &req.idempotency_key,
            req,
            limits,
        )?;
        match self.repeat(keyed.as_ref(), now_ms, limits)? {
            Some(Answer::Hold(hold)) => Ok((keyed, Some(hold))),
            _ => Ok((keyed, None)),
        }
    }

    /// Keeps the first answer to a keyed request, for its retries.
    pub(super) fn remember(
        &mut self,
        scope: KeyScope,
        owner: &str,
        key: &KeyRecord,
        at_ms: u64,
        answer: Answer,
    ) {
        let id = KeyId {
            scope,
            owner: owner.to_string(),
            key: key.key.clone(),
        };
        self.text_bytes += 2 * id.text();
        self.key_queue.push_back((at_ms, id.clone()));
        let text = id.text();
        let replaced = self.keys.insert(
            id,
            KeyEntry {
                fingerprint: key.fingerprint,
                at_ms,
                answer,
            },
        );
        if replaced.is_some() {
            self.text_bytes -= text;
        }
    }

    /// The stored first answer for a retried key, `Err` if the key came with another request,
    /// An order command's checked client key, and the order it answered first if the key
    /// repeats: confirm, cancel and refund share it.
    pub(super) fn order_key<T: Hash>(
        &self,
        scope: KeyScope,
        key: &Option<String>,
        request: &T,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<(Option<Keyed>, Option<Order>), Rejection> {
        let keyed = keyed(scope, "", key, request, limits)?;
        let first = match self.repeat(keyed.as_ref(), now_ms, limits)? {
            Some(Answer::Order(order)) => Some(*order),
            _ => None,
        };
        Ok((keyed, first))
    }

    /// `None` for a new key (or none).
    pub(super) fn repeat(
        &self,
        keyed: Option<&Keyed>,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<Option<Answer>, Rejection> {
        let Some((keyed, entry)) = keyed.and_then(|k| Some((k, self.keys.get(&k.id)?))) else {
            return Ok(None);
        };
        // Pruning may lag; a key past its retention reads as unknown all the same.
        if entry.at_ms.saturating_add(limits.idempotency_retention_ms) < now_ms {
            return Ok(None);
        }
        if entry.fingerprint != keyed.record.fingerprint {
            return Err(Rejection::IdempotencyKeyReused);
        }
        Ok(Some(entry.answer.clone()))
    }

    /// Forgets the key at the front of the queue, unless the queue's entry is stale (the key was
    /// remembered again later).
    fn forget_oldest_key(&mut self) {
        let (at, id) = self.key_queue.pop_front().expect("front exists");
        self.text_bytes -= id.text();
        if self.keys.get(&id).is_some_and(|e| e.at_ms == at) {
            self.keys.remove(&id);
            self.text_bytes -= id.text();
        }
    }

    /// Forgets client keys older than their retention (and the oldest past
    /// `limits.max_keys_per_event`) and ended-hold notes older than theirs. Not logged: it runs
    /// before every decision, so a forgotten key is gone whether a restart replays it or not.
    pub fn prune(&mut self, now_ms: u64, limits: &Limits) {
        let horizon = now_ms.saturating_sub(limits.idempotency_retention_ms);
        while let Some((at, _)) = self.key_queue.front() {
            if *at >= horizon {
                break;
            }
            self.forget_oldest_key();
        }
        while self.keys.len() > limits.max_keys_per_event {
            self.forget_oldest_key();
        }
        self.ended.prune(
            now_ms,
            limits.ended_hold_retention_ms,
            limits.max_ended_hold_notes,
        );
    }
}
