//! API keys of the adapters' own gRPC services: each key is given as its SHA-256 with the roles it
//! carries, and a request's `authorization: Bearer <key>` is hashed and compared in constant time
//! with every configured key. It decides who may call; it never logs or keeps a key in clear.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Code, Request, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// An accepted key: its SHA-256 and roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub sha256: [u8; 32],
    pub roles: Vec<String>,
}

impl ApiKey {
    /// `<64 hex digits>:<role>[,<role>]`, each role one of `known`.
    pub fn parse(text: &str, known: &[&str]) -> Result<ApiKey, String> {
        let (hex, roles) = text
            .split_once(':')
            .ok_or("an API key is <sha256 hex>:<role>[,<role>]")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the key's SHA-256 must be 64 hex digits".into());
        }
        let mut sha256 = [0u8; 32];
        for (i, byte) in sha256.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex digits");
        }
        let roles = roles
            .split(',')
            .map(|r| {
                let r = r.trim();
                if known.contains(&r) {
                    Ok(r.to_string())
                } else {
                    Err(format!("unknown role `{r}`: one of {}", known.join(", ")))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ApiKey { sha256, roles })
    }

    /// Keys separated by spaces, as the adapters' `--api-keys` flags take them.
    pub fn parse_list(text: &str, known: &[&str]) -> Result<Vec<ApiKey>, String> {
        text.split_whitespace()
            .map(|k| ApiKey::parse(k, known))
            .collect()
    }
}

/// A status with an `ErrorInfo` of domain `boxoffice`, as the engine's API answers.
pub fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, "boxoffice", HashMap::<String, String>::new()),
    )
}

/// Checks that `request` carries a key of `keys` with `role`: UNAUTHENTICATED without a known
/// key, PERMISSION_DENIED without the role. Every key is compared, found or not.
pub fn check<T>(keys: &[ApiKey], request: &Request<T>, role: &str) -> Result<(), Status> {
    let unauthenticated = |m: &str| status(Code::Unauthenticated, "UNAUTHENTICATED", m);
    let value = request
        .metadata()
        .get("authorization")
        .ok_or_else(|| unauthenticated("missing `authorization: Bearer <api key>` metadata"))?
        .to_str()
        .map_err(|_| unauthenticated("the authorization metadata is not text"))?;
    let key = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| unauthenticated("authorization must be `Bearer <api key>`"))?;
    let presented: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
    let mut found: Option<&ApiKey> = None;
    for k in keys {
        if bool::from(k.sha256.ct_eq(&presented)) {
            found = Some(k);
        }
    }
    let key = found.ok_or_else(|| unauthenticated("unknown API key"))?;
    if !key.roles.iter().any(|r| r == role) {
        return Err(status(
            Code::PermissionDenied,
            "PERMISSION_DENIED",
            format!("the API key lacks the `{role}` role"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    #[test]
    fn keys_parse_with_known_roles_only() {
        let key = ApiKey::parse(
            &format!("{HASH}:storefront,admin"),
            &["storefront", "admin"],
        )
        .unwrap();
        assert_eq!(key.roles, ["storefront", "admin"]);
        assert_eq!(key.sha256[0], 0x5e);
        assert!(ApiKey::parse(&format!("{HASH}:root"), &["admin"]).is_err());
        assert!(ApiKey::parse("abc:admin", &["admin"]).is_err());
        assert!(ApiKey::parse(HASH, &["admin"]).is_err());
    }

    #[test]
    fn a_request_needs_a_known_key_with_the_role() {
        // SHA-256("password") is HASH.
        let keys = ApiKey::parse_list(&format!("{HASH}:admin"), &["admin", "storefront"]).unwrap();
        let with = |value: &str| {
            let mut r = Request::new(());
            if !value.is_empty() {
                r.metadata_mut()
                    .insert("authorization", value.parse().unwrap());
            }
            r
        };
        assert!(check(&keys, &with("Bearer password"), "admin").is_ok());
        let code = |r: Result<(), Status>| r.unwrap_err().code();
        assert_eq!(
            code(check(&keys, &with("Bearer password"), "storefront")),
            Code::PermissionDenied
        );
        assert_eq!(
            code(check(&keys, &with("Bearer other"), "admin")),
            Code::Unauthenticated
        );
        assert_eq!(
            code(check(&keys, &with(""), "admin")),
            Code::Unauthenticated
        );
        assert_eq!(
            code(check(&keys, &with("Basic password"), "admin")),
            Code::Unauthenticated
        );
    }
}
