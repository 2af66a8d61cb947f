//! User impersonation (`kubectl --as`, `--as-group`, `--as-uid`), as the reference apiserver's
//! `WithImpersonation` filter: right after authentication, the `Impersonate-User`,
//! `Impersonate-Group` (repeated), `Impersonate-Uid` and `Impersonate-Extra-<key>` headers
//! replace the requester's identity with the one they name, provided the requester is allowed
//! the verb `impersonate` on each part of it:
//!
//! - a user: `users` named by the user (core group), or for `system:serviceaccount:<ns>:<name>`
//!   the `serviceaccounts` object `<name>` in `<ns>`;
//! - each group: `groups`; the uid: `uids` and each extra value: `userextras/<key>` (both in
//!   `authentication.k8s.io`, as the reference's RBAC examples grant them).
//!
//! The impersonated identity gets `system:authenticated` (or `system:unauthenticated` for
//! `system:anonymous`) as the reference adds it, and a service account without explicit groups
//! gets its fixed `system:serviceaccounts[:<ns>]` groups. The headers are removed so nothing
//! downstream sees them again. The requester stays known to the caller for the audit log.

use http::{HeaderMap, HeaderName};

use super::authn::{User, AUTHENTICATED_GROUP};
use super::authz::{self, Attributes, Decision};
use super::server::ApiServer;
use super::status::ApiError;

/// The header naming the user to act as.
pub const USER_HEADER: &str = "impersonate-user";
/// The header naming a group to act in (repeatable).
pub const GROUP_HEADER: &str = "impersonate-group";
/// The header naming the uid to act with.
pub const UID_HEADER: &str = "impersonate-uid";
/// The prefix of the headers naming extra attributes (`Impersonate-Extra-<key>: value`).
pub const EXTRA_PREFIX: &str = "impersonate-extra-";

/// The group of unauthenticated requests, kept by an impersonated `system:anonymous`.
const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
const ANONYMOUS: &str = "system:anonymous";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// The API group of the `uids` and `userextras` impersonation resources.
const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";

/// Who a request runs as after impersonation.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The identity the request is authorized and served as.
    pub effective: User,
    /// The authenticated requester, when it impersonated someone (the audit log's `user`).
    pub requester: Option<User>,
}

/// What the impersonation headers ask for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Requested {
    user: Option<String>,
    groups: Vec<String>,
    uid: Option<String>,
    extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl Requested {
    fn anything(&self) -> bool {
        self.user.is_some()
            || !self.groups.is_empty()
            || self.uid.is_some()
            || !self.extra.is_empty()
    }
}

/// Reads (and removes) the impersonation headers.
fn take_headers(headers: &mut HeaderMap) -> Result<Requested, ApiError> {
    let text = |value: &http::HeaderValue, name: &str| {
        value
            .to_str()
            .map(str::to_string)
            .map_err(|_| ApiError::bad_request(format!("the {name} header is not valid text")))
    };
    let mut requested = Requested::default();
    if let Some(value) = headers.get(USER_HEADER) {
        requested.user = Some(text(value, "Impersonate-User")?);
    }
    for value in headers.get_all(GROUP_HEADER) {
        requested.groups.push(text(value, "Impersonate-Group")?);
    }
    if let Some(value) = headers.get(UID_HEADER) {
        requested.uid = Some(text(value, "Impersonate-Uid")?);
    }
    let extra_names: Vec<HeaderName> =
        headers.keys().filter(|name| name.as_str().starts_with(EXTRA_PREFIX)).cloned().collect();
    for name in &extra_names {
        // Header names are case-insensitive, so the reference lowercases the key and lets
        // clients percent-encode characters a header name cannot hold.
        let key = percent_decode(&name.as_str()[EXTRA_PREFIX.len()..]);
        for value in headers.get_all(name) {
            requested.extra.entry(key.clone()).or_default().push(text(value, name.as_str())?);
        }
    }
    for name in [USER_HEADER, GROUP_HEADER, UID_HEADER] {
        headers.remove(name);
    }
    for name in extra_names {
        headers.remove(name);
    }
    Ok(requested)
}

/// `%XX` sequences decoded; anything malformed is kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `system:serviceaccount:<ns>:<name>` split into (ns, name).
fn service_account(user: &str) -> Option<(&str, &str)> {
    let (namespace, name) = user.strip_prefix(SERVICE_ACCOUNT_PREFIX)?.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

/// The authorization checks impersonating `requested` needs, in the reference's order.
fn checks(requester: &User, requested: &Requested, username: &str) -> Vec<Attributes> {
    let impersonate = |group: &str, resource: &str| {
        Attributes::resource(requester, "impersonate", group, resource)
    };
    let mut all = Vec::new();
    all.push(match service_account(username) {
        Some((namespace, name)) => {
            impersonate("", "serviceaccounts").in_namespace(namespace).named(name)
        }
        None => impersonate("", "users").named(username),
    });
    for group in &requested.groups {
        all.push(impersonate("", "groups").named(group));
    }
    if let Some(uid) = &requested.uid {
        all.push(impersonate(AUTHENTICATION_GROUP, "uids").named(uid));
    }
    for (key, values) in &requested.extra {
        for value in values {
            let mut attrs = impersonate(AUTHENTICATION_GROUP, "userextras").named(value);
            attrs.subresource = key.clone();
            all.push(attrs);
        }
    }
    all
}

/// The identity `requested` describes, with the groups the reference adds.
fn impersonated_user(requested: &Requested, username: &str) -> User {
    let mut groups = requested.groups.clone();
    if let (Some((namespace, _)), true) = (service_account(username), groups.is_empty()) {
        // A service account's groups are a fixed function of its namespace.
        groups.push("system:serviceaccounts".to_string());
        groups.push(format!("system:serviceaccounts:{namespace}"));
    }
    let marker = if username == ANONYMOUS { UNAUTHENTICATED_GROUP } else { AUTHENTICATED_GROUP };
    let has_marker = groups.iter().any(|g| g == AUTHENTICATED_GROUP || g == UNAUTHENTICATED_GROUP);
    // An anonymous identity only ever gets `system:unauthenticated`; anyone else gets
    // `system:authenticated` unless the caller asked for one of the two itself.
    let add = if username == ANONYMOUS {
        !groups.iter().any(|g| g == UNAUTHENTICATED_GROUP)
    } else {
        !has_marker
    };
    if add {
        groups.push(marker.to_string());
    }
    User {
        name: username.to_string(),
        uid: requested.uid.clone().unwrap_or_default(),
        groups,
        extra: requested.extra.clone(),
    }
}

/// Applies the impersonation headers of a request authenticated as `user`: the identity to
/// serve it as, or the reference's 403 naming the first part the requester may not impersonate.
pub async fn apply(
    server: &ApiServer,
    user: User,
    headers: &mut HeaderMap,
) -> Result<Identity, ApiError> {
    let requested = take_headers(headers)?;
    if !requested.anything() {
        return Ok(Identity { effective: user, requester: None });
    }
    let Some(username) = requested.user.clone() else {
        return Err(ApiError::internal(format!(
            "requested {:?} without impersonating a user",
            (&requested.groups, &requested.uid, &requested.extra)
        )));
    };
    for attrs in checks(&user, &requested, &username) {
        let reason = match authz::authorize(server, &attrs).await {
            Decision::Allow(_) => continue,
            Decision::Deny(reason) => reason,
            Decision::NoOpinion => String::new(),
        };
        tracing::debug!(requester = %user.name, impersonating = %username, "impersonation refused");
        return Err(authz::forbidden(&attrs, &reason));
    }
    Ok(Identity { effective: impersonated_user(&requested, &username), requester: Some(user) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn headers_are_read_and_removed() {
        let mut map = headers(&[
            ("Impersonate-User", "bob"),
            ("Impersonate-Group", "g1"),
            ("Impersonate-Group", "g2"),
            ("Impersonate-Uid", "1234"),
            ("Impersonate-Extra-Scopes", "view"),
            ("Impersonate-Extra-example.com%2fteam", "red"),
            ("Accept", "application/json"),
        ]);
        let requested = take_headers(&mut map).unwrap();
        assert_eq!(requested.user.as_deref(), Some("bob"));
        assert_eq!(requested.groups, vec!["g1", "g2"]);
        assert_eq!(requested.uid.as_deref(), Some("1234"));
        assert_eq!(requested.extra["scopes"], vec!["view"]);
        assert_eq!(requested.extra["example.com/team"], vec!["red"]);
        assert_eq!(map.len(), 1, "only the unrelated header is left: {map:?}");
    }

    #[test]
    fn checks_name_each_part_as_the_reference() {
        let alice = User::new("alice", vec![]);
        let mut requested = Requested {
            user: Some("bob".into()),
            groups: vec!["g1".into()],
            uid: Some("u1".into()),
            ..Default::default()
        };
        requested.extra.insert("scopes".into(), vec!["view".into()]);
        let all = checks(&alice, &requested, "bob");
        let described: Vec<_> = all
            .iter()
            .map(|a| (a.verb.as_str(), a.group.as_str(), a.combined_resource(), a.name.as_str()))
            .collect();
        assert_eq!(
            described,
            vec![
                ("impersonate", "", "users".to_string(), "bob"),
                ("impersonate", "", "groups".to_string(), "g1"),
                ("impersonate", AUTHENTICATION_GROUP, "uids".to_string(), "u1"),
                ("impersonate", AUTHENTICATION_GROUP, "userextras/scopes".to_string(), "view"),
            ]
        );
        let sa = checks(&alice, &requested, "system:serviceaccount:team:builder");
        assert_eq!(
            (sa[0].resource.as_str(), sa[0].namespace.as_str(), sa[0].name.as_str()),
            ("serviceaccounts", "team", "builder")
        );
        let message = authz::forbidden(&all[0], "").message;
        assert_eq!(
            message,
            "users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
    }

    #[test]
    fn impersonated_groups_follow_the_reference() {
        let plain = Requested { user: Some("bob".into()), ..Default::default() };
        assert_eq!(impersonated_user(&plain, "bob").groups, vec![AUTHENTICATED_GROUP]);
        let grouped =
            Requested { user: Some("bob".into()), groups: vec!["g1".into()], ..Default::default() };
        assert_eq!(impersonated_user(&grouped, "bob").groups, vec!["g1", AUTHENTICATED_GROUP]);
        let anonymous = Requested { user: Some(ANONYMOUS.into()), ..Default::default() };
        assert_eq!(impersonated_user(&anonymous, ANONYMOUS).groups, vec![UNAUTHENTICATED_GROUP]);
        let sa = "system:serviceaccount:team:builder";
        let account = Requested { user: Some(sa.into()), ..Default::default() };
        assert_eq!(
            impersonated_user(&account, sa).groups,
            vec!["system:serviceaccounts", "system:serviceaccounts:team", AUTHENTICATED_GROUP]
        );
    }
}
