//! Conversions between the store's types and `etcd-client`'s: request builders, raw protobuf
//! responses, and etcd's error messages.

use etcd_client::proto::{PbEvent, PbKeyValue, PbRangeResponse, PbTxnOpResponse, PbTxnResponse};
use etcd_client::{
    Compare as EtcdCompare, CompareOp as EtcdCompareOp, DeleteOptions, GetOptions, PutOptions,
    SortOrder as EtcdSortOrder, SortTarget as EtcdSortTarget, Txn, TxnOp, WatchFilterType,
    WatchOptions,
};

use crate::store::{
    Compare, CompareOp, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event, EventKind,
    KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp,
    SortOrder, SortTarget, StoreError, TxnRequest, TxnResponse, WatchRequest,
};

/// The store's `KeyValue` from etcd's.
pub(super) fn key_value(kv: PbKeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// The store's `Event` from etcd's (type 1 is DELETE in `mvccpb.Event`).
pub(super) fn event(ev: PbEvent) -> Event {
    Event {
        kind: if ev.r#type == 1 { EventKind::Delete } else { EventKind::Put },
        kv: ev.kv.map(key_value).unwrap_or_default(),
        prev_kv: ev.prev_kv.map(key_value),
    }
}

pub(super) fn get_options(req: &RangeRequest) -> GetOptions {
    let mut o = GetOptions::new();
    if !req.range_end.is_empty() {
        o = o.with_range(req.range_end.clone());
    }
    if req.limit > 0 {
        o = o.with_limit(req.limit);
    }
    if req.revision > 0 {
        o = o.with_revision(req.revision);
    }
    if req.sort_order != SortOrder::None || req.sort_target != SortTarget::Key {
        let target = match req.sort_target {
            SortTarget::Key => EtcdSortTarget::Key,
            SortTarget::Version => EtcdSortTarget::Version,
            SortTarget::Create => EtcdSortTarget::Create,
            SortTarget::Mod => EtcdSortTarget::Mod,
            SortTarget::Value => EtcdSortTarget::Value,
        };
        let order = match req.sort_order {
            SortOrder::None => EtcdSortOrder::None,
            SortOrder::Ascend => EtcdSortOrder::Ascend,
            SortOrder::Descend => EtcdSortOrder::Descend,
        };
        o = o.with_sort(target, order);
    }
    if req.keys_only {
        o = o.with_keys_only();
    }
    if req.count_only {
        o = o.with_count_only();
    }
    if req.min_mod_revision > 0 {
        o = o.with_min_mod_revision(req.min_mod_revision);
    }
    if req.max_mod_revision > 0 {
        o = o.with_max_mod_revision(req.max_mod_revision);
    }
    if req.min_create_revision > 0 {
        o = o.with_min_create_revision(req.min_create_revision);
    }
    if req.max_create_revision > 0 {
        o = o.with_max_create_revision(req.max_create_revision);
    }
    o
}

pub(super) fn range_response(r: PbRangeResponse) -> RangeResponse {
    RangeResponse {
        revision: r.header.map_or(0, |h| h.revision),
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

pub(super) fn put_options(req: &PutRequest) -> PutOptions {
    let mut o = PutOptions::new();
    if req.lease != 0 {
        o = o.with_lease(req.lease);
    }
    if req.prev_kv {
        o = o.with_prev_key();
    }
    if req.ignore_value {
        o = o.with_ignore_value();
    }
    if req.ignore_lease {
        o = o.with_ignore_lease();
    }
    o
}

pub(super) fn delete_options(req: &DeleteRangeRequest) -> DeleteOptions {
    let mut o = DeleteOptions::new();
    if !req.range_end.is_empty() {
        o = o.with_range(req.range_end.clone());
    }
    if req.prev_kv {
        o = o.with_prev_key();
    }
    o
}

fn compare(c: &Compare) -> EtcdCompare {
    let op = match c.op {
        CompareOp::Equal => EtcdCompareOp::Equal,
        CompareOp::NotEqual => EtcdCompareOp::NotEqual,
        CompareOp::Greater => EtcdCompareOp::Greater,
        CompareOp::Less => EtcdCompareOp::Less,
    };
    let key = c.key.clone();
    let cmp = match &c.target {
        CompareTarget::Version(v) => EtcdCompare::version(key, op, *v),
        CompareTarget::Create(r) => EtcdCompare::create_revision(key, op, *r),
        CompareTarget::Mod(r) => EtcdCompare::mod_revision(key, op, *r),
        CompareTarget::Value(v) => EtcdCompare::value(key, op, v.clone()),
        CompareTarget::Lease(l) => EtcdCompare::lease(key, op, *l),
    };
    if c.range_end.is_empty() {
        cmp
    } else {
        cmp.with_range(c.range_end.clone())
    }
}

fn op(op: &RequestOp) -> TxnOp {
    match op {
        RequestOp::Range(r) => TxnOp::get(r.key.clone(), Some(get_options(r))),
        RequestOp::Put(p) => TxnOp::put(p.key.clone(), p.value.clone(), Some(put_options(p))),
        RequestOp::DeleteRange(d) => TxnOp::delete(d.key.clone(), Some(delete_options(d))),
        RequestOp::Txn(t) => TxnOp::txn(txn(t)),
    }
}

/// The etcd-client `Txn` for a store txn (nested txns included).
pub(super) fn txn(req: &TxnRequest) -> Txn {
    Txn::new()
        .when(req.compare.iter().map(compare).collect::<Vec<_>>())
        .and_then(req.success.iter().map(op).collect::<Vec<_>>())
        .or_else(req.failure.iter().map(op).collect::<Vec<_>>())
}

pub(super) fn txn_response(r: PbTxnResponse) -> TxnResponse {
    let revision = r.header.map_or(0, |h| h.revision);
    let responses = r
        .responses
        .into_iter()
        .filter_map(|op| op.response)
        .map(|op| match op {
            PbTxnOpResponse::ResponseRange(r) => ResponseOp::Range(range_response(r)),
            PbTxnOpResponse::ResponsePut(p) => ResponseOp::Put(PutResponse {
                revision: p.header.map_or(0, |h| h.revision),
                prev_kv: p.prev_kv.map(key_value),
            }),
            PbTxnOpResponse::ResponseDeleteRange(d) => {
                ResponseOp::DeleteRange(DeleteRangeResponse {
                    revision: d.header.map_or(0, |h| h.revision),
                    deleted: d.deleted,
                    prev_kvs: d.prev_kvs.into_iter().map(key_value).collect(),
                })
            }
            PbTxnOpResponse::ResponseTxn(t) => ResponseOp::Txn(txn_response(t)),
        })
        .collect();
    let mut resp = TxnResponse { revision, succeeded: r.succeeded, responses };
    stamp(&mut resp, revision);
    resp
}

/// etcd leaves the headers of nested responses empty; the store's contract is that they carry
/// the txn's revision.
fn stamp(t: &mut TxnResponse, revision: i64) {
    t.revision = revision;
    for r in &mut t.responses {
        match r {
            ResponseOp::Range(x) => x.revision = revision,
            ResponseOp::Put(x) => x.revision = revision,
            ResponseOp::DeleteRange(x) => x.revision = revision,
            ResponseOp::Txn(x) => stamp(x, revision),
        }
    }
}

pub(super) fn watch_options(req: &WatchRequest) -> WatchOptions {
    let mut o = WatchOptions::new();
    if !req.range_end.is_empty() {
        o = o.with_range(req.range_end.clone());
    }
    if req.start_revision > 0 {
        o = o.with_start_revision(req.start_revision);
    }
    if req.prev_kv {
        o = o.with_prev_key();
    }
    let mut filters = Vec::new();
    if req.filter_put {
        filters.push(WatchFilterType::NoPut);
    }
    if req.filter_delete {
        filters.push(WatchFilterType::NoDelete);
    }
    if !filters.is_empty() {
        o = o.with_filters(filters);
    }
    o
}

/// etcd's error (a gRPC status with an `etcdserver: …` message) as a `StoreError`. Lease ids
/// and compaction points are filled in by the caller, which knows them.
pub(super) fn error(e: etcd_client::Error) -> StoreError {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            let known = [
                (
                    "required revision has been compacted",
                    StoreError::Compacted { compact_revision: 0 },
                ),
                ("required revision is a future revision", StoreError::FutureRevision),
                ("requested lease not found", StoreError::LeaseNotFound(0)),
                ("lease already exists", StoreError::LeaseExists(0)),
                ("too large lease TTL", StoreError::LeaseTtlTooLarge),
                ("key is not provided", StoreError::EmptyKey),
                ("value is provided", StoreError::ValueProvided),
                ("lease is provided", StoreError::LeaseProvided),
                ("key not found", StoreError::KeyNotFound),
                ("duplicate key given in txn request", StoreError::DuplicateKey),
                ("too many operations in txn request", StoreError::TooManyOps),
                ("request is too large", StoreError::RequestTooLarge),
                ("larger than max", StoreError::RequestTooLarge),
            ];
            for (text, err) in known {
                if message.contains(text) {
                    return err;
                }
            }
            let code = format!("{:?}", status.code());
            if matches!(code.as_str(), "Unavailable" | "DeadlineExceeded" | "Cancelled") {
                StoreError::Unavailable(format!("etcd: {message}"))
            } else {
                StoreError::Backend(format!("etcd: {code}: {message}"))
            }
        }
        etcd_client::Error::LeaseKeepAliveError(m) if m.contains("not found") => {
            StoreError::LeaseNotFound(0)
        }
        etcd_client::Error::TransportError(e) => StoreError::Unavailable(format!("etcd: {e}")),
        etcd_client::Error::IoError(e) => StoreError::Unavailable(format!("etcd: {e}")),
        other => StoreError::Backend(format!("etcd: {other}")),
    }
}
