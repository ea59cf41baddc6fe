//! The operator's view of parked messages (`verimail.ops.v1.ParkingService`): list what a
//! service's consumers gave up on, and replay one. The PARKED stream is the record.

use crate::bus;
use async_nats::HeaderMap;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, ErrorCode, stream::RawMessageErrorKind};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use verimail_proto::ops::v1 as pb;
use verimail_proto::ops::v1::parking_service_server::ParkingServiceServer;
use verimail_proto::{headers, streams};
use verimail_server::admin::{AdminCredential, OperatorsOnly};

pub use verimail_proto::ops::v1::parking_service_server::SERVICE_NAME;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// The parking RPCs for the consumers `durables` (those this service owns).
pub struct Parking {
    js: jetstream::Context,
    durables: Vec<&'static str>,
}

impl Parking {
    /// Ops RPCs: callers present the admin credential, checked once in front of the service.
    pub fn server(
        js: jetstream::Context,
        durables: Vec<&'static str>,
        admin: AdminCredential,
    ) -> InterceptedService<ParkingServiceServer<Parking>, OperatorsOnly> {
        let server = ParkingServiceServer::new(Parking { js, durables })
            .max_decoding_message_size(verimail_server::grpc::MAX_MESSAGE_BYTES);
        InterceptedService::new(server, admin.guard())
    }

    async fn parked_stream(&self) -> Result<Option<jetstream::stream::Stream>, Status> {
        parked_stream(&self.js).await.map_err(nats_unavailable)
    }

    /// This service's parked messages on one consumer's subject, from `after + 1` on, at most
    /// `limit` of them.
    async fn list_for(
        &self,
        stream: &jetstream::stream::Stream,
        durable: &str,
        after: u64,
        limit: usize,
        into: &mut Vec<pb::ParkedMessage>,
    ) -> Result<(), Status> {
        let subject = streams::parked_subject(durable);
        let mut next = after + 1;
        let start = into.len();
        while into.len() - start < limit {
            let Some(message) = bus::next_on_subject(stream, &subject, next).await.map_err(nats_unavailable)? else {
                break;
            };
            next = message.sequence + 1;
            into.push(to_proto(durable, message));
        }
        Ok(())
    }
}

/// The PARKED stream; none before anything was parked.
async fn parked_stream(
    js: &jetstream::Context,
) -> Result<Option<jetstream::stream::Stream>, jetstream::context::GetStreamError> {
    match js.get_stream(bus::PARKED_STREAM.name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Removes from PARKED every message of `durables` about `user_id` (its `Verimail-User-Id`
/// header): a deleted user's parked events carry their address. How many it removed.
pub async fn forget_user(js: &jetstream::Context, durables: &[&str], user_id: &str) -> Result<u64, async_nats::Error> {
    let Some(stream) = parked_stream(js).await? else {
        return Ok(0);
    };
    let mut removed = 0;
    for durable in durables {
        let subject = streams::parked_subject(durable);
        let mut next = 1;
        while let Some(message) = bus::next_on_subject(&stream, &subject, next).await? {
            next = message.sequence + 1;
            if header(&message.headers, headers::USER_ID) == user_id {
                stream.delete_message(message.sequence).await?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn nats_unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("NATS: {e}"))
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default()
}

fn to_proto(durable: &str, message: jetstream::message::StreamMessage) -> pb::ParkedMessage {
    let headers = &message.headers;
    let parked_at = chrono::DateTime::from_timestamp(message.time.unix_timestamp(), message.time.nanosecond())
        .map(verimail_server::rfc3339)
        .unwrap_or_default();
    pb::ParkedMessage {
        sequence: message.sequence,
        consumer: durable.to_owned(),
        subject: header(headers, headers::PARKED_SUBJECT),
        event_id: bus::event_id_of(headers).unwrap_or_default(),
        event_type: header(headers, headers::EVENT_TYPE),
        error: header(headers, headers::PARKED_ERROR),
        attempts: header(headers, headers::PARKED_ATTEMPTS).parse().unwrap_or(0),
        parked_at,
        payload: message.payload.to_vec(),
    }
}

#[tonic::async_trait]
impl pb::parking_service_server::ParkingService for Parking {
    async fn list_parked(
        &self,
        request: Request<pb::ListParkedRequest>,
    ) -> Result<Response<pb::ListParkedResponse>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => DEFAULT_LIMIT,
            n if n > MAX_LIMIT => {
                return Err(verimail_server::grpc::invalid_argument("limit", format!("at most {MAX_LIMIT}")));
            }
            n => n,
        } as usize;
        let mut messages = Vec::new();
        if let Some(stream) = self.parked_stream().await? {
            for durable in &self.durables {
                self.list_for(&stream, durable, request.after_sequence, limit, &mut messages).await?;
            }
        }
        messages.sort_by_key(|m| m.sequence);
        messages.truncate(limit);
        Ok(Response::new(pb::ListParkedResponse { messages }))
    }

    async fn replay_parked(
        &self,
        request: Request<pb::ReplayParkedRequest>,
    ) -> Result<Response<pb::ReplayParkedResponse>, Status> {
        let sequence = request.into_inner().sequence;
        if sequence == 0 {
            return Err(verimail_server::grpc::invalid_argument("sequence", "required: the sequence ListParked gives"));
        }
        let not_found = || Status::not_found(format!("no parked message {sequence} for this service"));
        let stream = self.parked_stream().await?.ok_or_else(not_found)?;
        let message = match stream.get_raw_message(sequence).await {
            Ok(message) => message,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Err(not_found()),
            Err(e) => return Err(nats_unavailable(e)),
        };
        if !self.durables.iter().any(|d| message.subject.as_str() == streams::parked_subject(d)) {
            return Err(not_found());
        }
        let subject = header(&message.headers, headers::PARKED_SUBJECT);
        if subject.is_empty() {
            return Err(Status::failed_precondition(format!(
                "parked message {sequence} does not say where it came from"
            )));
        }
        let mut headers = HeaderMap::new();
        for name in [headers::EVENT_ID, headers::EVENT_TYPE, headers::USER_ID] {
            if let Some(value) = message.headers.get(name) {
                headers.insert(name, value.as_str());
            }
        }
        // A new message id: the original's may still be inside the duplicate window. The
        // same one for the same parked message, so replaying twice publishes once.
        headers.insert(headers::MSG_ID, format!("replay:{}:{sequence}", bus::PARKED_STREAM.name).as_str());
        let ack = self
            .js
            .publish_with_headers(subject.clone(), headers, message.payload.clone())
            .await
            .map_err(nats_unavailable)?
            .await
            .map_err(nats_unavailable)?;
        stream.delete_message(sequence).await.map_err(nats_unavailable)?;
        tracing::info!(sequence, %subject, stream_sequence = ack.sequence, "parked message replayed");
        Ok(Response::new(pb::ReplayParkedResponse { subject, stream_sequence: ack.sequence }))
    }
}
