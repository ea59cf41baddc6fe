//! What an operator does with grpcurl, with the real grpcurl (`GRPCURL_BIN`, which `just test`
//! provides): list services through reflection, describe a method, and call ListUsers and
//! ListDeliveries with the admin credential, paging with the token a page returns.

use crate::{EMAIL_WAIT, STATUS_WAIT};
use std::process::Command;
use verimail_proto::user::v1::UserStatus;
use verimail_system_tests::{Stack, TEST_ADMIN_TOKEN};

fn grpcurl_bin() -> String {
    std::env::var("GRPCURL_BIN").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| {
        let on_path = Command::new("grpcurl").arg("-version").output().is_ok_and(|o| o.status.success());
        assert!(on_path, "grpcurl is needed: run `just test` (it installs one), or set GRPCURL_BIN");
        "grpcurl".into()
    })
}

/// Runs grpcurl with `args` (at most 20 s): exit success, stdout, stderr.
fn grpcurl(args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(grpcurl_bin());
    command.args(["-plaintext", "-max-time", "20"]).args(args);
    let output = command.output().expect("grpcurl runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("utf-8");
    (output.status.success(), text(output.stdout), text(output.stderr))
}

/// A call that must succeed, its JSON answer parsed.
fn call(args: &[&str]) -> serde_json::Value {
    let (ok, stdout, stderr) = grpcurl(args);
    assert!(ok, "grpcurl {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("grpcurl {args:?} printed no JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_with_grpcurl_lists_describes_and_calls_the_ops_rpcs() {
    let stack = Stack::start().await;
    let [user, _auth, email] = stack.grpc_addrs.map(|addr| addr.to_string());
    let admin = format!("authorization: Bearer {TEST_ADMIN_TOKEN}");

    // Reflection: what each address serves, and a method's signature.
    let (ok, listed, _) = grpcurl(&[&user, "list"]);
    assert!(ok);
    let listed: Vec<&str> = listed.lines().collect();
    assert_eq!(
        listed,
        ["grpc.health.v1.Health", "verimail.ops.v1.ParkingService", "verimail.user.v1.UserService"],
        "user-service"
    );
    let (_, described, _) = grpcurl(&[&user, "describe", "verimail.user.v1.UserService.ListUsers"]);
    println!("{described}");
    assert!(
        described.contains(
            "rpc ListUsers ( .verimail.user.v1.ListUsersRequest ) returns ( .verimail.user.v1.ListUsersResponse );"
        ),
        "{described}"
    );
    let (_, fields, _) = grpcurl(&[&user, "describe", "verimail.user.v1.ListUsersRequest"]);
    for field in ["int32 page_size = 1;", "string page_token = 2;", ".verimail.user.v1.UserStatus status = 3;"] {
        assert!(fields.contains(field), "{field} in {fields}");
    }
    let (_, email_methods, _) = grpcurl(&[&email, "list", "verimail.email.v1.EmailService"]);
    assert!(email_methods.contains("verimail.email.v1.EmailService.RetryDelivery"), "{email_methods}");

    // Three users, one verified.
    let mut ids = Vec::new();
    for name in ["ann", "bob", "cy"] {
        ids.push(stack.register(&format!("{name}@example.com"), "correct horse battery").await);
    }
    let mail = stack.smtp.wait_for("bob@example.com", 1, EMAIL_WAIT).await.remove(0);
    let token = mail.verification_token();
    stack.verify(&token).await.expect("VerifyEmail");
    assert!(stack.wait_for_status(&ids[1], UserStatus::Verified, STATUS_WAIT).await);
    for name in ["ann", "cy"] {
        stack.smtp.wait_for(&format!("{name}@example.com"), 1, EMAIL_WAIT).await;
    }

    // ListUsers: by status, then page by page with the token each page returns.
    let list_users = "verimail.user.v1.UserService/ListUsers";
    let verified = call(&["-H", &admin, "-d", r#"{"status": "USER_STATUS_VERIFIED"}"#, &user, list_users]);
    assert_eq!(verified["users"].as_array().map(Vec::len), Some(1), "{verified}");
    assert_eq!(verified["users"][0]["email"], "bob@example.com");
    assert_eq!(verified["users"][0]["status"], "USER_STATUS_VERIFIED");
    let first = call(&["-H", &admin, "-d", r#"{"page_size": 2}"#, &user, list_users]);
    let token = first["nextPageToken"].as_str().expect("a next page").to_owned();
    let second =
        call(&["-H", &admin, "-d", &format!(r#"{{"page_size": 2, "page_token": "{token}"}}"#), &user, list_users]);
    let listed: Vec<&str> = [&first, &second]
        .iter()
        .flat_map(|page| page["users"].as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap()))
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    assert!(second.get("nextPageToken").is_none(), "the last page has no token: {second}");

    // ListDeliveries by address, and what became of the email.
    let list_deliveries = "verimail.email.v1.EmailService/ListDeliveries";
    let deliveries = call(&["-H", &admin, "-d", r#"{"email": "Cy@Example.com"}"#, &email, list_deliveries]);
    println!("{deliveries}");
    assert_eq!(deliveries["deliveries"].as_array().map(Vec::len), Some(1), "{deliveries}");
    assert_eq!(deliveries["deliveries"][0]["recipient"], "cy@example.com");
    assert_eq!(deliveries["deliveries"][0]["status"], "DELIVERY_STATUS_SENT");
    assert_eq!(deliveries["deliveries"][0]["userId"], ids[2].as_str());

    // Without the credential: refused, and grpcurl says why.
    let (ok, _, stderr) = grpcurl(&["-d", "{}", &user, list_users]);
    assert!(!ok);
    assert!(stderr.contains("Code: Unauthenticated"), "{stderr}");
    // A bad field: grpcurl prints the BadRequest details.
    let (ok, _, stderr) = grpcurl(&["-H", &admin, "-d", r#"{"page_size": -1}"#, &user, list_users]);
    assert!(!ok);
    assert!(stderr.contains("Code: InvalidArgument") && stderr.contains("page_size"), "{stderr}");
}

/// The cookbook in docs/operating.md cannot drift from the services: each of its grpcurl calls
/// runs against a stack (with its `$A`, `$U`, `$AU`, `$E`), and each reaches its method with a
/// request grpcurl could encode, so every answer is the service's own (a status such as
/// NOT_FOUND for the sample ids is fine; an unknown method or field is not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_the_operating_cookbook_reaches_its_method() {
    let stack = Stack::start().await;
    let [user, auth, email] = stack.grpc_addrs.map(|addr| addr.to_string());
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operating.md")).expect("the page");
    let (_, cookbook) = page.split_once("```sh\n").expect("the cookbook's code block");
    let (cookbook, _) = cookbook.split_once("```").expect("its end");
    let admin = format!("authorization: Bearer {TEST_ADMIN_TOKEN}");
    // Lines continued with a backslash are one command.
    let commands = cookbook.replace("\\\n", " ");
    let mut calls = 0;
    for line in commands.lines().map(str::trim).filter(|l| l.starts_with("grpcurl ")) {
        let command = line.split(" # ").next().unwrap_or(line);
        let words = shell_words(command);
        let args: Vec<String> = words[1..]
            .iter()
            .filter(|w| *w != "-plaintext")
            .map(|w| match w.as_str() {
                "$A" => admin.clone(),
                "$U" => user.clone(),
                "$AU" => auth.clone(),
                "$E" => email.clone(),
                other => other.to_owned(),
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, stdout, stderr) = grpcurl(&args);
        assert!(
            ok || stderr.starts_with("ERROR:\n  Code: "),
            "the cookbook's `{command}` did not reach a method:\n{stdout}{stderr}"
        );
        calls += 1;
    }
    assert!(calls >= 10, "the cookbook has its calls: {calls}");
}

/// A command line split as a POSIX shell does for our cookbook: words, 'single' and "double"
/// quotes (no escapes inside them, none needed there).
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut started) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => (quote, started) = (Some(c), true),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (_, c) => (word, started) = (word + &c.to_string(), true),
        }
    }
    if started {
        words.push(word);
    }
    words
}
