//! API keys: who may call what. A key arrives as `authorization: Bearer <key>`; only its SHA-256
//! is configured, and it is compared with every configured hash in constant time. Runs before a
//! request reaches a service, so a refused call changes nothing.

use std::sync::Arc;

use config::{AuthConfig, DEV_API_KEY, Role};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Status};

use crate::status::ApiError;

struct Key {
    name: String,
    sha256: [u8; 32],
    roles: Vec<Role>,
}

/// The configured keys, shared by every service's interceptor.
#[derive(Clone)]
pub struct Authenticator {
    keys: Arc<Vec<Key>>,
}

/// SHA-256 of a key as 64 lower-case hex digits, the form `auth.keys` takes.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        // Config validation checked 64 hex digits.
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("validated hex");
    }
    out
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Storefront => "storefront",
        Role::Scanner => "scanner",
    }
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Authenticator {
        let keys = if config.keys.is_empty() {
            vec![Key {
                name: "development key".to_string(),
                sha256: unhex(&hash_key(DEV_API_KEY)),
                roles: vec![Role::Admin, Role::Storefront, Role::Scanner],
            }]
        } else {
            config
                .keys
                .iter()
                .map(|k| Key {
                    name: k.name.clone(),
                    sha256: unhex(&k.sha256),
                    roles: k.roles.clone(),
                })
                .collect()
        };
        Authenticator {
            keys: Arc::new(keys),
        }
    }

    /// Whether only the development key is accepted.
    pub fn is_development(config: &AuthConfig) -> bool {
        config.keys.is_empty()
    }

    /// The caller's key must be known and carry `role`.
    pub fn check(&self, metadata: &MetadataMap, role: Role) -> Result<(), ApiError> {
        let unauthenticated =
            |message: &str| ApiError::new(Code::Unauthenticated, "UNAUTHENTICATED", message);
        let header = metadata
            .get("authorization")
            .ok_or_else(|| unauthenticated("missing `authorization: Bearer <api key>` metadata"))?;
        let value = header
            .to_str()
            .map_err(|_| unauthenticated("the authorization metadata is not text"))?;
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| unauthenticated("authorization must be `Bearer <api key>`"))?;
        let presented: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
        // Every configured hash is compared, so the time taken says nothing about which matched.
        let mut found: Option<&Key> = None;
        for k in self.keys.iter() {
            if bool::from(k.sha256.ct_eq(&presented)) {
                found = Some(k);
            }
        }
        let key = found.ok_or_else(|| unauthenticated("unknown API key"))?;
        if !key.roles.contains(&role) {
            return Err(ApiError::new(
                Code::PermissionDenied,
                "PERMISSION_DENIED",
                format!(
                    "API key `{}` lacks the `{}` role",
                    key.name,
                    role_name(role)
                ),
            ));
        }
        Ok(())
    }

    /// A tonic interceptor that admits only keys with `role`.
    pub fn require(
        &self,
        role: Role,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let auth = self.clone();
        move |request: Request<()>| match auth.check(request.metadata(), role) {
            Ok(()) => Ok(request),
            Err(e) => {
                metrics::counter!("boxoffice_auth_failures_total", "reason" => e.reason)
                    .increment(1);
                Err(e.into())
            }
        }
    }
}
