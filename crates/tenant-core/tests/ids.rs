//! Identifier parsing is strict and round-trips.

use tenant_core::*;

#[test]
fn tenant_id_accepts_only_the_canonical_hyphenated_form() {
    let ok = "6F1C1F4E-8A4B-4C3E-9D6A-0B7E3A2F5C11"
        .parse::<TenantId>()
        .unwrap();
    assert_eq!(ok.to_string(), "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11");
    for bad in [
        "",
        "6f1c1f4e8a4b4c3e9d6a0b7e3a2f5c11",
        "{6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11}",
        "urn:uuid:6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11",
        " 6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11",
        "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c1g",
        "00000000-0000-0000-0000-000000000000",
    ] {
        assert!(
            matches!(
                bad.parse::<TenantId>(),
                Err(Error::InvalidId {
                    kind: "tenant id",
                    ..
                })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn ids_round_trip_through_display_and_serde() {
    let t = TenantId::random();
    assert_eq!(t.to_string().parse::<TenantId>().unwrap(), t);
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(serde_json::from_str::<TenantId>(&json).unwrap(), t);
    assert!(serde_json::from_str::<TenantId>("\"not-a-tenant\"").is_err());

    let p = PrincipalId::new("svc:billing@example.com").unwrap();
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<PrincipalId>(&json).unwrap(), p);
    assert!(serde_json::from_str::<PrincipalId>("\"two words\"").is_err());

    let a = AgentId::new("coder.v2").unwrap();
    assert_eq!(a.to_string().parse::<AgentId>().unwrap(), a);
    assert!(serde_json::from_str::<AgentId>("\"../../etc\"").is_err());
}

#[test]
fn principal_and_agent_ids_reject_bad_input() {
    assert!(PrincipalId::new("").is_err());
    assert!(PrincipalId::new("a\nb").is_err());
    assert!(PrincipalId::new("x".repeat(257)).is_err());
    assert!(AgentId::new("").is_err());
    assert!(AgentId::new("a/b").is_err());
    assert!(AgentId::new("x".repeat(65)).is_err());
}
