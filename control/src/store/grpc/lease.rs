//! The etcd `Lease` service: grant, revoke, the keep-alive stream, time-to-live and listing.
//! Where etcd answers a missing lease with a value instead of an error (keep-alive → TTL 0,
//! time-to-live → TTL -1) this does the same, because clients rely on it.

use std::sync::Arc;

use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbLeaseService, PbLeaseStatus, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::errors::to_status;
use super::Front;
use crate::store::StoreError;

/// The `etcdserverpb.Lease` service over the store.
pub(crate) struct LeaseService {
    pub(crate) front: Arc<Front>,
}

type KeepAliveStream = ReceiverStream<Result<PbLeaseKeepAliveResponse, Status>>;

#[tonic::async_trait]
impl PbLeaseService for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        let req = req.into_inner();
        let grant = self.front.store.lease_grant(req.id, req.ttl).await.map_err(to_status)?;
        Ok(Response::new(PbLeaseGrantResponse {
            header: Some(self.front.header(grant.revision)),
            id: grant.id,
            ttl: grant.ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        let rev = self.front.store.lease_revoke(req.into_inner().id).await.map_err(to_status)?;
        Ok(Response::new(PbLeaseRevokeResponse { header: Some(self.front.header(rev)) }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut input = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let front = self.front.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = input.message() => next,
                    () = front.shutting_down() => break,
                };
                let id = match next {
                    Ok(Some(r)) => r.id,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "lease keep-alive stream ended by the client");
                        break;
                    }
                };
                let reply = match front.store.lease_keep_alive(id).await {
                    Ok(k) => Ok(PbLeaseKeepAliveResponse {
                        header: Some(front.header(k.revision)),
                        id: k.id,
                        ttl: k.ttl,
                    }),
                    // etcd: a lease that is gone gets TTL 0, not an error, so the client
                    // learns that it expired without the stream breaking.
                    Err(StoreError::LeaseNotFound(_)) => {
                        let revision = front.store.status().await.map_or(0, |s| s.revision);
                        Ok(PbLeaseKeepAliveResponse {
                            header: Some(front.header(revision)),
                            id,
                            ttl: 0,
                        })
                    }
                    Err(e) => Err(to_status(e)),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        let ttl = match self.front.store.lease_time_to_live(req.id, req.keys).await {
            Ok(t) => t,
            Err(StoreError::LeaseNotFound(id)) => {
                let revision = self.front.store.status().await.map_err(to_status)?.revision;
                crate::store::LeaseTimeToLive { revision, id, ttl: -1, ..Default::default() }
            }
            Err(e) => return Err(to_status(e)),
        };
        Ok(Response::new(PbLeaseTimeToLiveResponse {
            header: Some(self.front.header(ttl.revision)),
            id: ttl.id,
            ttl: ttl.ttl,
            granted_ttl: ttl.granted_ttl,
            keys: ttl.keys,
        }))
    }

    async fn lease_leases(
        &self,
        _req: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        let list = self.front.store.lease_leases().await.map_err(to_status)?;
        Ok(Response::new(PbLeaseLeasesResponse {
            header: Some(self.front.header(list.revision)),
            leases: list.ids.into_iter().map(|id| PbLeaseStatus { id }).collect(),
        }))
    }
}
