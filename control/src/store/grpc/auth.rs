//! The etcd `Auth` service, answered without users or roles: `Authenticate` gets etcd's
//! "authentication is not enabled" (what etcd says with auth off, so clients fall back to no
//! credentials) and every other method gets etcd's `ErrGRPCNotCapable`
//! (`FailedPrecondition`, "etcdserver: not capable"). Access control is TLS client certificates.
//!
//! A plain tower service rather than the generated trait, because `etcd-client` does not
//! export every message type that trait names; the answer never depends on the request body.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::Status;

use super::errors::NOT_CAPABLE;

/// Every `etcdserverpb.Auth` method, refused.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AuthService;

impl NamedService for AuthService {
    const NAME: &'static str = "etcdserverpb.Auth";
}

/// The status for the Auth method at `path` (`/etcdserverpb.Auth/<Method>`).
fn refusal(path: &str) -> Status {
    match path.rsplit('/').next() {
        Some("Authenticate") => {
            Status::failed_precondition("etcdserver: authentication is not enabled")
        }
        _ => Status::failed_precondition(NOT_CAPABLE),
    }
}

impl Service<http::Request<Body>> for AuthService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        ready(Ok(refusal(req.uri().path()).into_http()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticate_says_auth_is_not_enabled_and_the_rest_not_capable() {
        assert_eq!(
            refusal("/etcdserverpb.Auth/Authenticate").message(),
            "etcdserver: authentication is not enabled"
        );
        let st = refusal("/etcdserverpb.Auth/UserAdd");
        assert_eq!(st.code(), tonic::Code::FailedPrecondition);
        assert_eq!(st.message(), NOT_CAPABLE);
    }
}
