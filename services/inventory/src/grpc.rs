//! The `estate.inventory.v1.Inventory` gRPC service.
//!
//! In front of every method (see [`crate::api_router`]): east-west mTLS (no
//! client SVID, no handshake), the east-west policy (only the SPIFFE IDs it
//! names, `PERMISSION_DENIED` otherwise) and the access-token layer
//! (`UNAUTHENTICATED` without a valid `inventory-api` token). Each method
//! then requires a *machine* token — client credentials, `sub` =
//! `client_id`, no `act` — holding its scope: a user's token, even one with
//! the right scope, is refused.

use estate_audit::{Action, AuditEvent, Outcome};
use estate_proto::inventory::v1::inventory_server::Inventory;
use estate_proto::inventory::v1::{
    GetStockRequest, Line, ReleaseRequest, ReleaseResponse, Reservation, ReserveRequest, Stock,
};
use estate_tokens::grpc::require_scope;
use estate_tokens::{Scope, VerifiedToken};
use estate_workload_identity::Peer;
use tonic::{Request, Response, Status};

use crate::stock::{self, Invalid, Lines, ReserveError, Sku, StockStore};

/// The service implementation.
#[derive(Clone)]
pub struct InventoryService {
    store: StockStore,
    audit: estate_audit::AuditLog,
}

impl InventoryService {
    /// Over `store`, recording denials in `audit`.
    pub fn new(store: StockStore, audit: estate_audit::AuditLog) -> Self {
        Self { store, audit }
    }

    /// The calling workload and its machine token with `scope`, or the refusal.
    fn machine_caller<T>(&self, request: &Request<T>, scope: Scope) -> Result<Peer, Status> {
        let peer = Peer::of_grpc(request)?;
        let deny = |reason: &'static str, token: Option<&VerifiedToken>| {
            let mut event = AuditEvent::new(Action::AccessDenied, Outcome::Failure).reason(reason);
            if let Ok(id) = estate_audit::Identifier::new(peer.0.as_str()) {
                event = event.peer(id);
            }
            if let Some(token) = token {
                event = event.caller(
                    token.subject().as_str(),
                    token.client_id().map(|c| c.as_str()),
                    token.jti().map(|j| j.as_str()),
                );
            }
            self.audit.emit(event);
        };
        let token = match require_scope(request, scope) {
            Ok(token) => token,
            Err(status) => {
                deny("missing_scope", estate_tokens::grpc::caller(request).ok());
                return Err(status);
            }
        };
        let machine =
            token.actor().is_none() && token.client_id().is_some_and(|c| c.as_str() == token.subject().as_str());
        if !machine {
            deny("not_a_machine_token", Some(token));
            return Err(Status::permission_denied("requires a client-credentials token"));
        }
        Ok(peer)
    }
}

fn invalid(error: Invalid) -> Status {
    Status::invalid_argument(error.to_string())
}

fn internal(error: &sqlx::Error) -> Status {
    tracing::error!(%error, "inventory database call failed");
    Status::internal("internal error")
}

#[tonic::async_trait]
impl Inventory for InventoryService {
    async fn reserve(&self, request: Request<ReserveRequest>) -> Result<Response<Reservation>, Status> {
        let peer = self.machine_caller(&request, Scope::InventoryReserve)?;
        let request = request.into_inner();
        let order = stock::order_id(&request.order_id).map_err(invalid)?;
        let lines = Lines::parse(request.lines.into_iter().map(|l| (l.sku, l.quantity))).map_err(invalid)?;
        match self.store.reserve(order, &lines, peer.0.as_str()).await {
            Ok(reserved) => {
                tracing::info!(order_id = %order, replayed = reserved.replayed, lines = reserved.lines.lines().len(), "stock reserved");
                Ok(Response::new(Reservation {
                    order_id: order.to_string(),
                    lines: reserved
                        .lines
                        .lines()
                        .iter()
                        .map(|l| Line { sku: l.sku.as_str().to_owned(), quantity: l.quantity })
                        .collect(),
                }))
            }
            Err(ReserveError::UnknownSku(sku)) => Err(Status::not_found(format!("unknown sku {}", sku.as_str()))),
            Err(ReserveError::Insufficient(sku)) => {
                Err(Status::failed_precondition(format!("insufficient stock of {}", sku.as_str())))
            }
            Err(ReserveError::Conflict) => {
                Err(Status::already_exists("the order already holds a different reservation"))
            }
            Err(ReserveError::Released) => Err(Status::failed_precondition("the order was released")),
            Err(ReserveError::Database(error)) => Err(internal(&error)),
        }
    }

    async fn release(&self, request: Request<ReleaseRequest>) -> Result<Response<ReleaseResponse>, Status> {
        let peer = self.machine_caller(&request, Scope::InventoryReserve)?;
        let order = stock::order_id(&request.get_ref().order_id).map_err(invalid)?;
        let released = self.store.release(order, peer.0.as_str()).await.map_err(|e| internal(&e))?;
        tracing::info!(order_id = %order, released, "reservation released");
        Ok(Response::new(ReleaseResponse { released }))
    }

    async fn get_stock(&self, request: Request<GetStockRequest>) -> Result<Response<Stock>, Status> {
        self.machine_caller(&request, Scope::InventoryRead)?;
        let sku = Sku::parse(&request.get_ref().sku).ok_or_else(|| invalid(Invalid::Sku))?;
        match self.store.available(&sku).await.map_err(|e| internal(&e))? {
            Some(available) => Ok(Response::new(Stock { sku: sku.as_str().to_owned(), available })),
            None => Err(Status::not_found(format!("unknown sku {}", sku.as_str()))),
        }
    }
}
