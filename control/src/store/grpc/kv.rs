//! The etcd `KV` service: Range, Put, DeleteRange, Txn and Compact, each a size check, a
//! conversion, one store call and a response under this member's header.

use std::sync::Arc;

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbKvService,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbRangeStreamResponse,
    PbTxnRequest, PbTxnResponse,
};
use tonic::{Request, Response, Status};

use super::errors::to_status;
use super::{convert, Front};

/// The `etcdserverpb.KV` service over the store.
pub(crate) struct KvService {
    pub(crate) front: Arc<Front>,
}

impl KvService {
    async fn do_range(&self, req: PbRangeRequest) -> Result<PbRangeResponse, Status> {
        self.front.check_size(&req)?;
        let resp = self.front.store.range(convert::range_request(req)?).await.map_err(to_status)?;
        let header = self.front.header(resp.revision);
        Ok(convert::range_response(resp, header))
    }
}

type RangeChunks = tokio_stream::Once<Result<PbRangeStreamResponse, Status>>;

#[tonic::async_trait]
impl PbKvService for KvService {
    async fn range(
        &self,
        req: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        Ok(Response::new(self.do_range(req.into_inner()).await?))
    }

    type RangeStreamStream = RangeChunks;

    /// etcd 3.7's chunked range; served as one chunk holding the whole response, which is
    /// what merging the chunks must give anyway.
    async fn range_stream(
        &self,
        req: Request<PbRangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        let resp = self.do_range(req.into_inner()).await?;
        let chunk = PbRangeStreamResponse { range_response: Some(resp) };
        Ok(Response::new(tokio_stream::once(Ok(chunk))))
    }

    async fn put(&self, req: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        let req = req.into_inner();
        self.front.check_size(&req)?;
        let resp = self.front.store.put(convert::put_request(req)).await.map_err(to_status)?;
        let header = self.front.header(resp.revision);
        Ok(Response::new(convert::put_response(resp, header)))
    }

    async fn delete_range(
        &self,
        req: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        let req = req.into_inner();
        self.front.check_size(&req)?;
        let resp =
            self.front.store.delete_range(convert::delete_request(req)).await.map_err(to_status)?;
        let header = self.front.header(resp.revision);
        Ok(Response::new(convert::delete_response(resp, header)))
    }

    async fn txn(&self, req: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        let req = req.into_inner();
        self.front.check_size(&req)?;
        let resp = self.front.store.txn(convert::txn_request(req)?).await.map_err(to_status)?;
        let header = self.front.header(resp.revision);
        Ok(Response::new(convert::txn_response(resp, header)))
    }

    async fn compact(
        &self,
        req: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        // `physical` asks etcd to wait until the compaction is on disk; the store's compaction
        // is durable when it returns, so both kinds behave the same.
        let revision =
            self.front.store.compact(req.into_inner().revision).await.map_err(to_status)?;
        Ok(Response::new(PbCompactionResponse { header: Some(self.front.header(revision)) }))
    }
}
