//! The generated client and server talk through tonic's codec, in process,
//! and a client wrapped in the kit's `PropagateTraceLayer` carries the
//! current `traceparent` in the call's metadata (trace propagation through
//! tonic, issue 6).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failed step should panic the test")]

use std::sync::{Arc, Mutex};

use estate_proto::inventory::v1::inventory_client::InventoryClient;
use estate_proto::inventory::v1::inventory_server::{Inventory, InventoryServer};
use estate_proto::inventory::v1::{
    GetStockRequest, ReleaseRequest, ReleaseResponse, Reservation, ReserveRequest, Stock,
};
use estate_service_kit::telemetry::{PropagateTraceLayer, TraceParent, with_trace};
use tonic::{Request, Response, Status};

/// Records the `traceparent` each call arrived with.
#[derive(Default, Clone)]
struct Recorder(Arc<Mutex<Vec<Option<String>>>>);

#[tonic::async_trait]
impl Inventory for Recorder {
    async fn reserve(&self, request: Request<ReserveRequest>) -> Result<Response<Reservation>, Status> {
        let request = request.into_inner();
        Ok(Response::new(Reservation { order_id: request.order_id, lines: request.lines }))
    }

    async fn release(&self, _request: Request<ReleaseRequest>) -> Result<Response<ReleaseResponse>, Status> {
        Ok(Response::new(ReleaseResponse { released: false }))
    }

    async fn get_stock(&self, request: Request<GetStockRequest>) -> Result<Response<Stock>, Status> {
        let traceparent = request.metadata().get("traceparent").map(|v| v.to_str().unwrap().to_owned());
        self.0.lock().unwrap().push(traceparent);
        if request.get_ref().sku.is_empty() {
            return Err(Status::invalid_argument("sku is required"));
        }
        Ok(Response::new(Stock { sku: request.into_inner().sku, available: 7 }))
    }
}

#[tokio::test]
async fn a_traced_client_call_carries_the_current_trace_and_the_codec_round_trips() {
    let recorder = Recorder::default();
    let server = InventoryServer::new(recorder.clone());
    let channel = tower::ServiceBuilder::new().layer(PropagateTraceLayer).service(server);
    let mut client = InventoryClient::new(channel);

    let trace = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let stock = with_trace(trace, client.get_stock(GetStockRequest { sku: "TEA-01".into() })).await.unwrap();
    assert_eq!(stock.into_inner(), Stock { sku: "TEA-01".into(), available: 7 });

    // Outside a request: no header invented.
    let status = client.get_stock(GetStockRequest { sku: String::new() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let seen = recorder.0.lock().unwrap().clone();
    let propagated = TraceParent::parse(seen[0].as_deref().expect("traceparent in the call's metadata")).unwrap();
    assert_eq!(propagated.trace_id(), trace.trace_id(), "same trace");
    assert_ne!(propagated.span_id(), trace.span_id(), "a new span for the hop");
    assert_eq!(seen[1], None);
}
