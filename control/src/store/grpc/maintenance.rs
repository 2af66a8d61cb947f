//! The etcd `Maintenance` and `Cluster` services. This server is a one-member cluster that is
//! always its own leader: status reports it as leader with a fixed raft term, the member list
//! holds only itself, and membership changes are refused with etcd's errors.

use std::pin::Pin;
use std::sync::Arc;

use etcd_client::proto::{
    PbAlarmRequest, PbAlarmResponse, PbClusterService, PbDefragmentRequest, PbDefragmentResponse,
    PbDowngradeRequest, PbDowngradeResponse, PbHashKvRequest, PbHashKvResponse, PbHashRequest,
    PbHashResponse, PbMaintenanceService, PbMember, PbMemberAddRequest, PbMemberAddResponse,
    PbMemberListRequest, PbMemberListResponse, PbMemberPromoteRequest, PbMemberPromoteResponse,
    PbMemberRemoveRequest, PbMemberRemoveResponse, PbMemberUpdateRequest, PbMemberUpdateResponse,
    PbMoveLeaderRequest, PbMoveLeaderResponse, PbSnapshotRequest, PbSnapshotResponse,
    PbStatusRequest, PbStatusResponse,
};
use tonic::{Request, Response, Status};

use super::errors::{to_status, NOT_CAPABLE};
use super::{Front, ETCD_VERSION, RAFT_TERM};

/// The `etcdserverpb.Maintenance` and `etcdserverpb.Cluster` services over the store.
pub(crate) struct MaintenanceService {
    pub(crate) front: Arc<Front>,
}

impl MaintenanceService {
    async fn revision(&self) -> Result<i64, Status> {
        Ok(self.front.store.status().await.map_err(to_status)?.revision)
    }

    fn member(&self) -> PbMember {
        let id = &self.front.config.identity;
        PbMember {
            id: id.member_id,
            name: id.name.clone(),
            peer_ur_ls: Vec::new(),
            client_ur_ls: self.front.client_urls.clone(),
            is_learner: false,
        }
    }
}

/// The store's version if it is an etcd-style `3.x.y`, else [`ETCD_VERSION`].
fn etcd_version(store_version: &str) -> String {
    let mut parts = store_version.split('.');
    let etcd_like = parts.next() == Some("3")
        && parts.clone().count() == 2
        && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if etcd_like {
        store_version.to_string()
    } else {
        ETCD_VERSION.to_string()
    }
}

type SnapshotStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<PbSnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    /// No alarms are ever raised (there is no space quota); activation requests are accepted
    /// and ignored, so the list stays empty.
    async fn alarm(
        &self,
        _req: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        let revision = self.revision().await?;
        Ok(Response::new(PbAlarmResponse {
            header: Some(self.front.header(revision)),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _req: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        let st = self.front.store.status().await.map_err(to_status)?;
        // The revision stands in for raft's index: it grows with every write, as clients expect.
        let index = u64::try_from(st.revision).unwrap_or(0);
        Ok(Response::new(PbStatusResponse {
            header: Some(self.front.header(st.revision)),
            version: etcd_version(&st.version),
            db_size: st.db_size,
            leader: self.front.config.identity.member_id,
            raft_index: index,
            raft_term: RAFT_TERM,
            raft_applied_index: index,
            errors: Vec::new(),
            db_size_in_use: st.db_size_in_use,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: 0,
            downgrade_info: None,
        }))
    }

    async fn defragment(
        &self,
        _req: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        self.front.store.defragment().await.map_err(to_status)?;
        let revision = self.revision().await?;
        Ok(Response::new(PbDefragmentResponse { header: Some(self.front.header(revision)) }))
    }

    /// etcd hashes its whole backend; here that is the hash over every key revision.
    async fn hash(&self, _req: Request<PbHashRequest>) -> Result<Response<PbHashResponse>, Status> {
        let h = self.front.store.hash_kv(0).await.map_err(to_status)?;
        Ok(Response::new(PbHashResponse {
            header: Some(self.front.header(h.revision)),
            hash: h.hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        let h = self.front.store.hash_kv(req.into_inner().revision).await.map_err(to_status)?;
        Ok(Response::new(PbHashKvResponse {
            header: Some(self.front.header(h.revision)),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// etcd snapshots are bbolt files; back up the SQLite file instead.
    async fn snapshot(
        &self,
        _req: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(Status::unimplemented(
            "etcdserver: snapshot is not supported by skerry; copy the SQLite database instead",
        ))
    }

    async fn move_leader(
        &self,
        req: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        if req.into_inner().target_id != self.front.config.identity.member_id {
            return Err(Status::failed_precondition("etcdserver: bad leader transferee"));
        }
        let revision = self.revision().await?;
        Ok(Response::new(PbMoveLeaderResponse { header: Some(self.front.header(revision)) }))
    }

    async fn downgrade(
        &self,
        _req: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(Status::failed_precondition(NOT_CAPABLE))
    }
}

#[tonic::async_trait]
impl PbClusterService for MaintenanceService {
    async fn member_add(
        &self,
        _req: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        Err(Status::failed_precondition(NOT_CAPABLE))
    }

    async fn member_remove(
        &self,
        req: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        if req.into_inner().id == self.front.config.identity.member_id {
            return Err(Status::failed_precondition(NOT_CAPABLE));
        }
        Err(Status::not_found("etcdserver: member not found"))
    }

    async fn member_update(
        &self,
        req: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        if req.into_inner().id != self.front.config.identity.member_id {
            return Err(Status::not_found("etcdserver: member not found"));
        }
        Err(Status::failed_precondition(NOT_CAPABLE))
    }

    async fn member_list(
        &self,
        _req: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        let revision = self.revision().await?;
        Ok(Response::new(PbMemberListResponse {
            header: Some(self.front.header(revision)),
            members: vec![self.member()],
        }))
    }

    async fn member_promote(
        &self,
        _req: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        Err(Status::failed_precondition("etcdserver: can only promote a learner member"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_version_is_etcd_shaped() {
        assert_eq!(etcd_version("3.5.9"), "3.5.9");
        assert_eq!(etcd_version("skerry 0.1"), ETCD_VERSION);
        assert_eq!(etcd_version("3.5"), ETCD_VERSION);
        assert_eq!(etcd_version("3.5.x"), ETCD_VERSION);
    }
}
