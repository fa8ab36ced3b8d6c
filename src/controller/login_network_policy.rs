//! The NetworkPolicy that fences an account's login Pods: no ingress at all (the DevTools port
//! is on the Pod's loopback), egress only to DNS and to port 443 outside the blocked ranges
//! (cloud metadata and link-local addresses, the cluster's pod and service networks).
//!
//! One policy per account, owned by it, applied before each login Job is created. Why not one
//! per Job: the policy must exist before the Job's Pod starts, when the Job (a `generateName`
//! object) has no name yet to own it, so per-Job policies would outlive their Jobs and pile up
//! one per login. Why not one per namespace from the chart: the chart does not know which
//! namespaces hold DhanAccounts (it watches all of them by default). Per account, the policy
//! appears with the first login, is re-applied (so it stays as the operator means it) before
//! every login, and goes away with the account.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};

use super::Context;
use super::login_job::{COMPONENT, COMPONENT_LABEL, LOGIN_FOR_LABEL, LoginJobSettings};
use super::output::{FIELD_MANAGER, account_label};
use crate::crd::DhanAccount;

/// Name of `account`'s login NetworkPolicy: its name, cut to leave room for the suffix within
/// the 63 characters a label (and so a sensible name) may have.
pub fn policy_name(account: &DhanAccount) -> String {
    let cut: String = account.name_any().chars().take(45).collect();
    format!(
        "{}-login-egress",
        cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
    )
}

/// `cidr` with the blocked ranges of its address family as exceptions.
fn peer(cidr: &str, blocked: &[String], v6: bool) -> Value {
    let except: Vec<&String> = blocked.iter().filter(|c| c.contains(':') == v6).collect();
    if except.is_empty() {
        json!({ "ipBlock": { "cidr": cidr } })
    } else {
        json!({ "ipBlock": { "cidr": cidr, "except": except } })
    }
}

/// The policy for `account`'s login Pods.
pub fn login_network_policy(account: &DhanAccount, settings: &LoginJobSettings) -> NetworkPolicy {
    let blocked = &settings.egress_blocked_cidrs;
    let mut policy = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": policy_name(account),
            "namespace": account.namespace(),
            "labels": {
                "app.kubernetes.io/managed-by": "dhan-operator",
                LOGIN_FOR_LABEL: account_label(account),
                COMPONENT_LABEL: COMPONENT,
            },
            "ownerReferences": account.controller_owner_ref(&()).map(|o| vec![o]),
        },
        "spec": {
            "podSelector": { "matchLabels": {
                LOGIN_FOR_LABEL: account_label(account),
                COMPONENT_LABEL: COMPONENT,
            } },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [
                // Name resolution, wherever the cluster's resolver is (a node-local cache sits on
                // a link-local address, which the HTTPS rule blocks).
                { "ports": [
                    { "protocol": "UDP", "port": 53 },
                    { "protocol": "TCP", "port": 53 },
                ] },
                // Dhan's login page and its assets; nothing inside the cluster or the cloud's
                // metadata service.
                {
                    "to": [peer("0.0.0.0/0", blocked, false), peer("::/0", blocked, true)],
                    "ports": [{ "protocol": "TCP", "port": 443 }],
                },
            ],
        },
    });
    // Chromium's proxy (`--login-pod-options`): its port, where it is (by default where port
    // 443 may go).
    if let Some(proxy) = &settings.pod.proxy {
        let to: Vec<Value> = if proxy.cidrs.is_empty() {
            vec![
                peer("0.0.0.0/0", blocked, false),
                peer("::/0", blocked, true),
            ]
        } else {
            proxy
                .cidrs
                .iter()
                .map(|c| json!({ "ipBlock": { "cidr": c } }))
                .collect()
        };
        let rule = json!({ "to": to, "ports": [{ "protocol": "TCP", "port": proxy.port() }] });
        if let Some(egress) = policy["spec"]["egress"].as_array_mut() {
            egress.push(rule);
        }
    }
    serde_json::from_value(policy).expect("the login NetworkPolicy is well-formed")
}

/// Creates or updates `account`'s login NetworkPolicy (server-side apply).
pub async fn apply_login_network_policy(
    ctx: &Context,
    account: &DhanAccount,
) -> Result<(), kube::Error> {
    let policy = login_network_policy(account, &ctx.login.job);
    let policies: Api<NetworkPolicy> =
        Api::namespaced(ctx.client.clone(), &account.namespace().unwrap_or_default());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    policies
        .patch(&policy.name_any(), &params, &Patch::Apply(&policy))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DhanAccountSpec;
    use kube::api::ObjectMeta;
    use std::time::Duration;

    fn account(name: &str) -> DhanAccount {
        DhanAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("trading".into()),
                uid: Some("uid-1".into()),
                ..Default::default()
            },
            spec: DhanAccountSpec {
                client_id: "1000000001".into(),
                ..Default::default()
            },
            status: None,
        }
    }

    fn policy(name: &str) -> Value {
        let settings = LoginJobSettings::new("op:1", "chromium:1", Duration::from_secs(120));
        serde_json::to_value(login_network_policy(&account(name), &settings)).unwrap()
    }

    #[test]
    fn the_policy_selects_the_accounts_login_pods_and_is_owned_by_the_account() {
        let policy = policy("alice");
        assert_eq!(policy["metadata"]["name"], "alice-login-egress");
        assert_eq!(
            policy["metadata"]["ownerReferences"][0]["kind"],
            "DhanAccount"
        );
        assert_eq!(policy["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"],
            json!({LOGIN_FOR_LABEL: "alice", COMPONENT_LABEL: COMPONENT})
        );
    }

    #[test]
    fn a_login_proxy_gets_one_egress_rule_to_its_port_and_ranges() {
        let mut settings = LoginJobSettings::new("op:1", "chromium:1", Duration::from_secs(120));
        settings.pod = crate::controller::login_pod::LoginPodOptions::parse(
            "proxy: {url: \"http://proxy.corp:3128\", cidrs: [10.20.0.0/16]}",
        )
        .unwrap();
        let policy =
            serde_json::to_value(login_network_policy(&account("alice"), &settings)).unwrap();
        let egress = policy["spec"]["egress"].as_array().unwrap();
        assert_eq!(egress.len(), 3);
        assert_eq!(
            egress[2],
            json!({ "to": [{ "ipBlock": { "cidr": "10.20.0.0/16" } }],
                    "ports": [{ "protocol": "TCP", "port": 3128 }] })
        );
        // Without ranges, where HTTPS may go: outside the blocked ones.
        settings.pod =
            crate::controller::login_pod::LoginPodOptions::parse("proxy: {url: \"https://p\"}")
                .unwrap();
        let policy =
            serde_json::to_value(login_network_policy(&account("alice"), &settings)).unwrap();
        assert_eq!(policy["spec"]["egress"][2]["ports"][0]["port"], 443);
        assert_eq!(
            policy["spec"]["egress"][2]["to"],
            policy["spec"]["egress"][1]["to"]
        );
    }

    #[test]
    fn login_pods_get_no_ingress_and_only_dns_and_https_out() {
        let spec = &policy("alice")["spec"];
        assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(spec["ingress"], json!([]));
        let egress = spec["egress"].as_array().unwrap();
        assert_eq!(egress.len(), 2);
        let ports: Vec<Value> = egress
            .iter()
            .flat_map(|rule| rule["ports"].as_array().unwrap().clone())
            .collect();
        assert_eq!(
            ports,
            [
                json!({"protocol": "UDP", "port": 53}),
                json!({"protocol": "TCP", "port": 53}),
                json!({"protocol": "TCP", "port": 443}),
            ]
        );
        let to = &egress[1]["to"];
        assert_eq!(to[0]["ipBlock"]["cidr"], "0.0.0.0/0");
        let except_v4 = to[0]["ipBlock"]["except"].to_string();
        for blocked in [
            "169.254.0.0/16",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
        ] {
            assert!(except_v4.contains(blocked), "{blocked} in {except_v4}");
        }
        assert_eq!(to[1]["ipBlock"]["cidr"], "::/0");
        assert_eq!(to[1]["ipBlock"]["except"], json!(["fe80::/10", "fc00::/7"]));
    }

    #[test]
    fn long_account_names_give_a_valid_policy_name() {
        let name = policy_name(&account(&format!("{}-{}", "a".repeat(44), "b".repeat(40))));
        assert!(name.len() <= 63, "{name}");
        assert_eq!(name, format!("{}-login-egress", "a".repeat(44)));
    }
}
