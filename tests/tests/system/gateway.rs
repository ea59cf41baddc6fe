//! The gateway under abuse: slow clients cannot hold it, and behind a proxy each browser has
//! its own allowance (an IPv6 browser its /64's), while nobody else can claim one.

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use verimail_server::limits::Rate;
use verimail_system_tests::{Stack, StackOptions};

const HALF_SENT: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_half_sent_requests_are_closed_and_a_normal_request_is_still_answered() {
    let gateway_limits = verimail_gateway::serve::Limits {
        header_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let stack = Stack::start_with(StackOptions { gateway_limits, ..StackOptions::default() }).await;
    let addr = stack.gateway_url.trim_start_matches("http://").to_owned();

    // A slowloris client: connections that start a request head and never finish it.
    let mut slow = Vec::new();
    for _ in 0..HALF_SENT {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        stream.write_all(b"POST /verify-email HTTP/1.1\r\nHost: verimail\r\nX-Slow: 1").await.unwrap();
        slow.push(stream);
    }
    let opened = Instant::now();

    // A browser meanwhile is answered at once.
    let started = Instant::now();
    let page = reqwest::Client::new().get(format!("{}/verify-code", stack.gateway_url)).send().await.unwrap();
    let answered = started.elapsed();
    assert_eq!(page.status().as_u16(), 200);
    assert!(answered < Duration::from_secs(1), "{answered:?}");

    // Every half-sent request is closed by the gateway once the header timeout passes.
    let closed = futures::future::join_all(slow.into_iter().map(|mut stream| async move {
        let mut buffer = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => return Some(opened.elapsed()),
                Ok(Ok(_)) => continue, // whatever it says before closing
                Err(_) => return None,
            }
        }
    }))
    .await;
    let open: usize = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} of {HALF_SENT} half-sent requests still open after 10 s");
    let latest = closed.iter().flatten().max().unwrap();
    println!(
        "{HALF_SENT} half-sent requests: a normal request answered in {answered:?}; all closed by the gateway, the last {latest:?} after they were opened (header timeout 1 s)"
    );
    assert!(*latest < Duration::from_secs(5), "{latest:?}");

    // A request whose body never comes in full: 408 at the request timeout.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"POST /resend HTTP/1.1\r\nHost: verimail\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nemail=a")
        .await
        .unwrap();
    let started = Instant::now();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    println!("a body that never finished: 408 after {:?} (request timeout 2 s)", started.elapsed());
}

/// POST /resend from `local` (a loopback address) with these forwarding headers.
async fn resend(stack: &Stack, local: &str, headers: &[(&str, &str)], n: &mut u32) -> u16 {
    *n += 1;
    let client = reqwest::Client::builder().local_address(local.parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let mut request =
        client.post(format!("{}/resend", stack.gateway_url)).form(&[("email", format!("p{n}@example.com"))]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_browser_has_its_own_allowance_and_nobody_else_can_name_one() {
    let stack = Stack::start_with(StackOptions {
        limits: Some(Rate::new(3, Duration::from_secs(60))),
        trusted_proxies: "127.0.0.1/32".into(),
        ..StackOptions::default()
    })
    .await;
    let n = &mut 0;
    let proxy = "127.0.0.1";
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for _ in 0..3 {
        assert_eq!(resend(&stack, proxy, &from("203.0.113.1"), n).await, 202);
    }
    assert_eq!(resend(&stack, proxy, &from("203.0.113.1"), n).await, 429, "the first browser's allowance is spent");
    assert_eq!(resend(&stack, proxy, &from("203.0.113.2"), n).await, 202, "another browser behind the same proxy");
    let forwarded = [("forwarded", "for=198.51.100.7;proto=https")];
    assert_eq!(resend(&stack, proxy, &forwarded, n).await, 202, "named by Forwarded");

    // An IPv6 browser is its /64: the addresses of one line share one allowance.
    for _ in 0..3 {
        assert_eq!(resend(&stack, proxy, &from("2001:db8:0:1::1"), n).await, 202);
    }
    assert_eq!(resend(&stack, proxy, &from("2001:db8:0:1::ffff"), n).await, 429, "the same /64");
    assert_eq!(resend(&stack, proxy, &from("2001:db8:0:2::1"), n).await, 202, "another /64");

    // A peer that is no trusted proxy is the client, whatever its headers claim.
    let stranger = "127.0.0.2";
    for ip in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        assert_eq!(resend(&stack, stranger, &from(ip), n).await, 202);
    }
    assert_eq!(resend(&stack, stranger, &from("192.0.2.4"), n).await, 429, "forged headers give no fresh allowance");
    println!(
        "behind 127.0.0.1 (trusted): browsers by X-Forwarded-For/Forwarded, IPv6 by /64; from 127.0.0.2 (untrusted) the 4th post is 429 whatever it forwards"
    );
}
