//! Limits every instance of a part shares: one NATS JetStream key-value bucket per limit, so N
//! instances behind a balancer allow what one would.
//!
//! Each bucket is an in-memory stream (`KV_limits_<part>_<limit>`) that keeps one value per
//! key and forgets a key once its allowance is full again (each write's time to live, NATS
//! 2.11's per-message TTL; forgetting then changes no answer), at the latest `per` after its
//! last write, and holds at most [`super::MAX_KEYS`] keys, dropping the least recently written
//! past them. A key is stored as the first 18 bytes of its SHA-256
//! (base64url): NATS never holds a client's or a mailbox's address, and any key fits NATS'
//! key syntax. Writes are compare-and-set on the key's revision, so two instances counting at
//! once both count.
//!
//! Within an instance the checks of one key take turns (a lock per key's hash, of 64), so a
//! busy client's concurrent calls do not race each other's writes; instances race only each
//! other, and a check that loses [`ATTEMPTS`] races in a row is answered from memory.
//!
//! While NATS cannot answer (an operation takes longer than [`OP_TIMEOUT`] or fails), the
//! instance answers from its own memory, as it did before limits were shared, for
//! [`RETRY_AFTER`] before it asks NATS again, and counts each such answer
//! (`verimail_limit_checks_unshared_total`): a NATS outage degrades the limits to one
//! instance's count, and never fails or stalls the calls they guard.

use async_nats::jetstream::{self, kv, stream};
use base64::Engine;
use sha2::Digest;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::OnceCell;

/// Longest wait for one NATS operation before the instance answers from its own memory.
pub const OP_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failed operation, how long the instance answers alone before it asks NATS again.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Compare-and-set attempts on one key before the instance answers the call alone (each lost
/// attempt means another instance counted the same key at that moment; within an instance the
/// checks of one key take turns, so only other instances contend).
const ATTEMPTS: usize = 8;
/// Locks the checks of an instance take turns on, by key: a key's checks never race each
/// other's compare-and-set within one instance.
const TURNS: usize = 64;
/// Keys whose last state this instance wrote or read are remembered (at most this many a
/// bucket), so their next check writes at once, in one round trip; see [`Bucket::update`].
const KNOWN: usize = 4096;
/// The shortest time to live NATS keeps a message for.
const MIN_TTL: Duration = Duration::from_secs(1);

/// The NATS side of a part's limits: its JetStream, its name (in each bucket's name) and the
/// replicas each bucket is kept on.
pub struct Nats {
    js: jetstream::Context,
    part: &'static str,
    replicas: usize,
    /// Microseconds since the epoch before which NATS is not asked (after a failure).
    quiet_until: AtomicU64,
}

impl Nats {
    pub fn new(js: jetstream::Context, part: &'static str, replicas: usize) -> Arc<Nats> {
        Arc::new(Nats { js, part, replicas, quiet_until: AtomicU64::new(0) })
    }

    /// The bucket of one limit (created on first use). `guess`: a check may start from the
    /// state this instance last saw of its key (right for values others only ever move
    /// further, as a limit's use; wrong where another instance may reset them).
    pub fn bucket(self: &Arc<Nats>, limit: &'static str, per: Duration, max_keys: usize, guess: bool) -> Bucket {
        Bucket {
            nats: self.clone(),
            name: format!("limits_{}_{limit}", self.part),
            per,
            max_keys,
            store: OnceCell::new(),
            turns: (0..TURNS).map(|_| tokio::sync::Mutex::new(())).collect(),
            known: guess.then(|| std::sync::Mutex::new(hashlink::LruCache::new(KNOWN))),
        }
    }

    fn available(&self) -> bool {
        now_micros() >= self.quiet_until.load(Ordering::Relaxed)
    }

    fn failed(&self, bucket: &str, error: &dyn std::fmt::Display) {
        let until = now_micros() + RETRY_AFTER.as_micros() as u64;
        // One warning per outage, not one per call.
        if self.quiet_until.swap(until, Ordering::Relaxed) < now_micros() {
            tracing::warn!(%bucket, %error, retry_in = ?RETRY_AFTER, "shared limits unavailable; this instance counts alone meanwhile");
        }
    }
}

/// One limit's bucket.
pub struct Bucket {
    nats: Arc<Nats>,
    name: String,
    per: Duration,
    max_keys: usize,
    store: OnceCell<kv::Store>,
    turns: Box<[tokio::sync::Mutex<()>]>,
    /// What this instance last saw of recent keys.
    known: Option<std::sync::Mutex<hashlink::LruCache<String, Seen>>>,
}

/// A key's state as NATS last told it: the revision to write after, and the value.
type Known = (Option<u64>, Option<bytes::Bytes>);

/// What an instance last saw of a key.
#[derive(Clone)]
enum Seen {
    /// The state it wrote or read last.
    State(Known),
    /// Another instance wrote it since this one's guess: read it first from now on.
    Contested,
}

/// Why NATS gave no answer (the caller answers from memory).
#[derive(Debug)]
pub struct Unavailable;

impl Bucket {
    async fn store(&self) -> Result<&kv::Store, String> {
        self.store
            .get_or_try_init(|| async {
                let js = &self.nats.js;
                js.create_or_update_stream(stream::Config {
                    name: format!("KV_{}", self.name),
                    description: Some("Verimail: a rate limit every instance shares".into()),
                    subjects: vec![format!("$KV.{}.>", self.name)],
                    max_messages_per_subject: 1,
                    max_messages: i64::try_from(self.max_keys).unwrap_or(i64::MAX),
                    // Each key goes when its allowance is full again (its time to live), at
                    // the latest a window after its last write.
                    max_age: self.per,
                    allow_message_ttl: true,
                    storage: stream::StorageType::Memory,
                    num_replicas: self.nats.replicas,
                    discard: stream::DiscardPolicy::Old,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
                js.get_key_value(&self.name).await.map_err(|e| e.to_string())
            })
            .await
    }

    /// Runs `op` against NATS within [`OP_TIMEOUT`]; `Unavailable` (and NATS left alone for a
    /// while) when it fails or is too slow.
    async fn ask<T, E>(&self, op: impl Future<Output = Result<T, E>>) -> Result<Result<T, E>, Unavailable> {
        match tokio::time::timeout(OP_TIMEOUT, op).await {
            Ok(answer) => Ok(answer),
            Err(_) => {
                self.nats.failed(&self.name, &"timed out");
                Err(Unavailable)
            }
        }
    }

    /// The key's current value and the revision to write after it (`None`: never written, or
    /// forgotten).
    async fn read(&self, store: &kv::Store, key: &str) -> Result<Known, Unavailable> {
        match self.ask(store.entry(key)).await? {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => Ok((Some(entry.revision), Some(entry.value))),
            Ok(Some(entry)) => Ok((Some(entry.revision), None)),
            Ok(None) => Ok((None, None)),
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    fn unavailable(&self, error: &dyn std::fmt::Display) -> Unavailable {
        self.nats.failed(&self.name, error);
        Unavailable
    }

    async fn ready(&self) -> Result<&kv::Store, Unavailable> {
        if !self.nats.available() {
            return Err(Unavailable);
        }
        self.ask(self.store()).await?.map_err(|e| self.unavailable(&e))
    }

    /// Reads `key`, lets `next` decide from its value what to write (or to write nothing and
    /// answer), and writes it if nobody wrote the key meanwhile, else reads again: after
    /// [`ATTEMPTS`] lost races, `Unavailable` (the caller answers alone; NATS is not left alone
    /// for it).
    ///
    /// A guessing bucket starts from the state this instance last saw of the key, or from
    /// none for a key it does not know (most keys are new: a new mailbox, a new client), and
    /// writes at once: one round trip when the guess holds, and the compare-and-set refuses a
    /// write after a state that was not the last, which sends it back to read. A refusal
    /// decided from a guess stands: others only ever move a limit's use further.
    pub async fn update<T>(&self, key: &str, mut next: impl FnMut(Option<&[u8]>) -> Step<T>) -> Result<T, Unavailable> {
        let store = self.ready().await?;
        let (key, turn) = hashed(key);
        let _turn = self.turns[turn % self.turns.len()].lock().await;
        // The state to start from without reading: the last seen, or none for a key never
        // seen; nothing (read first) in a bucket that does not guess, or for a contested key.
        let mut guess = match self.known.as_ref().map(|known| known.lock().map(|mut known| known.get(&key).cloned())) {
            Some(Ok(None)) => Some((None, None)),
            Some(Ok(Some(Seen::State(state)))) => Some(state),
            _ => None,
        };
        for _ in 0..ATTEMPTS {
            let (guessed, (revision, value)) = match guess.take() {
                Some(state) => (true, state),
                None => (false, self.read(store, &key).await?),
            };
            let (write, forget_after, answer) = match next(value.as_deref()) {
                Step::Answer(answer) => {
                    self.remember(&key, Seen::State((revision, value)), guessed);
                    return Ok(answer);
                }
                Step::Write(write, forget_after, answer) => (bytes::Bytes::from(write), forget_after, answer),
            };
            let ttl =
                Duration::from_secs(forget_after.as_secs() + u64::from(forget_after.subsec_nanos() > 0)).max(MIN_TTL);
            let written = match revision {
                Some(revision) => self.ask(self.write_after(&key, write.clone(), revision, ttl)).await?,
                None => self
                    .ask(store.create_with_ttl(&key, write.clone(), ttl))
                    .await?
                    .map_err(|e| (e.kind() == kv::CreateErrorKind::AlreadyExists, e.to_string())),
            };
            match written {
                Ok(revision) => {
                    self.remember(&key, Seen::State((Some(revision), Some(write))), guessed);
                    return Ok(answer);
                }
                Err((true, _)) => {
                    if guessed {
                        self.remember(&key, Seen::Contested, true);
                    }
                    continue;
                }
                Err((false, e)) => return Err(self.unavailable(&e)),
            }
        }
        Err(Unavailable)
    }

    /// Writes `value` to `key` if its last revision is still `revision`, to be forgotten after
    /// `ttl` (kv::Store's update takes no time to live): the new revision, or whether another
    /// write came first and what went wrong.
    async fn write_after(
        &self,
        key: &str,
        value: bytes::Bytes,
        revision: u64,
        ttl: Duration,
    ) -> Result<u64, (bool, String)> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, revision.to_string().as_str());
        headers.insert(async_nats::header::NATS_MESSAGE_TTL, ttl.as_secs().to_string().as_str());
        let subject = format!("$KV.{}.{key}", self.name);
        let race =
            |e: &jetstream::context::PublishError| e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence;
        match self.nats.js.publish_with_headers(subject, headers, value).await {
            Ok(ack) => ack.await.map(|ack| ack.sequence).map_err(|e| (race(&e), e.to_string())),
            Err(e) => Err((race(&e), e.to_string())),
        }
    }

    /// Remembers what was seen of `key`; a contested key stays contested but after a guess.
    fn remember(&self, key: &str, seen: Seen, guessed: bool) {
        if let Some(Ok(mut known)) = self.known.as_ref().map(|known| known.lock())
            && (guessed || !matches!(known.peek(key), Some(Seen::Contested)))
        {
            known.insert(key.to_owned(), seen);
        }
    }

    /// Forgets `key` (its next count starts afresh).
    ///
    /// Only a key that holds a value is purged, and its purge marker goes a second later: a
    /// key with nothing to forget (most sign-ins succeed at once) costs a read and no memory.
    pub async fn forget(&self, key: &str) -> Result<(), Unavailable> {
        let store = self.ready().await?;
        let key = hashed(key).0;
        if self.read(store, &key).await?.1.is_none() {
            return Ok(());
        }
        self.ask(store.purge_with_ttl(&key, MIN_TTL)).await?.map_err(|e| self.unavailable(&e))
    }
}

/// What [`Bucket::update`] does with a value it read.
pub enum Step<T> {
    /// Write this, to be forgotten after the time given (the key is as good as new by then;
    /// at least a second), then answer.
    Write(Vec<u8>, Duration, T),
    /// Write nothing; answer.
    Answer(T),
}

/// The wall clock in microseconds since the epoch: every instance's clock, so instances must
/// keep time (NTP); a clock a second off shifts a window by a second.
pub fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_micros() as u64)
}

/// A key as NATS stores it (24 base64url characters of its SHA-256), and a number from the
/// same hash to pick its turn by.
fn hashed(key: &str) -> (String, usize) {
    let digest = sha2::Sha256::digest(key.as_bytes());
    (base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..18]), usize::from(digest[31]))
}

/// GCRA on a shared value (the theoretical arrival time, microseconds since the epoch, 8 bytes
/// big-endian): the same answers as the in-memory limiter, `count` at once refilled evenly
/// over `per`. `Ok(())` counts the call; `Err(wait)` refuses it and counts nothing.
pub async fn gcra(bucket: &Bucket, key: &str, count: u32) -> Result<Result<(), Duration>, Unavailable> {
    let per = bucket.per.as_micros() as u64;
    let interval = (per / u64::from(count.max(1))).max(1);
    bucket
        .update(key, |value| {
            let now = now_micros();
            let tat = value.and_then(|v| v.try_into().ok()).map_or(0, u64::from_be_bytes).max(now);
            let next = tat + interval;
            if next > now + per {
                Step::Answer(Err(Duration::from_micros(next - now - per)))
            } else {
                // Once `next` has passed the key is as good as new: it goes then.
                Step::Write(next.to_be_bytes().to_vec(), Duration::from_micros(next - now), Ok(()))
            }
        })
        .await
}

/// Calls answered from an instance's own memory because NATS could not answer.
pub static UNSHARED: LazyLock<prometheus_client::metrics::counter::Counter> = LazyLock::new(|| {
    crate::metrics::register(
        "limit_checks_unshared",
        "Rate-limit checks this instance answered alone because the shared limits (NATS) could not answer",
        Default::default(),
    )
});

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_hashed_into_nats_key_syntax_and_hide_the_address() {
        let (key, _) = super::hashed("victim@example.com");
        assert_eq!(key.len(), 24);
        assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{key}");
        assert!(!key.contains("victim"));
        assert_ne!(key, super::hashed("victim@example.org").0);
    }
}
