//! Request checks that etcd makes before a request reaches its storage: empty keys,
//! `ignore_value`/`ignore_lease` misuse, the per-txn operation limit, duplicate keys in a txn
//! (etcd's `checkIntervals`, nested txns included) and the request size limit.
//!
//! They run on the caller's task, before the request is queued for the writer, so a bad request
//! never costs the writer anything.

use std::collections::HashSet;

use super::read::KeyRange;
use crate::store::{
    CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, Result, StoreError,
    TxnRequest,
};

/// etcd's range request checks.
pub(crate) fn check_range(req: &RangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    Ok(())
}

/// etcd's put request checks.
pub(crate) fn check_put(req: &PutRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(StoreError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(StoreError::LeaseProvided);
    }
    Ok(())
}

/// etcd's delete request checks.
pub(crate) fn check_delete(req: &DeleteRangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    Ok(())
}

/// etcd's txn checks: operation counts (the limit shrinks for nested txns, as in etcd), every
/// operation's own checks, then duplicate keys within each branch.
pub(crate) fn check_txn(req: &TxnRequest, max_ops: usize) -> Result<()> {
    check_txn_ops(req, max_ops)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

fn check_txn_ops(req: &TxnRequest, max_ops: usize) -> Result<()> {
    let ops = req.compare.len().max(req.success.len()).max(req.failure.len());
    if ops > max_ops {
        return Err(StoreError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(StoreError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) => check_range(r)?,
            RequestOp::Put(p) => check_put(p)?,
            RequestOp::DeleteRange(d) => check_delete(d)?,
            RequestOp::Txn(t) => check_txn_ops(t, max_ops - ops)?,
        }
    }
    Ok(())
}

/// Keys written by puts and ranges deleted by one branch, including its nested txns.
type Writes = (HashSet<Vec<u8>>, Vec<KeyRange>);

/// etcd's `checkIntervals`: within a branch, no key is put twice and no put falls in a deleted
/// range (the two branches of a nested txn are alternatives, so they may put the same key).
fn check_intervals(ops: &[RequestOp]) -> Result<Writes> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(KeyRange::new(&d.key, &d.range_end)),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[KeyRange], k: &[u8]| dels.iter().any(|r| r.contains(k));
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(StoreError::DuplicateKey);
            }
        }
        puts.extend(puts_then.iter().cloned());
        for k in puts_else {
            if (puts.contains(&k) && !puts_then.contains(&k)) || deleted(&dels, &k) {
                return Err(StoreError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(StoreError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

/// Approximate encoded size of a request: the bytes of its keys and values.
pub(crate) fn txn_size(req: &TxnRequest) -> usize {
    let compares: usize = req
        .compare
        .iter()
        .map(|c| {
            c.key.len()
                + c.range_end.len()
                + match &c.target {
                    CompareTarget::Value(v) => v.len(),
                    _ => 8,
                }
        })
        .sum();
    let ops: usize = req.success.iter().chain(&req.failure).map(op_size).sum();
    compares + ops
}

fn op_size(op: &RequestOp) -> usize {
    match op {
        RequestOp::Range(r) => r.key.len() + r.range_end.len(),
        RequestOp::Put(p) => put_size(p),
        RequestOp::DeleteRange(d) => d.key.len() + d.range_end.len(),
        RequestOp::Txn(t) => txn_size(t),
    }
}

/// Approximate encoded size of a put.
pub(crate) fn put_size(req: &PutRequest) -> usize {
    req.key.len() + req.value.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp::Put(PutRequest { key: k.into(), ..Default::default() })
    }

    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            prev_kv: false,
        })
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp::Txn(TxnRequest { compare: vec![], success, failure })
    }

    #[test]
    fn duplicate_puts_and_puts_in_deleted_ranges_are_rejected() {
        assert!(check_intervals(&[put("a"), put("b")]).is_ok());
        assert!(check_intervals(&[put("a"), put("a")]).is_err());
        assert!(check_intervals(&[del("a", "c"), put("b")]).is_err());
        assert!(check_intervals(&[del("a", ""), del("a", "b")]).is_ok());
    }

    #[test]
    fn nested_branches_are_alternatives_but_conflict_with_the_outer_level() {
        assert!(check_intervals(&[txn(vec![put("a")], vec![put("a")])]).is_ok());
        assert!(check_intervals(&[txn(vec![put("a")], vec![]), put("a")]).is_err());
        assert!(check_intervals(&[del("a", ""), txn(vec![put("a")], vec![])]).is_err());
        assert!(
            check_intervals(&[txn(vec![put("a")], vec![]), txn(vec![put("a")], vec![])]).is_err()
        );
    }

    #[test]
    fn nested_txns_get_a_smaller_operation_budget() {
        let inner = TxnRequest { success: vec![put("x"), put("y")], ..Default::default() };
        let outer =
            TxnRequest { success: vec![RequestOp::Txn(inner), put("z")], ..Default::default() };
        assert!(check_txn(&outer, 4).is_ok());
        assert!(matches!(check_txn(&outer, 3), Err(StoreError::TooManyOps)));
    }
}
