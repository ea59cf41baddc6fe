//! Passwords: the length and strength rules, and argon2id hashing on a bounded pool of
//! threads (with the dummy hash an unknown address is checked against).

use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;

pub use verimail_server::address::Email;

/// A password within the length rules (counted in characters, not bytes).
#[derive(Clone, Debug)]
pub struct Password(SecretString);

impl Password {
    pub fn parse(raw: &str) -> Result<Password, String> {
        let chars = raw.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
        }
        Ok(Password(raw.into()))
    }
}

/// argon2id cost parameters. The defaults are OWASP's minimum (m=19456 KiB, t=2, p=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashCost {
    fn default() -> Self {
        HashCost { memory_kib: 19_456, iterations: 2, parallelism: 1 }
    }
}

impl Password {
    /// Refuses what an attacker guesses first: common passwords, keyboard walks, repeats,
    /// dates, and the address itself (zxcvbn's estimate below "somewhat guessable").
    pub fn check_strength(&self, email: &Email) -> Result<(), String> {
        let (local, domain) = email.as_str().split_once('@').unwrap_or((email.as_str(), ""));
        let separators = ['.', '_', '-', '+'];
        let joined = local.replace(separators, "");
        let mut personal: Vec<&str> = vec![email.as_str(), local, domain, &joined];
        personal.extend(local.split(separators).chain(domain.split('.')).filter(|part| part.len() >= 3));
        let estimate = zxcvbn::zxcvbn(self.0.expose_secret(), &personal);
        if estimate.score() >= zxcvbn::Score::Two {
            return Ok(());
        }
        let hint = estimate.feedback().and_then(|f| f.warning()).map(|w| format!(" ({w})")).unwrap_or_default();
        Err(format!("is too easy to guess{hint}; a few unrelated words make a strong one"))
    }
}

/// Hashes and checks passwords with argon2id on `concurrency` threads of its own, each reusing
/// one memory area (m KiB, taken at its first job) for every hash it computes. The hash itself
/// is computed by `argon2-rust` (a port of the reference implementation with SIMD chosen at
/// run time: about twice as fast as RustCrypto's `argon2` here, bit for bit the same output);
/// PHC strings are read and written, and hashes of older parameters checked, with `argon2`. A burst of
/// registrations or sign-ins queues for them: it can neither stall the async workers nor grow
/// memory beyond `concurrency` areas. (Hashing on Tokio's blocking pool allocated m KiB per hash
/// on whichever of its many threads ran it, and the allocator kept those areas: 862 MiB
/// resident under 64 concurrent registrations.)
#[derive(Clone)]
pub struct PasswordHasher {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

enum Work {
    Hash(Password),
    Check { phc: String, password: Password },
}

/// What checking a password against a stored hash found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub matches: bool,
    /// The hash was made with other parameters than the current ones: re-hash it now that the
    /// password is known (only meaningful when it matches).
    pub outdated: bool,
}

enum Done {
    Hashed(Result<String, String>),
    Checked(Checked),
}

struct Job {
    work: Work,
    done: tokio::sync::oneshot::Sender<Done>,
}

impl PasswordHasher {
    pub fn new(cost: HashCost, concurrency: usize) -> Result<Self, String> {
        let params =
            Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None).map_err(|e| e.to_string())?;
        let fast = fast_argon2(&params)?;
        // Waiting jobs are cheap (a password and a channel); the bound only stops a runaway.
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(4096);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..concurrency.max(1) {
            let (queue, params) = (queue.clone(), params.clone());
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || hash_worker(&queue, params, fast))
                .map_err(|e| format!("cannot start a hashing thread: {e}"))?;
        }
        Ok(PasswordHasher { jobs })
    }

    /// The PHC string (`$argon2id$v=19$m=…`), with a fresh random salt.
    pub async fn hash(&self, password: Password) -> Result<String, String> {
        match self.run(Work::Hash(password)).await? {
            Done::Hashed(hashed) => hashed,
            Done::Checked(_) => Err("the hashing thread answered another job".into()),
        }
    }

    /// Whether `password` is the one `phc` (a stored PHC string) was made from, with the
    /// parameters it names; the same work as a hash when the parameters are the current ones,
    /// so checking against a dummy hash takes as long as against a real one.
    pub async fn check(&self, phc: String, password: Password) -> Result<Checked, String> {
        match self.run(Work::Check { phc, password }).await? {
            Done::Checked(checked) => Ok(checked),
            Done::Hashed(_) => Err("the hashing thread answered another job".into()),
        }
    }

    async fn run(&self, work: Work) -> Result<Done, String> {
        use std::sync::mpsc::TrySendError;
        let (done, result) = tokio::sync::oneshot::channel();
        let stopped = || "the hashing threads have stopped".to_owned();
        match self.jobs.try_send(Job { work, done }) {
            Ok(()) => {}
            // A full queue blocks the sender: wait for room off the async workers.
            Err(TrySendError::Full(job)) => {
                let jobs = self.jobs.clone();
                tokio::task::spawn_blocking(move || jobs.send(job))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|_| stopped())?
            }
            Err(TrySendError::Disconnected(_)) => return Err(stopped()),
        }
        result.await.map_err(|_| "the hashing thread dropped the job".to_owned())
    }
}

/// One hashing thread: takes jobs until every sender is gone.
fn hash_worker(queue: &std::sync::Mutex<std::sync::mpsc::Receiver<Job>>, params: Params, fast: argon2_rust::Argon2) {
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    // Its memory is taken on the first job, then kept: an instance that never hashes never
    // holds it.
    let mut memory = fast.hasher();
    let in_flight = &crate::metrics::metrics().password_hashes_in_flight;
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        in_flight.inc();
        let done = match job.work {
            Work::Hash(password) => Done::Hashed(phc_hash(&argon2, &mut memory, password.0.expose_secret().as_bytes())),
            Work::Check { phc, password } => {
                Done::Checked(check(&argon2, &mut memory, &phc, password.0.expose_secret().as_bytes()))
            }
        };
        in_flight.dec();
        let _ = job.done.send(done);
    }
}

/// argon2id (version 0x13, a 32-byte output) with `params`, as `argon2-rust` computes it.
fn fast_argon2(params: &Params) -> Result<argon2_rust::Argon2, String> {
    use argon2_rust::params::{Memory, TagLen};
    let fast = argon2_rust::Params::builder()
        .memory(Memory::kib(u64::from(params.m_cost())))
        .passes(params.t_cost())
        .lanes(params.p_cost())
        .tag_len(TagLen::bytes(32))
        .build()
        .map_err(|e| format!("argon2 parameters: {e:?}"))?;
    Ok(argon2_rust::Argon2::new(argon2_rust::Algorithm::Argon2id, argon2_rust::Version::V0x13, fast))
}

/// Checks `password` against `phc`: in `memory` with `argon2` when the hash has the current
/// parameters, else with the parameters it names (and then it is outdated).
fn check(argon2: &Argon2, memory: &mut argon2_rust::Hasher, phc: &str, password: &[u8]) -> Checked {
    use argon2::password_hash::PasswordVerifier;
    use argon2::password_hash::phc::PasswordHash;
    use subtle::ConstantTimeEq;
    let refused = Checked { matches: false, outdated: false };
    let Ok(parsed) = PasswordHash::new(phc) else { return refused };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else { return refused };
    let current = argon2.params();
    let is_current = parsed.algorithm == argon2::ARGON2ID_IDENT
        && parsed.version == Some(Version::V0x13.into())
        && expected.len() == 32
        && Params::try_from(&parsed).is_ok_and(|p| {
            (p.m_cost(), p.t_cost(), p.p_cost()) == (current.m_cost(), current.t_cost(), current.p_cost())
        });
    if !is_current {
        let matches = Argon2::default().verify_password(password, &parsed).is_ok();
        return Checked { matches, outdated: true };
    }
    let mut output = [0u8; 32];
    if memory.hash_into(password, salt.as_ref(), &mut output).is_err() {
        return refused;
    }
    Checked { matches: bool::from(output.ct_eq(expected.as_bytes())), outdated: false }
}

/// A PHC string with the parameters of `cost` that no password matches (a random salt and a
/// random output), made without hashing: checking a password against it costs exactly what a
/// check against a real hash of these parameters costs. What an unknown address is checked
/// against.
pub fn dummy_hash(cost: HashCost) -> Result<String, String> {
    use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None).map_err(|e| e.to_string())?;
    let (salt, output): ([u8; 16], [u8; 32]) = (rand::random(), rand::random());
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(Salt::new(&salt).map_err(|e| e.to_string())?),
        hash: Some(Output::new(&output).map_err(|e| e.to_string())?),
    };
    Ok(hash.to_string())
}

/// Whether `password` is the one `phc` (a stored PHC string) was made from, with the
/// parameters it names. Blocking: call it off the async runtime's threads.
pub fn password_matches(phc: &str, password: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    argon2::password_hash::phc::PasswordHash::new(phc)
        .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// argon2id of `password` with a fresh 16-byte salt, in `memory`, as a PHC string.
fn phc_hash(argon2: &Argon2, memory: &mut argon2_rust::Hasher, password: &[u8]) -> Result<String, String> {
    use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
    let salt: [u8; 16] = rand::random();
    let mut output = [0u8; 32];
    memory.hash_into(password, &salt, &mut output).map_err(|e| format!("argon2: {e:?}"))?;
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(|e| e.to_string())?,
        salt: Some(Salt::new(&salt).map_err(|e| e.to_string())?),
        hash: Some(Output::new(&output).map_err(|e| e.to_string())?),
    };
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier;

    #[test]
    fn passwords_are_counted_in_characters() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"é".repeat(128)).is_ok(), "128 two-byte characters are 128 characters");
        assert!(Password::parse(&"x".repeat(129)).is_err());
        let shown = format!("{:?}", Password::parse("secret-password").unwrap());
        assert!(!shown.contains("secret-password") && shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn common_and_personal_passwords_are_refused() {
        let email = Email::parse("jane.doe@example.com").unwrap();
        for weak in
            ["password", "12345678", "qwertyuiop", "iloveyou1", "jane.doe@example.com", "janedoe1985", "aaaaaaaaaaaa"]
        {
            let password = Password::parse(weak).unwrap();
            assert!(password.check_strength(&email).is_err(), "{weak:?} should be refused");
        }
        let long =
            "seven amber kites drift over a quiet harbour while the ferry bell rings twice at dawn, glacier piano";
        for strong in ["correct horse battery", "another password", "Tr4vel-kettle-Orbit", long] {
            let password = Password::parse(strong).unwrap();
            assert!(password.check_strength(&email).is_ok(), "{strong:?} should pass");
        }
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_the_configured_cost_and_verify() {
        let cost = HashCost { memory_kib: 1024, iterations: 1, parallelism: 1 };
        let hasher = PasswordHasher::new(cost, 2).unwrap();
        let hash = hasher.hash(Password::parse("correct horse").unwrap()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        let parsed = argon2::password_hash::phc::PasswordHash::new(&hash).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"wrong horse", &parsed).is_err());
        assert!(password_matches(&hash, "correct horse"));
        assert!(!password_matches(&hash, "wrong horse"));
        assert!(!password_matches("not a hash", "correct horse"));
        let again = hasher.hash(Password::parse("correct horse").unwrap()).await.unwrap();
        assert_ne!(hash, again, "every hash has its own salt");
    }

    #[tokio::test]
    async fn checks_match_only_the_password_and_find_hashes_of_older_parameters() {
        let old = PasswordHasher::new(HashCost { memory_kib: 512, iterations: 1, parallelism: 1 }, 1).unwrap();
        let current = PasswordHasher::new(HashCost { memory_kib: 1024, iterations: 1, parallelism: 1 }, 1).unwrap();
        let password = || Password::parse("correct horse").unwrap();
        let wrong = || Password::parse("wrong horse!").unwrap();
        let hash = current.hash(password()).await.unwrap();
        assert_eq!(current.check(hash.clone(), password()).await.unwrap(), Checked { matches: true, outdated: false });
        assert_eq!(current.check(hash, wrong()).await.unwrap(), Checked { matches: false, outdated: false });
        let older = old.hash(password()).await.unwrap();
        assert_eq!(current.check(older.clone(), password()).await.unwrap(), Checked { matches: true, outdated: true });
        assert!(!current.check(older, wrong()).await.unwrap().matches);
        assert!(!current.check("not a hash".into(), password()).await.unwrap().matches);
        let dummy = dummy_hash(HashCost { memory_kib: 1024, iterations: 1, parallelism: 1 }).unwrap();
        assert!(dummy.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{dummy}");
        assert_eq!(current.check(dummy, password()).await.unwrap(), Checked { matches: false, outdated: false });
    }

    /// argon2-rust computes the hash: it must give RFC 9106's argon2id test vector, and the
    /// very bytes RustCrypto's argon2 gives for the same input, whatever the parameters.
    #[test]
    fn the_hash_is_rfc_9106_argon2id_and_bit_for_bit_rustcryptos() {
        // RFC 9106, 5.3: password 32 × 0x01, salt 16 × 0x02, secret 8 × 0x03, associated data
        // 12 × 0x04, m = 32 KiB, t = 3, p = 4, a 32-byte tag.
        let params = Params::new(32, 3, 4, Some(32)).unwrap();
        let mut tag = [0u8; 32];
        fast_argon2(&params).unwrap().hash_into_with_ad(&[1; 32], &[2; 16], &[3; 8], &[4; 12], &mut tag).unwrap();
        let expected = "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659";
        assert_eq!(tag.iter().map(|b| format!("{b:02x}")).collect::<String>(), expected);

        let long = "é".repeat(128);
        let passwords: [&[u8]; 5] = [b"", b"correct horse battery", long.as_bytes(), &[0xff; 200], b"\0\0pass"];
        for (m, t, p) in [(19_456, 2, 1), (1024, 1, 1), (64, 3, 4), (4096, 2, 2), (8, 1, 1)] {
            let params = Params::new(m, t, p, Some(32)).unwrap();
            let fast = fast_argon2(&params).unwrap();
            let mut reused = fast.hasher();
            let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
            for password in passwords {
                let salt: [u8; 16] = rand::random();
                let (mut ours, mut theirs, mut again) = ([0u8; 32], [0u8; 32], [0u8; 32]);
                fast.hash_into(password, &salt, &mut ours).unwrap();
                reused.hash_into(password, &salt, &mut again).unwrap();
                reference.hash_password_into(password, &salt, &mut theirs).unwrap();
                assert_eq!((ours, again), (theirs, theirs), "m={m} t={t} p={p} password {password:?}");
            }
        }
    }

    /// A hash RustCrypto's argon2 wrote (every stored hash before argon2-rust) checks on the
    /// fast path; one the hasher writes verifies with RustCrypto's.
    #[tokio::test]
    async fn hashes_of_either_implementation_verify_with_the_other() {
        use argon2::password_hash::PasswordHasher as _;
        let cost = HashCost { memory_kib: 1024, iterations: 2, parallelism: 1 };
        let hasher = PasswordHasher::new(cost, 1).unwrap();
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None).unwrap();
        let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        for password in ["correct horse battery", "Tr4vel-kettle-Orbit", &"é".repeat(128)] {
            let theirs = reference.hash_password(password.as_bytes()).unwrap().to_string();
            let checked = hasher.check(theirs, Password::parse(password).unwrap()).await.unwrap();
            assert_eq!(checked, Checked { matches: true, outdated: false });
            let ours = hasher.hash(Password::parse(password).unwrap()).await.unwrap();
            let parsed = argon2::password_hash::phc::PasswordHash::new(&ours).unwrap();
            assert!(reference.verify_password(password.as_bytes(), &parsed).is_ok());
            assert!(reference.verify_password(b"another password", &parsed).is_err());
        }
    }

    #[test]
    fn default_cost_is_owasp_minimum() {
        assert_eq!(HashCost::default(), HashCost { memory_kib: 19_456, iterations: 2, parallelism: 1 });
    }
}
