//! compose.yaml cannot drift from the code: every Verimail part in it is run with
//! `--check-config` on exactly the environment the file gives it (production mode, the required
//! secrets filled in), which fails on a missing or invalid setting and on any variable that
//! looks like Verimail's but the binary does not read; with one environment file for all four
//! parts, and Kubernetes' and a shell's variables beside, it passes. And the NATS cluster it describes matches the replicas it asks for.

use std::collections::BTreeMap;
use std::time::Duration;
use verimail_system_tests::procs::{printed, run_binary};
use verimail_system_tests::scalar_text as text;

const PARTS: [&str; 4] = ["user-service", "auth-service", "email-service", "gateway"];

/// A compose value with `${NAME:?message}`, `${NAME:-default}` or `${NAME}` resolved from
/// `given` (what an operator exports before `docker compose up`).
fn interpolate(value: &str, given: &BTreeMap<&str, String>) -> String {
    let Some(inner) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) else {
        assert!(!value.contains("${"), "only whole-value interpolation is expected: {value}");
        return value.to_owned();
    };
    let (name, default) = match inner.split_once(":-").or_else(|| inner.split_once(":?")) {
        Some((name, rest)) if inner.contains(":-") => (name, Some(rest)),
        Some((name, _)) => (name, None),
        None => (inner, None),
    };
    given
        .get(name)
        .cloned()
        .or(default.map(str::to_owned))
        .unwrap_or_else(|| panic!("compose.yaml requires {name}, which the test does not give"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_part_in_compose_yaml_gets_exactly_the_configuration_it_reads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose.yaml");
    // Merge keys (`<<: *env`) are resolved by the parser.
    let compose: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&path).expect("compose.yaml")).expect("compose.yaml is YAML");
    let services = compose["services"].as_object().expect("services");
    let given = BTreeMap::from([
        ("AUTH_TOKEN_KEYS", verimail_auth::links::TokenKeys::generate().unwrap().current_paserk()),
        ("AUTH_SIGNING_KEYS", verimail_auth::access::SigningKeys::generate().unwrap().current_paserk()),
        ("USER_SERVICE_TOKEN", "compose-check-user-token-01234567".to_owned()),
        ("GATEWAY_SERVICE_TOKEN", "compose-check-gateway-token-0123".to_owned()),
        ("EMAIL_SERVICE_TOKEN", "compose-check-email-token-012345".to_owned()),
        ("NATS_USER_SERVICE_PASSWORD", "compose-check-nats-user-0123".to_owned()),
        ("NATS_AUTH_SERVICE_PASSWORD", "compose-check-nats-auth-0123".to_owned()),
        ("NATS_EMAIL_SERVICE_PASSWORD", "compose-check-nats-email-0123".to_owned()),
        ("NATS_GATEWAY_PASSWORD", "compose-check-nats-gateway-0123".to_owned()),
        ("ADMIN_TOKEN", "compose-check-admin-token-0123456".to_owned()),
        ("DELIVERY_HASH_KEY", "compose-check-delivery-hash-key-0123456789".to_owned()),
    ]);

    let reference = path.with_file_name("docs").join("configuration.md");
    let reference = std::fs::read_to_string(reference).expect("docs/configuration.md");
    let mut checked = Vec::new();
    let mut environments = BTreeMap::new();
    for (name, service) in services {
        let Some(part) = service["command"][0].as_str().filter(|c| PARTS.contains(c)) else { continue };
        let mut env = BTreeMap::new();
        for (key, value) in service["environment"].as_object().expect("an environment") {
            env.insert(key.clone(), interpolate(&text(value), &given));
        }
        assert_eq!(env.get("VERIMAIL_ENV").map(String::as_str), Some("production"), "{part} runs as in production");
        let check = |typo: Option<(&'static str, &'static str)>| {
            let env = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(typo);
            run_binary(part, &["--check-config"], env, Duration::from_secs(20))
        };
        let output = check(None).await;
        let said = printed(&output);
        assert!(output.status.success(), "{part} in compose.yaml ({name:?}) with {env:#?}:\n{said}");
        checked.push(part);
        // The configuration reference (docs/configuration.md) lists every variable the part read.
        let reads = said.lines().find_map(|line| line.strip_prefix("reads: ")).expect("the variables read");
        for variable in reads.split_whitespace() {
            assert!(
                reference.contains(&format!("| `{variable}`")) || reference.contains(&format!(", `{variable}`")),
                "{variable} ({part}) is missing from the configuration tables of docs/configuration.md"
            );
            // And the list of every part's variables, which tells another part's from a typo.
            assert!(verimail_server::variables::ALL.contains(&variable), "{variable} ({part}) is missing from ALL");
        }
        // The same binary refuses a misspelt variable, saying which was meant, so the check
        // above has teeth.
        let output = check(Some(("SMTP_URLL", "smtp://typo:25"))).await;
        assert!(!output.status.success(), "{part} accepted an unknown variable");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(said.contains("SMTP_URLL is set but nothing here reads it: did you mean SMTP_URL?"), "{said}");
        environments.insert(part, env);
    }
    // Where operators run the check: one environment file for all four parts (each part's own
    // values over it), in a pod (Kubernetes' variables for every Service of the namespace), from
    // a shell, in a container with its image's variables.
    let world = [
        ("SHELL", "/bin/bash"),
        ("USER", "ops"),
        ("OLDPWD", "/home/ops"),
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
        ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
        ("USER_SERVICE_SERVICE_HOST", "10.96.0.20"),
        ("USER_SERVICE_PORT_50051_TCP_ADDR", "10.96.0.20"),
        ("NATS_SERVICE_PORT_CLIENT", "4222"),
        ("SSL_CERT_DIR", "/etc/ssl/certs"),
    ];
    for (part, own) in &environments {
        let mut shared: BTreeMap<&str, &str> = BTreeMap::new();
        for env in environments.values() {
            shared.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        shared.extend(own.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        shared.extend(world);
        let output = run_binary(part, &["--check-config"], shared, Duration::from_secs(20)).await;
        let said = printed(&output);
        assert!(output.status.success(), "{part} with a shared environment file, in a pod, from a shell:\n{said}");
        assert!(said.contains("set for other parts, not read here:"), "{said}");
    }
    checked.sort();
    assert_eq!(checked, ["auth-service", "email-service", "gateway", "user-service"]);

    // The NATS cluster: every node listed in NATS_URL, and as many replicas as nodes.
    let nodes: Vec<&str> = services
        .iter()
        .filter(|(_, s)| s["image"].as_str().is_some_and(|i| i.starts_with("nats:")))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(nodes.len(), 3, "a three-node cluster");
    for part in ["user-service", "auth-service", "email-service"] {
        let env = &services[part]["environment"];
        let urls = text(&env["NATS_URL"]);
        assert!(nodes.iter().all(|node| urls.contains(&format!("nats://{node}:4222"))), "{part}: {urls}");
        assert_eq!(text(&env["NATS_STREAM_REPLICAS"]), "3", "{part}");
        assert_eq!(text(&env["NATS_USER"]), part, "{part} is its own NATS user");
    }
    // Every node knows those users and their permissions, from the documented file.
    for node in &nodes {
        let command = services[*node]["command"].as_array().expect("a command");
        assert_eq!(
            (text(&command[0]), text(&command[1])),
            ("-c".to_owned(), "/etc/nats/verimail.conf".to_owned()),
            "{node}"
        );
        let volumes = services[*node]["volumes"].as_array().expect("volumes");
        assert!(
            volumes
                .iter()
                .any(|v| text(v) == "./deploy/kubernetes/base/nats-permissions.conf:/etc/nats/verimail.conf:ro"),
            "{node}"
        );
    }
    assert_eq!(services["email-service"]["deploy"]["replicas"].as_u64(), Some(2), "email-service runs twice");
    for part in PARTS {
        let test = &services[part]["healthcheck"]["test"];
        assert_eq!((text(&test[1]), text(&test[2])), (part.to_owned(), "--health-check".to_owned()), "{part}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_is_the_default_and_an_unknown_environment_stops_the_start() {
    let check = |env: Vec<(&'static str, &'static str)>| async move {
        let output = run_binary("gateway", &["--check-config"], env, Duration::from_secs(20)).await;
        (output.status.success(), printed(&output))
    };
    // Unset: production, which refuses the open internal RPCs of development.
    let (ok, said) = check(vec![]).await;
    assert!(!ok && said.contains("GATEWAY_SERVICE_TOKEN") && said.contains("production"), "{said}");
    for typo in ["prod", "dev", "staging"] {
        let (ok, said) = check(vec![("VERIMAIL_ENV", typo)]).await;
        assert!(!ok, "VERIMAIL_ENV={typo} started: {said}");
        assert!(said.contains("VERIMAIL_ENV") && said.contains("production") && said.contains("development"), "{said}");
    }
    let (ok, said) = check(vec![("VERIMAIL_ENV", "development")]).await;
    assert!(ok, "development is asked for by name: {said}");

    // Production refuses the weaker settings unless a variable allows them by name.
    let email_service = |extra: Vec<(&'static str, &'static str)>| async move {
        let mut env = vec![
            ("EMAIL_SERVICE_TOKEN", "production-check-email-token-0123"),
            ("NATS_USER", "email-service"),
            ("NATS_PASSWORD", "production-check-nats-password"),
            ("SMTP_URL", "smtps://mailer:pw@mail.example.com"),
            ("DELIVERY_HASH_KEY", "production-check-delivery-hash-key-0123"),
        ];
        for (name, value) in extra {
            env.retain(|(n, _)| *n != name);
            env.push((name, value));
        }
        let env: Vec<_> = env.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let output = run_binary("email-service", &["--check-config"], env, Duration::from_secs(20)).await;
        (output.status.success(), printed(&output))
    };
    assert!(email_service(vec![]).await.0, "TLS to SMTP and credentials for NATS");
    for (why, extra, named) in [
        ("plain-text SMTP", vec![("SMTP_URL", "smtp://mailer:pw@mail.example.com")], "SMTP_URL"),
        ("opportunistic STARTTLS", vec![("SMTP_URL", "smtp://mail.example.com?tls=opportunistic")], "SMTP_URL"),
        ("NATS as nobody", vec![("NATS_USER", ""), ("NATS_PASSWORD", "")], "NATS_CREDS"),
        ("no key for erased addresses", vec![("DELIVERY_HASH_KEY", "")], "DELIVERY_HASH_KEY"),
        ("a short key for erased addresses", vec![("DELIVERY_HASH_KEY", "short")], "DELIVERY_HASH_KEY"),
    ] {
        let (ok, said) = email_service(extra).await;
        assert!(!ok && said.contains(named), "{why} was accepted: {said}");
    }
    let allowed = vec![("SMTP_URL", "smtp://mailpit:1025"), ("SMTP_ALLOW_PLAINTEXT", "true")];
    assert!(email_service(allowed).await.0, "a plain-text relay without a password, allowed by name");
    let allowed = vec![("NATS_USER", ""), ("NATS_PASSWORD", ""), ("NATS_ALLOW_UNAUTHENTICATED", "true")];
    assert!(email_service(allowed).await.0, "NATS without credentials, allowed by name");

    // auth-service signs nothing with a key that dies with the process, unless told so.
    let token_key = verimail_auth::links::TokenKeys::generate().unwrap().current_paserk();
    let signing_key = verimail_auth::access::SigningKeys::generate().unwrap().current_paserk();
    let auth_service = |signing: Vec<(&'static str, String)>| {
        let mut env: Vec<(&'static str, String)> = vec![
            ("GATEWAY_SERVICE_TOKEN", "production-check-gateway-token-01".into()),
            ("EMAIL_SERVICE_TOKEN", "production-check-email-token-0123".into()),
            ("USER_SERVICE_TOKEN", "production-check-user-token-01234".into()),
            ("NATS_USER", "auth-service".into()),
            ("NATS_PASSWORD", "production-check-nats-password".into()),
            ("AUTH_TOKEN_KEYS", token_key.clone()),
        ];
        env.extend(signing);
        async move {
            let env = env.iter().map(|(name, value)| (*name, value.as_str()));
            let output = run_binary("auth-service", &["--check-config"], env, Duration::from_secs(20)).await;
            (output.status.success(), printed(&output))
        }
    };
    let (ok, said) = auth_service(vec![]).await;
    assert!(!ok && said.contains("AUTH_SIGNING_KEYS"), "no signing key in production: {said}");
    assert!(auth_service(vec![("AUTH_SIGNING_KEYS", signing_key)]).await.0, "with a signing key");
    assert!(auth_service(vec![("ALLOW_GENERATED_SIGNING_KEY", "true".into())]).await.0, "generated, allowed by name");
    let (ok, said) = auth_service(vec![("AUTH_SIGNING_KEYS", token_key.clone())]).await;
    assert!(!ok && said.contains("AUTH_SIGNING_KEYS") && said.contains("k4.secret"), "a k4.local key: {said}");
}
