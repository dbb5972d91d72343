//! Delegation can only narrow.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use support::*;
use tenant_core::*;

#[test]
fn child_inherits_tenant_principal_and_records_lineage() {
    let issuer = issuer();
    let root = root(&issuer);
    let child = root
        .delegate(agent("researcher"))
        .tools(["search"])
        .issue()
        .unwrap();
    let grandchild = child.delegate(agent("summariser")).issue().unwrap();
    assert_eq!(grandchild.tenant(), root.tenant());
    assert_eq!(grandchild.principal(), root.principal());
    let names: Vec<&str> = grandchild.lineage().iter().map(AgentId::as_str).collect();
    assert_eq!(names, ["main", "researcher", "summariser"]);
    assert_eq!(grandchild.ancestors(), &[root.id(), child.id()]);
    assert!(grandchild.descends_from(&root));
    assert!(!root.descends_from(&grandchild));
    root.check_descendant(&grandchild).unwrap();
    assert!(matches!(
        grandchild.check_descendant(&root),
        Err(Error::NotDescendant)
    ));
}

#[test]
fn widening_any_capability_is_an_error() {
    let issuer = issuer();
    let root = root(&issuer);
    let cases: Vec<(DelegationBuilder<'_>, &str)> = vec![
        (root.delegate(agent("a")).tools(["shell"]), "tools"),
        (root.delegate(agent("a")).collections(["hr"]), "collections"),
        (
            root.delegate(agent("a")).memory_namespaces(["other"]),
            "memory_namespaces",
        ),
        (root.delegate(agent("a")).models(["huge"]), "models"),
        (
            root.delegate(agent("a")).token_budget(100_001),
            "token_budget",
        ),
        (
            root.delegate(agent("a")).capabilities(
                root.capabilities()
                    .clone()
                    .with_unlimited_tokens()
                    .with_max_delegation_depth(0),
            ),
            "token_budget",
        ),
        (
            root.delegate(agent("a"))
                .capabilities(Capabilities::unrestricted().with_max_delegation_depth(0)),
            "tools",
        ),
    ];
    for (builder, expected) in cases {
        match builder.issue() {
            Err(Error::Widening { capability }) => assert_eq!(capability, expected),
            other => panic!("expected widening of {expected}, got {other:?}"),
        }
    }
}

#[test]
fn depth_is_bounded() {
    let issuer = issuer();
    let root = root(&issuer); // depth 3
    let c1 = root.delegate(agent("c1")).issue().unwrap();
    let c2 = c1.delegate(agent("c2")).issue().unwrap();
    let c3 = c2.delegate(agent("c3")).issue().unwrap();
    assert_eq!(c3.capabilities().max_delegation_depth(), 0);
    assert!(matches!(
        c3.delegate(agent("c4")).issue(),
        Err(Error::DelegationDepthExceeded { allowed: 0 })
    ));
    assert!(matches!(
        root.delegate(agent("x")).max_delegation_depth(3).issue(),
        Err(Error::DelegationDepthExceeded { allowed: 2 })
    ));
}

#[test]
fn child_cannot_outlive_parent() {
    let issuer = issuer();
    let root = root(&issuer); // 600 s
    assert!(matches!(
        root.delegate(agent("a"))
            .ttl(Duration::from_secs(3600))
            .issue(),
        Err(Error::OutlivesParent)
    ));
    let child = root
        .delegate(agent("a"))
        .ttl(Duration::from_secs(60))
        .issue()
        .unwrap();
    assert!(child.expires_at() <= root.expires_at());
    let inherited = root.delegate(agent("b")).issue().unwrap();
    assert_eq!(inherited.expires_at(), root.expires_at());
}

#[test]
fn invalid_names_in_a_delegation_are_reported_at_issue() {
    let issuer = issuer();
    let root = root(&issuer);
    assert!(matches!(
        root.delegate(agent("a")).tools(["has space"]).issue(),
        Err(Error::InvalidId { .. })
    ));
}

fn scope_strategy() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d", "e"]), 0..5)
        .prop_map(|v| v.into_iter().map(String::from).collect())
}

fn caps_strategy() -> impl Strategy<Value = Capabilities> {
    (
        prop::option::of(scope_strategy()),
        prop::option::of(scope_strategy()),
        prop::option::of(scope_strategy()),
        prop::option::of(scope_strategy()),
        prop::option::of(0u64..1000),
        0u8..4,
    )
        .prop_map(|(t, c, m, mo, budget, depth)| {
            let scope = |s: Option<Vec<String>>| match s {
                None => Scope::any(),
                Some(names) => Scope::only(names).unwrap(),
            };
            let caps = Capabilities::none()
                .with_scope(ScopeKind::Tools, scope(t))
                .with_scope(ScopeKind::Collections, scope(c))
                .with_scope(ScopeKind::MemoryNamespaces, scope(m))
                .with_scope(ScopeKind::Models, scope(mo))
                .with_max_delegation_depth(depth);
            match budget {
                None => caps.with_unlimited_tokens(),
                Some(b) => caps.with_token_budget(b),
            }
        })
}

fn subset(child: &Scope, parent: &Scope) -> bool {
    match (child.names(), parent.names()) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(c), Some(p)) => {
            let p: Vec<&str> = p.collect();
            c.into_iter().all(|n| p.contains(&n))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever a delegation asks for, an issued child never holds anything
    /// outside its parent, and a refused one is refused as widening or depth.
    #[test]
    fn delegation_never_yields_capabilities_outside_the_parent(
        parent_caps in caps_strategy(),
        requested in caps_strategy(),
    ) {
        let issuer = issuer();
        let parent = issuer.context().tenant(TenantId::random()).principal(principal())
            .capabilities(parent_caps.with_max_delegation_depth(3)).issue().unwrap();
        match parent.delegate(agent("child")).capabilities(requested.clone()).issue() {
            Ok(child) => {
                let (c, p) = (child.capabilities(), parent.capabilities());
                for kind in ScopeKind::ALL {
                    prop_assert!(subset(c.scope(kind), p.scope(kind)));
                }
                match (c.token_budget(), p.token_budget()) {
                    (_, None) => {}
                    (Some(cb), Some(pb)) => prop_assert!(cb <= pb),
                    (None, Some(_)) => prop_assert!(false, "unlimited child of a budgeted parent"),
                }
                prop_assert!(c.max_delegation_depth() < p.max_delegation_depth());
                prop_assert_eq!(c, &requested);
            }
            Err(Error::Widening { .. }) | Err(Error::DelegationDepthExceeded { .. }) => {
                prop_assert!(requested.check_narrows(parent.capabilities()).is_err()
                    || requested.max_delegation_depth() >= 3);
            }
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    /// The digest is a function of the capabilities alone.
    #[test]
    fn capability_digest_is_stable_and_distinguishes(a in caps_strategy(), b in caps_strategy()) {
        prop_assert_eq!(a.digest(), a.clone().digest());
        let via_json: Capabilities = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        prop_assert_eq!(a.digest(), via_json.digest());
        prop_assert_eq!(a == b, a.digest() == b.digest());
    }
}
