//! The `boxoffice.v1.Wallet` gRPC service of the payment adapter: top-ups, balances, history,
//! behind API keys with roles (`wallet-operator` tops up, `wallet-reader` reads). Keys are given
//! as the SHA-256 of the key (`boxoffice hash-key` prints it) and compared in constant time, every
//! configured key each time. Protobuf stays here: the wallet itself speaks domain values.

use std::net::SocketAddr;

use proto::v1;
use proto::v1::wallet_server::WalletServer;
use tonic::{Code, Request, Response, Status};

use super::wallet::{Balance, EntryKind, Wallet, WalletError};
pub use crate::api_keys::ApiKey;
use crate::api_keys::{check, status};

/// The roles the Wallet service knows: `wallet-operator` tops up, `wallet-reader` reads.
pub const ROLES: &[&str] = &["wallet-operator", "wallet-reader"];

struct Api {
    wallet: Wallet,
    keys: Vec<ApiKey>,
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
        check(&self.keys, &request, "wallet-operator")?;
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
        check(&self.keys, &request, "wallet-reader")?;
        let customer = request.into_inner().customer_id;
        let b = self.wallet.balance(&customer)?;
        Ok(Response::new(balance(customer, b)))
    }

    async fn list_history(
        &self,
        request: Request<v1::ListHistoryRequest>,
    ) -> Result<Response<v1::ListHistoryResponse>, Status> {
        check(&self.keys, &request, "wallet-reader")?;
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
                    at: Some(crate::timestamp(e.at_ms)),
                })
                .collect(),
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }
}

/// Binds `listen` and serves the Wallet service (requests at most 64 KiB); the bound address.
pub async fn serve(
    listen: SocketAddr,
    wallet: Wallet,
    keys: Vec<ApiKey>,
) -> anyhow::Result<SocketAddr> {
    let service = WalletServer::new(Api { wallet, keys }).max_decoding_message_size(64 * 1024);
    crate::serve_grpc(listen, tonic::service::Routes::new(service), "wallet").await
}
