//! A DNS server inside the test, on a loopback UDP port: it answers MX and A queries from a
//! small zone the test gives it, NXDOMAIN for names it does not know, SERVFAIL where told. It
//! is the resolver user-service asks with `EMAIL_DNS_SERVER`; the task ends with the runtime.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, MX};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

/// What the zone holds for a name.
#[derive(Debug, Clone)]
pub enum Entry {
    /// An MX record pointing at this host ("." for a null MX, RFC 7505).
    Mx(&'static str),
    /// An A record alone (no MX).
    A(Ipv4Addr),
    /// The server fails (SERVFAIL) for this name.
    Fails,
}

pub struct DnsServer {
    pub addr: SocketAddr,
}

impl DnsServer {
    pub async fn start(zone: &[(&str, Entry)]) -> DnsServer {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind a DNS port");
        let addr = socket.local_addr().expect("the DNS address");
        let zone: HashMap<String, Entry> =
            zone.iter().map(|(name, entry)| (format!("{}.", name.trim_end_matches('.')), entry.clone())).collect();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                if let Ok(reply) = answer(&query, &zone).to_vec() {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        DnsServer { addr }
    }
}

fn answer(query: &Message, zone: &HashMap<String, Entry>) -> Message {
    let mut reply = Message::new();
    reply.set_id(query.id());
    reply.set_message_type(MessageType::Response);
    reply.set_op_code(query.op_code());
    reply.set_recursion_desired(query.recursion_desired());
    reply.set_recursion_available(true);
    reply.add_queries(query.queries().to_vec());
    let Some(question) = query.queries().first() else {
        reply.set_response_code(ResponseCode::FormErr);
        return reply;
    };
    let name = question.name().to_ascii().to_ascii_lowercase();
    match (zone.get(&name), question.query_type()) {
        (None, _) => {
            reply.set_response_code(ResponseCode::NXDomain);
        }
        (Some(Entry::Fails), _) => {
            reply.set_response_code(ResponseCode::ServFail);
        }
        (Some(Entry::Mx(host)), RecordType::MX) => {
            let exchange = Name::from_ascii(host).expect("an MX host name");
            reply.add_answer(Record::from_rdata(question.name().clone(), 60, RData::MX(MX::new(10, exchange))));
        }
        (Some(Entry::A(ip)), RecordType::A) => {
            reply.add_answer(Record::from_rdata(question.name().clone(), 60, RData::A(A(*ip))));
        }
        // The name exists, without records of the type asked: NOERROR, no answer.
        (Some(_), _) => {}
    }
    reply
}
