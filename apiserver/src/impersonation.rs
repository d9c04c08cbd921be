//! Impersonation: a request that carries `Impersonate-User` (with `Impersonate-Group`,
//! `Impersonate-Uid` and `Impersonate-Extra-*`) runs as that user, if its sender may
//! `impersonate` each of them — upstream's `WithImpersonation` filter, what `kubectl --as`,
//! `--as-group` and `--as-uid` send.

use crate::auth::{Authorizer, Decision, RequestInfo, UserInfo};
use crate::error::ApiError;
use http::HeaderMap;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// One thing a request asks to act as, and the `impersonate` check it needs.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    User(String),
    ServiceAccount { namespace: String, name: String },
    Group(String),
    Extra { key: String, value: String },
    Uid(String),
}

impl Ask {
    /// What the requestor must be allowed: `impersonate` on this resource (and name).
    fn request_info(&self) -> RequestInfo<'_> {
        let (group, resource, subresource, namespace, name) = match self {
            Ask::User(name) => ("", "users", None, None, name.as_str()),
            Ask::ServiceAccount { namespace, name } => (
                "",
                "serviceaccounts",
                None,
                Some(namespace.as_str()),
                name.as_str(),
            ),
            Ask::Group(name) => ("", "groups", None, None, name.as_str()),
            Ask::Extra { key, value } => (
                "authentication.k8s.io",
                "userextras",
                Some(key.as_str()),
                None,
                value.as_str(),
            ),
            Ask::Uid(uid) => ("authentication.k8s.io", "uids", None, None, uid.as_str()),
        };
        RequestInfo {
            verb: "impersonate",
            group,
            version: if group.is_empty() { "v1" } else { "" },
            resource,
            subresource,
            namespace,
            name: Some(name),
            path: None,
        }
    }
}

/// The impersonation a request's headers ask for, in upstream's order (user, groups, extras,
/// uid); empty when none. Groups, extras or a uid without a user are refused.
fn asks(headers: &HeaderMap) -> Result<Vec<Ask>, ApiError> {
    let text = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    let mut asks = Vec::new();
    let user = headers.get(USER).map(text).filter(|u| !u.is_empty());
    if let Some(user) = &user {
        asks.push(match crate::serviceaccount::split_username(user) {
            Some((namespace, name)) => Ask::ServiceAccount {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            None => Ask::User(user.clone()),
        });
    }
    let mut others = false;
    for g in headers.get_all(GROUP) {
        others = true;
        asks.push(Ask::Group(text(g)));
    }
    let mut extras: Vec<(&str, &http::HeaderValue)> = headers
        .iter()
        .filter_map(|(k, v)| k.as_str().strip_prefix(EXTRA_PREFIX).map(|key| (key, v)))
        .collect();
    extras.sort_by_key(|(k, _)| *k);
    for (key, value) in extras {
        others = true;
        // Header names are case-insensitive; the key is lower case and percent-decoded.
        let key = crate::request::decode_segment(key);
        asks.push(Ask::Extra {
            key,
            value: text(value),
        });
    }
    if let Some(uid) = headers.get(UID).map(text).filter(|u| !u.is_empty()) {
        others = true;
        asks.push(Ask::Uid(uid));
    }
    if others && user.is_none() {
        return Err(ApiError {
            code: 500,
            reason: "InternalError",
            message: "Internal error occurred: requested impersonation of groups, extras or a uid without impersonating a user".into(),
            details: None,
        });
    }
    Ok(asks)
}

/// The user `requestor` acts as: itself when the headers ask for no impersonation, else the
/// impersonated user, once `authorizer` has allowed `impersonate` on each thing asked for
/// (403 naming the first that is not). Returns the user to act as and, when impersonating, the
/// requestor (for the audit log).
pub async fn impersonate(
    authorizer: &dyn Authorizer,
    requestor: UserInfo,
    headers: &HeaderMap,
) -> Result<(UserInfo, Option<UserInfo>), ApiError> {
    let asks = asks(headers)?;
    if asks.is_empty() {
        return Ok((requestor, None));
    }
    let groups_given = asks.iter().any(|a| matches!(a, Ask::Group(_)));
    let mut user = UserInfo::default();
    for ask in &asks {
        let info = ask.request_info();
        match authorizer.authorize(&requestor, &info).await {
            Decision::Allow => {}
            Decision::Deny(reason) => return Err(ApiError::forbidden(&requestor, &info, &reason)),
            Decision::NoOpinion => return Err(ApiError::forbidden(&requestor, &info, "")),
        }
        match ask {
            Ask::User(name) => user.name.clone_from(name),
            Ask::ServiceAccount { namespace, name } => {
                let account = crate::serviceaccount::account_user(namespace, name);
                user.name = account.name;
                if !groups_given {
                    // A service account's groups are fixed; without groups asked for, its own.
                    user.groups = account
                        .groups
                        .into_iter()
                        .filter(|g| g != "system:authenticated")
                        .collect();
                }
            }
            Ask::Group(g) => user.groups.push(g.clone()),
            Ask::Extra { key, value } => {
                user.extra
                    .entry(key.clone())
                    .or_default()
                    .push(value.clone());
            }
            Ask::Uid(uid) => user.uid.clone_from(uid),
        }
    }
    let has = |g: &str| user.groups.iter().any(|x| x == g);
    if user.name == "system:anonymous" {
        if !has("system:unauthenticated") {
            user.groups.push("system:unauthenticated".into());
        }
    } else if !has("system:authenticated") && !has("system:unauthenticated") {
        user.groups.push("system:authenticated".into());
    }
    tracing::debug!(requestor = %requestor.name, user = %user.name, "impersonating");
    Ok((user, Some(requestor)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Allows `impersonate` on exactly the listed `resource/name` pairs.
    struct May(Vec<&'static str>);

    #[async_trait::async_trait]
    impl Authorizer for May {
        async fn authorize(&self, _user: &UserInfo, req: &RequestInfo<'_>) -> Decision {
            let what = format!(
                "{}{}/{}",
                req.resource,
                req.subresource.map(|s| format!("/{s}")).unwrap_or_default(),
                req.name.unwrap_or("")
            );
            if req.verb == "impersonate" && self.0.contains(&what.as_str()) {
                Decision::Allow
            } else {
                Decision::NoOpinion
            }
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn alice() -> UserInfo {
        UserInfo::new("alice", ["devs", "system:authenticated"])
    }

    #[tokio::test]
    async fn no_headers_is_the_requestor() {
        let (u, by) = impersonate(&May(vec![]), alice(), &HeaderMap::new())
            .await
            .unwrap();
        assert_eq!((u, by), (alice(), None));
    }

    #[tokio::test]
    async fn a_user_with_groups_uid_and_extras() {
        let h = headers(&[
            ("Impersonate-User", "bob"),
            ("Impersonate-Group", "ops"),
            ("Impersonate-Group", "audit"),
            ("Impersonate-Uid", "1234"),
            ("Impersonate-Extra-Scopes", "view"),
            ("Impersonate-Extra-example.com%2fteam", "blue"),
        ]);
        let may = May(vec![
            "users/bob",
            "groups/ops",
            "groups/audit",
            "uids/1234",
            "userextras/scopes/view",
            "userextras/example.com/team/blue",
        ]);
        let (u, by) = impersonate(&may, alice(), &h).await.unwrap();
        assert_eq!(by, Some(alice()));
        assert_eq!(u.name, "bob");
        assert_eq!(u.groups, ["ops", "audit", "system:authenticated"]);
        assert_eq!(u.uid, "1234");
        assert_eq!(u.extra["scopes"], ["view"]);
        assert_eq!(u.extra["example.com/team"], ["blue"]);
    }

    #[tokio::test]
    async fn each_thing_asked_for_needs_its_own_permission() {
        let h = headers(&[
            ("Impersonate-User", "bob"),
            ("Impersonate-Group", "system:masters"),
        ]);
        let e = impersonate(&May(vec!["users/bob"]), alice(), &h)
            .await
            .unwrap_err();
        assert_eq!(e.code, 403);
        assert!(
            e.message.contains("cannot impersonate resource \"groups\""),
            "{}",
            e.message
        );
        let e = impersonate(
            &May(vec![]),
            alice(),
            &headers(&[("Impersonate-User", "bob")]),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, 403);
        assert!(
            e.message.contains("users \"bob\" is forbidden"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn a_service_account_gets_its_groups_and_is_checked_in_its_namespace() {
        let h = headers(&[("Impersonate-User", "system:serviceaccount:ns1:builder")]);
        let (u, _) = impersonate(&May(vec!["serviceaccounts/builder"]), alice(), &h)
            .await
            .unwrap();
        assert_eq!(u.name, "system:serviceaccount:ns1:builder");
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                "system:authenticated"
            ]
        );
    }

    #[tokio::test]
    async fn groups_without_a_user_are_refused_and_anonymous_stays_unauthenticated() {
        let e = impersonate(
            &May(vec![]),
            alice(),
            &headers(&[("Impersonate-Group", "x")]),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, 500);
        let h = headers(&[("Impersonate-User", "system:anonymous")]);
        let (u, _) = impersonate(&May(vec!["users/system:anonymous"]), alice(), &h)
            .await
            .unwrap();
        assert_eq!(u.groups, ["system:unauthenticated"]);
    }
}
