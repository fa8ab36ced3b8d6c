//! Smoke test of the test bed itself: a real kube-apiserver + etcd, reached through the support
//! helpers.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery;
use serde_json::json;

#[tokio::test]
async fn secrets_round_trip_in_a_fresh_namespace() {
    let cp = support::control_plane();
    let client = cp.client().await;
    let ns = support::namespace(&client, "smoke").await;
    assert!(ns.starts_with("smoke-"), "{ns}");

    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "creds" },
        "stringData": { "token": "s3cr3t" },
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let read = secrets.get("creds").await.unwrap();
    assert_eq!(read.data.unwrap()["token"].0, b"s3cr3t");

    let out = cp.kubectl(&["get", "ns", &ns, "-o", "name"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("namespace/{ns}")
    );
}

#[tokio::test]
async fn operator_user_has_only_rbac_granted_rights() {
    let cp = support::control_plane();
    let ns = support::namespace(&cp.client().await, "rbac").await;
    let as_operator: Api<Secret> = Api::namespaced(cp.operator_client().await, &ns);
    let err = as_operator.list(&Default::default()).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );

    let rbac = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: read-secrets, namespace: {ns}}}\n\
         rules: [{{apiGroups: [''], resources: [secrets], verbs: [list]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: read-secrets, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-secrets}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: dhan-operator}}]\n"
    );
    let out = cp.kubectl_with_stdin(&["apply", "-f", "-"], &rbac);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // RBAC changes reach the authorizer through an informer: poll.
    support::wait_for(Duration::from_secs(10), || async {
        as_operator.list(&Default::default()).await.ok()
    })
    .await;
}

#[tokio::test]
async fn custom_resources_with_status_apply_and_serve() {
    let cp = support::control_plane();
    let client = cp.client().await;
    support::apply_crds(&client, GADGET_CRD).await;
    let ns = support::namespace(&client, "crd").await;

    let gvk = GroupVersionKind::gvk("smoke.example.com", "v1", "Gadget");
    let (resource, _) = support::wait_for(Duration::from_secs(10), || async {
        discovery::pinned_kind(&client, &gvk).await.ok()
    })
    .await;
    let gadgets: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource);
    let gadget = json!({
        "apiVersion": "smoke.example.com/v1", "kind": "Gadget",
        "metadata": { "name": "g1" }, "spec": { "size": 3 },
    });
    gadgets
        .patch("g1", &PatchParams::apply("e2e"), &Patch::Apply(&gadget))
        .await
        .unwrap();
    let status = json!({ "status": { "phase": "Ready" } });
    gadgets
        .patch_status("g1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();

    let read = gadgets.get("g1").await.unwrap();
    assert_eq!(read.data["spec"]["size"], 3);
    assert_eq!(read.data["status"]["phase"], "Ready");
}

const GADGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.smoke.example.com}
spec:
  group: smoke.example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
          status:
            type: object
            properties:
              phase: {type: string, nullable: true, enum: [Pending, Ready]}
"#;

#[tokio::test]
async fn child_process_output_is_captured_and_kill_9_reaps_the_group() {
    let mut child = support::ChildProcess::spawn(
        "sh",
        &[
            "-c",
            "echo \"out $GREETING\"; echo err >&2; sleep 60 & echo \"grandchild $!\"; wait",
        ],
        &[("GREETING", "hi")],
    );
    let grandchild = support::wait_for(Duration::from_secs(5), || async {
        let out = child.output();
        let pid = out
            .lines()
            .find_map(|l| l.strip_prefix("grandchild "))?
            .to_owned();
        (out.contains("out hi\n") && out.contains("err\n")).then_some(pid)
    })
    .await;
    assert!(child.try_wait().is_none(), "still running before kill_9");

    child.kill_9();
    assert!(child.try_wait().is_some());
    let ps = std::process::Command::new("ps")
        .args(["-o", "stat=", "-p", &grandchild])
        .output()
        .unwrap();
    let stat = String::from_utf8_lossy(&ps.stdout);
    assert!(
        stat.trim().is_empty() || stat.starts_with('Z'),
        "grandchild survived: {stat}"
    );
}

#[tokio::test]
async fn apiserver_enforces_the_dhanaccount_schema_where_it_can() {
    let cp = support::control_plane();
    let client = cp.client().await;
    support::install_crd(&client).await;
    let ns = support::namespace(&client, "schema").await;
    let manifest = |spec: serde_json::Value| {
        json!({
            "apiVersion": "dhan-operator.dev/v1alpha1", "kind": "DhanAccount",
            "metadata": { "name": "a", "namespace": ns }, "spec": spec,
        })
        .to_string()
    };
    let cases = [
        (json!({ "clientId": "alice" }), "spec.clientId"),
        (
            json!({ "clientId": "1", "methods": ["sms"] }),
            "spec.methods",
        ),
        (
            json!({ "clientId": "1", "refresh": { "renewBefore": "-5m" } }),
            "spec.refresh.renewBefore",
        ),
    ];
    for (spec, field) in cases {
        let out = cp.kubectl_with_stdin(&["create", "-f", "-"], &manifest(spec));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{field} should be rejected");
        assert!(stderr.contains(field), "error names {field}: {stderr}");
    }
    let ok = cp.kubectl_with_stdin(
        &["create", "-f", "-"],
        &manifest(json!({ "clientId": "1000000001" })),
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}
