//! deploy/kubernetes cannot drift from the code: the production overlay, built with
//! `kubectl kustomize`, gives each part an environment (its ConfigMap, its own values, the
//! Secret's keys) that the part's `--check-config` accepts as production, beside the variables
//! Kubernetes sets in every pod. (`just lint` validates the same manifests against the
//! Kubernetes schemas.)

use std::collections::BTreeMap;
use std::time::Duration;
use verimail_system_tests::procs::{printed, run_binary};
use verimail_system_tests::scalar_text as text;

/// The Secret `verimail` an operator creates, with values of the right shape.
fn secret(key: &str) -> String {
    match key {
        "auth-token-keys" => verimail_auth::links::TokenKeys::generate().unwrap().current_paserk(),
        "auth-signing-keys" => verimail_auth::access::SigningKeys::generate().unwrap().current_paserk(),
        "smtp-url" => "smtps://verimail:relay-password@smtp.example.com".to_owned(),
        "delivery-hash-key" => "kubernetes-check-delivery-hash-key-0123456789".to_owned(),
        database if database.ends_with("-database-url") => {
            format!("postgres://verimail:db-password@postgres.example.com:5432/{}", database.replace('-', "_"))
        }
        other => format!("kubernetes-check-{other}-0123456789"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_part_in_the_production_overlay_gets_a_configuration_it_accepts() {
    let overlay = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/overlays/production");
    let built = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&overlay)
        .output()
        .expect("kubectl runs (apt-get install kubectl)");
    assert!(built.status.success(), "kubectl kustomize: {}", printed(&built));
    let documents: Vec<serde_json::Value> = String::from_utf8(built.stdout)
        .unwrap()
        .split("\n---\n")
        .map(|document| serde_saphyr::from_str(document).expect("a manifest is YAML"))
        .collect();
    let config_maps: BTreeMap<String, &serde_json::Value> = documents
        .iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .map(|d| (text(&d["metadata"]["name"]), &d["data"]))
        .collect();
    let world = [
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
        ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
        ("NATS_SERVICE_HOST", "10.96.0.30"),
        ("NATS_PORT_4222_TCP_PORT", "4222"),
        ("GATEWAY_SERVICE_PORT_HTTP", "8080"),
        ("HOSTNAME", "user-service-5d8f7c9b4-x2x7q"),
    ];
    let mut checked = Vec::new();
    for deployment in documents.iter().filter(|d| d["kind"] == "Deployment") {
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let part = text(&container["command"][0]);
        let mut env = BTreeMap::new();
        for from in container["envFrom"].as_array().into_iter().flatten() {
            let name = text(&from["configMapRef"]["name"]);
            let data = config_maps.get(&name).unwrap_or_else(|| panic!("{part}: no ConfigMap {name}"));
            for (key, value) in data.as_object().expect("data") {
                env.insert(key.clone(), text(value));
            }
        }
        for variable in container["env"].as_array().into_iter().flatten() {
            let name = text(&variable["name"]);
            let value = match (&variable["value"], &variable["valueFrom"]["secretKeyRef"]) {
                (serde_json::Value::String(value), _) => value.clone(),
                (_, reference) if reference["name"] == "verimail" => secret(&text(&reference["key"])),
                other => panic!("{part}: {name} comes from neither a value nor the Secret: {other:?}"),
            };
            env.insert(name, value);
        }
        assert_eq!(env.get("VERIMAIL_ENV").map(String::as_str), Some("production"), "{part}");
        let given = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(world);
        let output = run_binary(&part, &["--check-config"], given, Duration::from_secs(20)).await;
        assert!(output.status.success(), "{part} in the production overlay with {env:#?}:\n{}", printed(&output));
        // Probes reach the ports the part listens on.
        let ports: Vec<String> =
            container["ports"].as_array().expect("ports").iter().map(|p| text(&p["containerPort"])).collect();
        assert!(ports.contains(&"9100".to_owned()), "{part}: metrics");
        checked.push(part);
    }
    checked.sort();
    assert_eq!(checked, ["auth-service", "email-service", "gateway", "user-service"]);
}
