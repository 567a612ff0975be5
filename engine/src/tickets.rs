//! Ticket tokens and the keys that sign them. A token is what a ticket's QR code holds: the
//! ticket's claims (ticket, event, tier, seat, holder) and an Ed25519 signature over them, so a
//! scanner with the public keys can tell a real ticket from a forged one without asking anyone.
//!
//! The keys live in a directory of their own (by default `<data_dir>/ticket-keys`), one file per
//! key, `ticket-key-<id>.ed25519`, holding the 32-byte secret in hex. The key with the highest id
//! signs new tickets; every key in the directory verifies, so a rotation (`TicketKeys::rotate`,
//! the `boxoffice rotate-ticket-key` command) keeps every ticket issued before it valid. This
//! module decides nothing about orders; the actor signs with it and the inventory records the
//! tokens, so a replay never needs a key.
//!
//! Token layout (version 1), all integers big-endian, then base64url without padding:
//!
//! ```text
//! u8 version = 1 | u32 key id | 16 bytes ticket id | 16 bytes event id
//! | tier code | section | row | number | holder      (each: u16 length, UTF-8 bytes)
//! | 64 bytes Ed25519 signature over everything before it
//! ```
//!
//! Section, row and number are empty for general admission.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use uuid::Uuid;

use crate::inventory::{EventId, SeatRef, TicketClaims, TicketId};

const VERSION: u8 = 1;
const SIGNATURE_BYTES: usize = 64;
/// The largest token accepted for verification, in base64 characters: five strings at the
/// largest `limits.max_string_bytes` (4,096) and the fixed parts.
pub const MAX_TOKEN_CHARS: usize = 28_000;

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not base64url")]
    Encoding,
    #[error("the token is truncated or malformed")]
    Malformed,
    #[error("the token has version {0}; this server reads version 1")]
    Version(u8),
    #[error("the token was signed with key {0}, which this server does not have")]
    UnknownKey(u32),
    #[error("the token's signature does not verify")]
    Signature,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("ticket key directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ticket key file {path}: {what}")]
    Bad { path: PathBuf, what: String },
    #[error("drawing a new ticket key: {0}")]
    Random(String),
}

/// A public key for scanners.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PublicKey {
    pub key_id: u32,
    pub key: [u8; 32],
}

/// The signing key in use and every key that verifies.
pub struct TicketKeys {
    active_id: u32,
    active: SigningKey,
    verifying: BTreeMap<u32, VerifyingKey>,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("TicketKeys")
            .field("active_id", &self.active_id)
            .field("key_ids", &self.verifying.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn key_file(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("ticket-key-{id}.ed25519"))
}

/// The key files in `dir`, by id.
fn read_keys(dir: &Path) -> Result<BTreeMap<u32, SigningKey>, KeyError> {
    let mut keys = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(id) = name
            .strip_prefix("ticket-key-")
            .and_then(|n| n.strip_suffix(".ed25519"))
        else {
            continue;
        };
        let bad = |what: &str| KeyError::Bad {
            path: path.clone(),
            what: what.to_string(),
        };
        let id: u32 = id.parse().map_err(|_| bad("the id is not a number"))?;
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        let secret = decode_hex(text.trim()).ok_or_else(|| bad("not 64 hex digits"))?;
        keys.insert(id, SigningKey::from_bytes(&secret));
    }
    Ok(keys)
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Writes key `id` with a fresh secret: temporary file, fsync, rename, fsync of the directory,
/// so a crash leaves either no key or the whole key.
fn write_new_key(dir: &Path, id: u32) -> Result<(), KeyError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let path = key_file(dir, id);
    let temporary = dir.join(format!(".ticket-key-{id}.tmp"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary).map_err(io(&temporary))?;
    file.write_all(format!("{hex}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(&temporary))?;
    fs::rename(&temporary, &path).map_err(io(&path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

impl TicketKeys {
    /// Opens the key directory, making it and a first key if there are none.
    pub fn open(dir: &Path) -> Result<TicketKeys, KeyError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut keys = read_keys(dir)?;
        if keys.is_empty() {
            write_new_key(dir, 1)?;
            keys = read_keys(dir)?;
        }
        let (&active_id, active) = keys.last_key_value().expect("at least one key");
        Ok(TicketKeys {
            active_id,
            active: active.clone(),
            verifying: keys
                .iter()
                .map(|(id, k)| (*id, k.verifying_key()))
                .collect(),
        })
    }

    /// Adds a key with the next id; it signs every ticket issued once the server is restarted,
    /// and the older keys keep verifying. Returns the new key's id.
    pub fn rotate(dir: &Path) -> Result<u32, KeyError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let keys = read_keys(dir)?;
        let next = keys.last_key_value().map_or(1, |(id, _)| id + 1);
        write_new_key(dir, next)?;
        Ok(next)
    }

    /// The id of the key that signs new tickets.
    pub fn active_id(&self) -> u32 {
        self.active_id
    }

    /// Every key that verifies, oldest first.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.verifying
            .iter()
            .map(|(id, k)| PublicKey {
                key_id: *id,
                key: k.to_bytes(),
            })
            .collect()
    }

    /// The token of a ticket, signed with the active key.
    pub fn sign(&self, claims: &TicketClaims) -> String {
        let mut bytes = claims_bytes(self.active_id, claims);
        let signature = self.active.sign(&bytes);
        bytes.extend_from_slice(&signature.to_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The claims of a token whose signature verifies with one of the keys.
    pub fn verify(&self, token: &str) -> Result<TicketClaims, TokenError> {
        verify_with(token, |id| self.verifying.get(&id).copied())
    }
}

/// Verifies a token with the keys `key` looks up by id; what a scanner holding the public keys
/// does.
pub fn verify_with(
    token: &str,
    key: impl Fn(u32) -> Option<VerifyingKey>,
) -> Result<TicketClaims, TokenError> {
    let bytes = decode(token)?;
    let (signed, signature) = bytes.split_at(bytes.len() - SIGNATURE_BYTES);
    let mut reader = Reader(signed);
    let (key_id, ticket, event) = reader.head()?;
    let tier = reader.string()?;
    let section = reader.string()?;
    let row = reader.string()?;
    let number = reader.string()?;
    let holder = reader.string()?;
    if !reader.0.is_empty() {
        return Err(TokenError::Malformed);
    }
    let key = key(key_id).ok_or(TokenError::UnknownKey(key_id))?;
    let signature = Signature::from_slice(signature).map_err(|_| TokenError::Malformed)?;
    key.verify_strict(signed, &signature)
        .map_err(|_| TokenError::Signature)?;
    let seat = (!section.is_empty() || !row.is_empty() || !number.is_empty()).then_some(SeatRef {
        section,
        row,
        number,
    });
    Ok(TicketClaims {
        ticket_id: ticket,
        event_id: event,
        tier,
        seat,
        holder,
    })
}

/// The ticket and event a token names, read without checking its signature: check-in compares
/// the whole token with the one the event issued for that ticket, which only the engine's key
/// could have made.
pub fn read_ids(token: &str) -> Result<(TicketId, EventId), TokenError> {
    let bytes = decode(token)?;
    let (_, ticket, event) = Reader(&bytes).head()?;
    Ok((ticket, event))
}

/// A token's bytes, at least as long as the fixed parts.
fn decode(token: &str) -> Result<Vec<u8>, TokenError> {
    if token.len() > MAX_TOKEN_CHARS {
        return Err(TokenError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| TokenError::Encoding)?;
    if bytes.len() < 1 + 4 + 32 + SIGNATURE_BYTES {
        return Err(TokenError::Malformed);
    }
    Ok(bytes)
}

/// Verifies a token with public keys as `CheckIn.GetEventKeys` serves them.
pub fn verify_with_public_keys(
    token: &str,
    keys: &[PublicKey],
) -> Result<TicketClaims, TokenError> {
    verify_with(token, |id| {
        let key = keys.iter().find(|k| k.key_id == id)?;
        VerifyingKey::from_bytes(&key.key).ok()
    })
}

fn claims_bytes(key_id: u32, claims: &TicketClaims) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 2 * SIGNATURE_BYTES);
    out.push(VERSION);
    out.extend_from_slice(&key_id.to_be_bytes());
    out.extend_from_slice(claims.ticket_id.0.as_bytes());
    out.extend_from_slice(claims.event_id.0.as_bytes());
    let (section, row, number) = match &claims.seat {
        Some(s) => (s.section.as_str(), s.row.as_str(), s.number.as_str()),
        None => ("", "", ""),
    };
    for text in [
        claims.tier.as_str(),
        section,
        row,
        number,
        claims.holder.as_str(),
    ] {
        // Strings are bounded by `limits.max_string_bytes` (at most 4,096), well inside u16.
        let len = u16::try_from(text.len()).expect("a claim string fits in u16");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.0.len() < n {
            return Err(TokenError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// The version (which must be 1), key id, ticket id and event id.
    fn head(&mut self) -> Result<(u32, TicketId, EventId), TokenError> {
        let version = self.u8()?;
        if version != VERSION {
            return Err(TokenError::Version(version));
        }
        let key_id = u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes"));
        let ticket = Uuid::from_slice(self.take(16)?).map_err(|_| TokenError::Malformed)?;
        let event = Uuid::from_slice(self.take(16)?).map_err(|_| TokenError::Malformed)?;
        Ok((key_id, TicketId(ticket), EventId(event)))
    }

    fn u8(&mut self) -> Result<u8, TokenError> {
        Ok(self.take(1)?[0])
    }

    fn string(&mut self) -> Result<String, TokenError> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes"));
        let bytes = self.take(usize::from(len))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| TokenError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(seat: Option<SeatRef>) -> TicketClaims {
        TicketClaims {
            ticket_id: TicketId(Uuid::now_v7()),
            event_id: EventId(Uuid::now_v7()),
            tier: "FLOOR".into(),
            seat,
            holder: "customer-Zoë".into(),
        }
    }

    #[test]
    fn a_token_verifies_to_its_claims_and_is_small_enough_for_a_qr_code() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TicketKeys::open(dir.path()).unwrap();
        for seat in [
            None,
            Some(SeatRef {
                section: "A".into(),
                row: "12".into(),
                number: "7".into(),
            }),
        ] {
            let c = claims(seat);
            let token = keys.sign(&c);
            assert_eq!(keys.verify(&token), Ok(c));
            // A QR code of version 10 at level M holds 213 bytes: room to spare.
            assert!(token.len() < 200, "{} chars: {token}", token.len());
        }
    }

    #[test]
    fn forged_truncated_and_resigned_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TicketKeys::open(dir.path()).unwrap();
        let token = keys.sign(&claims(None));
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        // Another holder, same signature.
        let at = bytes.len() - SIGNATURE_BYTES - 3;
        bytes[at] ^= 1;
        assert_eq!(
            keys.verify(&URL_SAFE_NO_PAD.encode(&bytes)),
            Err(TokenError::Signature)
        );
        let whole = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let cut = URL_SAFE_NO_PAD.encode(&whole[..whole.len() - 5]);
        assert!(matches!(
            keys.verify(&cut),
            Err(TokenError::Malformed | TokenError::Signature)
        ));
        assert_eq!(keys.verify(&token[..20]), Err(TokenError::Malformed));
        assert_eq!(keys.verify("not base64!"), Err(TokenError::Encoding));
        // Signed by a key this server does not have, under an id it does.
        let other = tempfile::tempdir().unwrap();
        let stranger = TicketKeys::open(other.path()).unwrap();
        assert_eq!(
            keys.verify(&stranger.sign(&claims(None))),
            Err(TokenError::Signature)
        );
        TicketKeys::rotate(other.path()).unwrap();
        let stranger = TicketKeys::open(other.path()).unwrap();
        assert_eq!(
            keys.verify(&stranger.sign(&claims(None))),
            Err(TokenError::UnknownKey(2))
        );
    }

    #[test]
    fn after_a_rotation_new_tickets_use_the_new_key_and_old_ones_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let first = TicketKeys::open(dir.path()).unwrap();
        let old = first.sign(&claims(None));
        assert_eq!(TicketKeys::rotate(dir.path()).unwrap(), 2);
        let keys = TicketKeys::open(dir.path()).unwrap();
        assert_eq!(keys.active_id(), 2);
        assert_eq!(keys.public_keys().len(), 2);
        assert!(keys.verify(&old).is_ok());
        let new = keys.sign(&claims(None));
        let bytes = URL_SAFE_NO_PAD.decode(&new).unwrap();
        assert_eq!(&bytes[1..5], &2u32.to_be_bytes());
        assert!(keys.verify(&new).is_ok());
        // Reopening keeps the keys: the same key signs the same token.
        let again = TicketKeys::open(dir.path()).unwrap();
        let c = claims(None);
        assert_eq!(again.sign(&c), keys.sign(&c));
    }

    #[test]
    fn a_damaged_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ticket-key-1.ed25519"), "xyz\n").unwrap();
        let err = TicketKeys::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ticket-key-1.ed25519"), "{err}");
        assert!(err.contains("hex"), "{err}");
    }
}
