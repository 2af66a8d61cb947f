//! Which certificate signing requests are approved automatically and which the cluster CA signs
//! (pure functions over the request; the CSR's subject is read from its PEM, signature checked).

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;

use crate::pki::request_subject;

/// The node client signer.
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The user client signer.
pub const CLIENT: &str = "kubernetes.io/kube-apiserver-client";

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Yes (the message says why).
    Approve(String),
    /// No: it is for this controller but breaks the signer's rules.
    Refuse(String),
    /// Not for this controller (another signer, or not a case it decides).
    NotOurs,
}

/// Whether the request has condition `type_` set to True.
pub fn has_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status != "False"))
}

/// Client usages only, with `client auth` among them.
fn client_usages(csr: &CertificateSigningRequest) -> bool {
    let usages = csr.spec.usages.clone().unwrap_or_default();
    usages.iter().any(|u| u == "client auth")
        && usages
            .iter()
            .all(|u| matches!(u.as_str(), "client auth" | "digital signature" | "key encipherment"))
}

/// The node a kubelet client request is for, if its subject is a node's.
fn node_subject(csr: &CertificateSigningRequest) -> Result<String, String> {
    let pem = String::from_utf8_lossy(&csr.spec.request.0);
    let subject = request_subject(&pem).map_err(|e| e.to_string())?;
    let node = subject
        .common_name
        .as_deref()
        .and_then(|cn| cn.strip_prefix("system:node:"))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| "the subject's CN must be system:node:<name>".to_string())?;
    if subject.organization.as_deref() != Some("system:nodes") {
        return Err("the subject's O must be system:nodes".into());
    }
    Ok(node.to_string())
}

/// Whether the controller approves `csr` on its own: node client certificates asked for by a
/// bootstrap token or by the node itself.
pub fn auto_approves(csr: &CertificateSigningRequest) -> Verdict {
    if csr.spec.signer_name != KUBELET_CLIENT || !client_usages(csr) {
        return Verdict::NotOurs;
    }
    let Ok(node) = node_subject(csr) else { return Verdict::NotOurs };
    let username = csr.spec.username.as_deref().unwrap_or_default();
    let groups = csr.spec.groups.clone().unwrap_or_default();
    if username.starts_with("system:bootstrap:")
        && groups.iter().any(|g| g == "system:bootstrappers")
    {
        return Verdict::Approve(format!("Auto approving kubelet client certificate after bootstrap token authentication (node {node})."));
    }
    if username == format!("system:node:{node}") {
        return Verdict::Approve(format!(
            "Auto approving self kubelet client certificate renewal for {node}."
        ));
    }
    Verdict::NotOurs
}

/// The `certificatesigningrequests` subresource the requester must be allowed to `create` for
/// an automatic approval (the reference's approver asks with a SubjectAccessReview): a node
/// renewing its own certificate needs `selfnodeclient`, a bootstrap token `nodeclient`.
pub fn approval_permission(csr: &CertificateSigningRequest) -> &'static str {
    let username = csr.spec.username.as_deref().unwrap_or_default();
    match node_subject(csr) {
        Ok(node) if username == format!("system:node:{node}") => "selfnodeclient",
        _ => "nodeclient",
    }
}

/// Whether the cluster CA signs an approved `csr`.
pub fn signs(csr: &CertificateSigningRequest) -> Verdict {
    match csr.spec.signer_name.as_str() {
        KUBELET_CLIENT => match node_subject(csr) {
            Ok(_) if client_usages(csr) => Verdict::Approve("node client".into()),
            Ok(_) => Verdict::Refuse("only client usages are allowed for this signer".into()),
            Err(reason) => Verdict::Refuse(reason),
        },
        CLIENT if client_usages(csr) => Verdict::Approve("client".into()),
        CLIENT => Verdict::Refuse("only client usages are allowed for this signer".into()),
        _ => Verdict::NotOurs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use k8s_openapi::ByteString;

    fn request(cn: &str, o: Option<&str>) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        if let Some(o) = o {
            params.distinguished_name.push(rcgen::DnType::OrganizationName, o);
        }
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(
        signer: &str,
        pem: &str,
        user: &str,
        groups: &[&str],
        usages: &[&str],
    ) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                signer_name: signer.into(),
                request: ByteString(pem.as_bytes().to_vec()),
                username: Some(user.into()),
                groups: Some(groups.iter().map(|g| g.to_string()).collect()),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    const USAGES: &[&str] = &["digital signature", "client auth"];

    #[test]
    fn a_joining_or_renewing_node_is_approved_and_nobody_else() {
        let node = request("system:node:pi-1", Some("system:nodes"));
        let joining = csr(
            KUBELET_CLIENT,
            &node,
            "system:bootstrap:abcdef",
            &["system:bootstrappers"],
            USAGES,
        );
        assert!(matches!(auto_approves(&joining), Verdict::Approve(_)));
        let renewing = csr(KUBELET_CLIENT, &node, "system:node:pi-1", &["system:nodes"], USAGES);
        assert!(matches!(auto_approves(&renewing), Verdict::Approve(_)));
        assert_eq!(approval_permission(&joining), "nodeclient");
        assert_eq!(approval_permission(&renewing), "selfnodeclient");

        // Another node's name, a user, a server usage, another signer: not approved.
        let other = csr(KUBELET_CLIENT, &node, "system:node:pi-2", &["system:nodes"], USAGES);
        assert_eq!(auto_approves(&other), Verdict::NotOurs);
        let user = csr(KUBELET_CLIENT, &node, "alice", &[], USAGES);
        assert_eq!(auto_approves(&user), Verdict::NotOurs);
        let serving = csr(
            KUBELET_CLIENT,
            &node,
            "system:bootstrap:abcdef",
            &["system:bootstrappers"],
            &["server auth"],
        );
        assert_eq!(auto_approves(&serving), Verdict::NotOurs);
        let admin = request("admin", Some("system:masters"));
        let escalation = csr(
            KUBELET_CLIENT,
            &admin,
            "system:bootstrap:abcdef",
            &["system:bootstrappers"],
            USAGES,
        );
        assert_eq!(auto_approves(&escalation), Verdict::NotOurs);
        let user_signer =
            csr(CLIENT, &node, "system:bootstrap:abcdef", &["system:bootstrappers"], USAGES);
        assert_eq!(auto_approves(&user_signer), Verdict::NotOurs);
    }

    #[test]
    fn signing_checks_the_signers_rules() {
        let node = request("system:node:pi-1", Some("system:nodes"));
        let admin = request("admin", Some("system:masters"));
        assert!(matches!(
            signs(&csr(KUBELET_CLIENT, &node, "x", &[], USAGES)),
            Verdict::Approve(_)
        ));
        assert!(matches!(
            signs(&csr(KUBELET_CLIENT, &admin, "x", &[], USAGES)),
            Verdict::Refuse(_)
        ));
        assert!(matches!(signs(&csr(CLIENT, &admin, "x", &[], USAGES)), Verdict::Approve(_)));
        assert!(matches!(
            signs(&csr(CLIENT, &admin, "x", &[], &["server auth"])),
            Verdict::Refuse(_)
        ));
        assert_eq!(signs(&csr("example.com/other", &admin, "x", &[], USAGES)), Verdict::NotOurs);
        let garbage = csr(KUBELET_CLIENT, "not a CSR", "x", &[], USAGES);
        assert!(matches!(signs(&garbage), Verdict::Refuse(_)));
    }
}
