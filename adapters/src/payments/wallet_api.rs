//! The `boxoffice.v1.Wallet` gRPC service of the payment adapter: top-ups, balances, history,
//! behind API keys with roles (`wallet-operator` tops up, `wallet-reader` reads). Keys are given
//! as the SHA-256 of the key (`boxoffice hash-key` prints it) and compared in constant time, every
//! configured key each time. Protobuf stays here: the wallet itself speaks domain values.

use std::collections::HashMap;
use std::net::SocketAddr;

use proto::v1;
use proto::v1::wallet_server::WalletServer;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::wallet::{Balance, EntryKind, Wallet, WalletError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Operator,
    Reader,
}

/// An accepted key: its SHA-256 and roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub sha256: [u8; 32],
    pub roles: Vec<Role>,
}

impl std::str::FromStr for ApiKey {
    type Err = String;

    /// `<64 hex digits>:<role>[,<role>]`, roles `wallet-operator`, `wallet-reader`.
    fn from_str(text: &str) -> Result<ApiKey, String> {
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
            .map(|r| match r.trim() {
                "wallet-operator" => Ok(Role::Operator),
                "wallet-reader" => Ok(Role::Reader),
                other => Err(format!(
                    "unknown role `{other}`: wallet-operator or wallet-reader"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ApiKey { sha256, roles })
    }
}

struct Api {
    wallet: Wallet,
    keys: Vec<ApiKey>,
}

fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, "boxoffice", HashMap::<String, String>::new()),
    )
}

impl From<WalletError> for Status {
    fn from(e: WalletError) -> Status {
        match &e {
            WalletError::Invalid(_) => {
                status(Code::InvalidArgument, "INVALID_ARGUMENT", e.to_string())
            }
            WalletError::NotFound(_) => status(Code::NotFound, "WALLET_NOT_FOUND", e.to_string()),
            WalletError::Currency { .. } => {
                status(Code::FailedPrecondition, "WALLET_CURRENCY", e.to_string())
            }
            WalletError::Ledger(_) => {
                tracing::error!(error = %e, "wallet ledger");
                status(
                    Code::Internal,
                    "STORAGE",
                    "the wallet could not be read or written",
                )
            }
        }
    }
}

impl Api {
    fn check<T>(&self, request: &Request<T>, role: Role) -> Result<(), Status> {
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
        for k in &self.keys {
            if bool::from(k.sha256.ct_eq(&presented)) {
                found = Some(k);
            }
        }
        let key = found.ok_or_else(|| unauthenticated("unknown API key"))?;
        if !key.roles.contains(&role) {
            let name = match role {
                Role::Operator => "wallet-operator",
                Role::Reader => "wallet-reader",
            };
            return Err(status(
                Code::PermissionDenied,
                "PERMISSION_DENIED",
                format!("the API key lacks the `{name}` role"),
            ));
        }
        Ok(())
    }
}

fn balance(customer: String, b: Balance) -> v1::WalletBalance {
    v1::WalletBalance {
        customer_id: customer,
        balance_minor: b.balance_minor,
        currency: b.currency,
    }
}

#[tonic::async_trait]
impl v1::wallet_server::Wallet for Api {
    async fn top_up(
        &self,
        request: Request<v1::TopUpRequest>,
    ) -> Result<Response<v1::WalletBalance>, Status> {
        self.check(&request, Role::Operator)?;
        let r = request.into_inner();
        let wallet = self.wallet.clone();
        let customer = r.customer_id.clone();
        let done = tokio::task::spawn_blocking(move || {
            wallet.top_up(
                &r.customer_id,
                r.amount_minor,
                &r.currency,
                &r.idempotency_key,
            )
        })
        .await
        .map_err(|e| status(Code::Internal, "INTERNAL", e.to_string()))??;
        Ok(Response::new(balance(customer, done)))
    }

    async fn get_balance(
        &self,
        request: Request<v1::GetBalanceRequest>,
    ) -> Result<Response<v1::WalletBalance>, Status> {
        self.check(&request, Role::Reader)?;
        let customer = request.into_inner().customer_id;
        let b = self.wallet.balance(&customer)?;
        Ok(Response::new(balance(customer, b)))
    }

    async fn list_history(
        &self,
        request: Request<v1::ListHistoryRequest>,
    ) -> Result<Response<v1::ListHistoryResponse>, Status> {
        self.check(&request, Role::Reader)?;
        let r = request.into_inner();
        let limit = match r.page_size {
            0 => 100,
            n if n > 1_000 => {
                return Err(WalletError::Invalid(format!("page_size {n} is over 1000")).into());
            }
            n => n as usize,
        };
        let before = if r.page_token.is_empty() {
            None
        } else {
            Some(r.page_token.parse::<u64>().map_err(|_| {
                WalletError::Invalid("page_token is not one this service handed out".into())
            })?)
        };
        let (entries, next) = self.wallet.history(&r.customer_id, limit, before)?;
        Ok(Response::new(v1::ListHistoryResponse {
            entries: entries
                .into_iter()
                .map(|e| v1::WalletEntry {
                    sequence: e.seq,
                    kind: match e.kind {
                        EntryKind::TopUp => v1::wallet_entry::Kind::TopUp,
                        EntryKind::Debit => v1::wallet_entry::Kind::Debit,
                        EntryKind::Credit => v1::wallet_entry::Kind::Credit,
                    } as i32,
                    amount_minor: e.amount_minor,
                    balance_after_minor: e.balance_after_minor,
                    order_id: e.order_id,
                    at: Some(prost_types_timestamp(e.at_ms)),
                })
                .collect(),
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }
}

fn prost_types_timestamp(ms: u64) -> proto::Timestamp {
    proto::Timestamp {
        seconds: (ms / 1_000) as i64,
        nanos: ((ms % 1_000) * 1_000_000) as i32,
    }
}

/// Binds `listen` and serves the Wallet service (requests at most 64 KiB); the bound address.
pub async fn serve(
    listen: SocketAddr,
    wallet: Wallet,
    keys: Vec<ApiKey>,
) -> anyhow::Result<SocketAddr> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the wallet port {listen}"))?;
    let addr = listener.local_addr()?;
    let service = WalletServer::new(Api { wallet, keys }).max_decoding_message_size(64 * 1024);
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(error = %e, "the wallet service stopped");
        }
    });
    Ok(addr)
}
