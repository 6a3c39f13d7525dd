//! The key hierarchy of personal data (crypto-shredding).
//!
//! - The **master key** (32 random bytes, base64 in `--master-key-file`; the embedded
//!   default makes one in the data directory, mode 0600, on first start) never reaches the
//!   store. The store records only its id (a hash), so that a start with another master
//!   key is refused instead of writing data no one can read back.
//! - Each customer has a **data key** (AES-256-GCM, 32 random bytes), stored wrapped by the
//!   master key (`data_keys`; the wrapping's associated data names the key id and the
//!   customer, so a wrapped key cannot be moved to another customer). Rotating the master
//!   key re-wraps the data keys and touches no event.
//! - Every personal value of an event is sealed with its customer's data key before the
//!   append ([`Keyring::seal_event`], called by the command bus): a random 96-bit nonce, the
//!   key id as associated data, `{"keyId", "sealed"}` on the wire.
//! - An **erasure** destroys the data key: every sealed copy (store, Kafka, dead letters,
//!   backups) becomes noise, and readers show the marker `{"erased": true}`.
//!
//! Opened keys are cached for [`KEY_CACHE_TTL`], so an erasure made by another process is
//! honoured here within that time (this process's own erasures at once).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::Utc;
use cornershop_domain::{DomainEvent, Personal, Sealed};
use cornershop_store::{DataKeyRecord, DataKeys, Erasure, StoreError};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// How long an opened data key (or the knowledge that it is erased) is trusted.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
/// At most this many opened keys are kept; past it the cache starts over.
const KEY_CACHE_MAX: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the master key in {file} (id {given}) is not the one this store's data keys are \
         wrapped with (id {recorded}); start with the right --master-key-file, or rotate \
         keys with the old one first (nothing was changed)"
    )]
    WrongMasterKey {
        file: String,
        given: String,
        recorded: String,
    },
    #[error("the master key file {file} cannot be used: {reason}")]
    BadMasterKeyFile { file: String, reason: String },
    #[error("data key {0} cannot be unwrapped with this master key (is the master key right?)")]
    Unwrap(String),
    #[error("a sealed value under key {0} is damaged (it does not authenticate)")]
    Damaged(String),
    #[error("this command holds no master key, so it neither seals nor opens personal data")]
    Locked,
    #[error(
        "the store's data keys were re-wrapped with another master key than this process's \
         (id {0}): restart it with the new --master-key-file"
    )]
    Rotated(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key that wraps every data key. Its bytes never reach a log: `Debug` shows the id.
pub struct MasterKey {
    key: LessSafeKey,
    id: String,
    /// Where it came from, for messages.
    origin: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source is available");
    bytes
}

fn aes_key(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key"))
}

fn seal_bytes(key: &LessSafeKey, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let nonce = random_bytes::<NONCE_LEN>();
    let mut in_out = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut in_out,
    )
    .expect("a value far below AES-GCM's limit seals");
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&in_out);
    sealed
}

fn open_bytes(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut in_out = ciphertext.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut in_out).ok()?;
    Some(plain.to_vec())
}

fn wrapping_aad(key_id: &str, customer_id: &str) -> Vec<u8> {
    format!("cornershop data key\n{key_id}\n{customer_id}").into_bytes()
}

impl MasterKey {
    fn from_bytes(bytes: [u8; 32], origin: String) -> Self {
        let digest = Sha256::new()
            .chain_update(b"cornershop master key id\n")
            .chain_update(bytes)
            .finalize();
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            key: aes_key(&bytes),
            id,
            origin,
        }
    }

    /// A new random master key (tests, tools, and the first start of the embedded shop).
    pub fn generate() -> Self {
        Self::from_bytes(random_bytes(), "a generated key".into())
    }

    /// Reads a master key file: the base64 of 32 bytes (white space around it ignored).
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let bad = |reason: String| KeyError::BadMasterKeyFile {
            file: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| bad("it is not base64 text".into()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| bad(format!("it holds {} bytes, not 32", b.len())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        file = %path.display(),
                        "the master key file can be read by others than its owner (chmod 600 it)"
                    );
                }
            }
        }
        Ok(Self::from_bytes(bytes, path.display().to_string()))
    }

    /// Reads the master key file, creating it (mode 0600, a new random key) when it does
    /// not exist. Whether a new key may be used at all is [`Keyring::open`]'s to check.
    /// Processes that start together with the same file agree on one key: the key is
    /// written to a file of its own and linked into place only whole, and a process that
    /// finds the place taken reads the key there.
    pub fn read_or_create(path: &Path) -> Result<Self, KeyError> {
        if path.exists() {
            return Self::read(path);
        }
        let bad = |reason: String| KeyError::BadMasterKeyFile {
            file: path.display().to_string(),
            reason,
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| bad(e.to_string()))?;
        let bytes: [u8; 32] = random_bytes();
        let draft = dir.join(format!(
            ".master-key-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = options.open(&draft).and_then(|mut file| {
            use std::io::Write;
            writeln!(file, "{}", STANDARD.encode(bytes))?;
            file.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&draft);
            return Err(bad(e.to_string()));
        }
        let linked = std::fs::hard_link(&draft, path);
        let _ = std::fs::remove_file(&draft);
        match linked {
            Ok(()) => {
                tracing::info!(file = %path.display(), "created a new master key");
                Ok(Self::from_bytes(bytes, path.display().to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::read(path),
            Err(e) => Err(bad(e.to_string())),
        }
    }

    /// The key's id: the first 8 bytes of a SHA-256 of it, in hex. Says which key, reveals
    /// nothing of it.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, key_id: &str, customer_id: &str, data_key: &[u8; 32]) -> Vec<u8> {
        seal_bytes(&self.key, &wrapping_aad(key_id, customer_id), data_key)
    }

    /// The data key's bytes, unwrapped (authenticated against its key id and customer).
    fn unwrap_bytes(&self, record: &DataKeyRecord, wrapped: &[u8]) -> Result<[u8; 32], KeyError> {
        open_bytes(
            &self.key,
            &wrapping_aad(&record.key_id, &record.customer_id),
            wrapped,
        )
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| KeyError::Unwrap(record.key_id.clone()))
    }

    fn unwrap(&self, record: &DataKeyRecord, wrapped: &[u8]) -> Result<LessSafeKey, KeyError> {
        Ok(aes_key(&self.unwrap_bytes(record, wrapped)?))
    }
}

/// A personal value as a reader gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    Clear(String),
    /// The customer's data was erased.
    Erased,
}

impl Opened {
    pub fn into_clear(self) -> Option<String> {
        match self {
            Self::Clear(value) => Some(value),
            Self::Erased => None,
        }
    }
}

/// A data key as this process holds it: opened, or known to be erased.
#[derive(Clone)]
struct Held {
    key_id: String,
    customer_id: String,
    key: Option<Arc<LessSafeKey>>,
    fetched: Instant,
}

#[derive(Default)]
struct Cache {
    by_id: HashMap<String, Held>,
    by_customer: HashMap<String, String>,
}

/// See the module documentation.
pub struct Keyring {
    store: Arc<dyn DataKeys>,
    master: MasterKey,
    /// A keyring without the master key (see [`Keyring::locked`]).
    locked: bool,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("master", &self.master)
            .finish()
    }
}

impl Keyring {
    /// The keyring of a store: refuses a master key other than the one the store's data
    /// keys are wrapped with (the first start records its key's id).
    pub async fn open(store: Arc<dyn DataKeys>, master: MasterKey) -> Result<Self, KeyError> {
        let recorded = store.claim_master_key(master.id()).await?;
        if recorded != master.id() {
            return Err(KeyError::WrongMasterKey {
                file: master.origin.clone(),
                given: master.id().to_string(),
                recorded,
            });
        }
        Ok(Self::unchecked(store, master))
    }

    /// A keyring that does not check the master key against the store at once: for tests
    /// and tools whose store is new. Its first new data key claims the master key (and is
    /// refused if the store records another).
    pub fn unchecked(store: Arc<dyn DataKeys>, master: MasterKey) -> Self {
        Self {
            store,
            master,
            locked: false,
            cache: Mutex::default(),
        }
    }

    /// A keyring for a command that reads events and never needs a personal value (the
    /// read models' verify and rebuild): it holds no master key, and sealing or opening
    /// refuses with [`KeyError::Locked`].
    pub fn locked(store: Arc<dyn DataKeys>) -> Self {
        Self {
            locked: true,
            ..Self::ephemeral(store)
        }
    }

    /// A keyring with a new random master key, unchecked: tests' and benchmarks'.
    pub fn ephemeral(store: Arc<dyn DataKeys>) -> Self {
        Self::unchecked(store, MasterKey::generate())
    }

    pub fn master_key_id(&self) -> &str {
        self.master.id()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, held: Held) {
        let mut cache = self.cache();
        if cache.by_id.len() >= KEY_CACHE_MAX {
            *cache = Cache::default();
        }
        cache
            .by_customer
            .insert(held.customer_id.clone(), held.key_id.clone());
        cache.by_id.insert(held.key_id.clone(), held);
    }

    fn fresh(held: &Held) -> bool {
        held.fetched.elapsed() < KEY_CACHE_TTL
    }

    fn hold(&self, record: &DataKeyRecord) -> Result<Held, KeyError> {
        if self.locked {
            return Err(KeyError::Locked);
        }
        let key = match &record.wrapped {
            Some(wrapped) => Some(Arc::new(self.master.unwrap(record, wrapped)?)),
            None => None,
        };
        let held = Held {
            key_id: record.key_id.clone(),
            customer_id: record.customer_id.clone(),
            key,
            fetched: Instant::now(),
        };
        self.remember(held.clone());
        Ok(held)
    }

    /// The customer's data key, made when they have none; `key: None` when erased.
    async fn key_for(&self, customer_id: &str) -> Result<Held, KeyError> {
        if self.locked {
            return Err(KeyError::Locked);
        }
        let cached = {
            let cache = self.cache();
            cache
                .by_customer
                .get(customer_id)
                .and_then(|id| cache.by_id.get(id))
                .filter(|held| Self::fresh(held))
                .cloned()
        };
        if let Some(held) = cached {
            return Ok(held);
        }
        if let Some(record) = self.store.data_key_of(customer_id).await? {
            return self.hold(&record);
        }
        let key_id = format!("dk_{}", uuid::Uuid::new_v4().simple());
        let bytes: [u8; 32] = random_bytes();
        let record = DataKeyRecord {
            wrapped: Some(self.master.wrap(&key_id, customer_id, &bytes)),
            key_id,
            customer_id: customer_id.to_string(),
            created_at: Utc::now(),
            erased_at: None,
        };
        // Another writer may have made the customer's key meanwhile: theirs is kept.
        let stored = match self
            .store
            .insert_data_key(&record, self.master.id())
            .await?
        {
            Some(stored) => stored,
            None => {
                // Refused: the store records another master key, or none yet (a keyring
                // made `unchecked` claims it on first use, as `open` does at start).
                let recorded = self.store.claim_master_key(self.master.id()).await?;
                if recorded != self.master.id() {
                    return Err(KeyError::Rotated(self.master.id().to_string()));
                }
                self.store
                    .insert_data_key(&record, self.master.id())
                    .await?
                    .ok_or_else(|| KeyError::Rotated(self.master.id().to_string()))?
            }
        };
        self.hold(&stored)
    }

    /// A data key by its id; `None` when no such key exists.
    async fn key_by_id(&self, key_id: &str) -> Result<Option<Held>, KeyError> {
        let cached = self
            .cache()
            .by_id
            .get(key_id)
            .filter(|held| Self::fresh(held))
            .cloned();
        if let Some(held) = cached {
            return Ok(Some(held));
        }
        match self.store.data_key(key_id).await? {
            Some(record) => Ok(Some(self.hold(&record)?)),
            None => Ok(None),
        }
    }

    /// Seals one clear value with the customer's key (an erased customer's value is not
    /// kept: it becomes the erased marker).
    pub async fn seal(&self, customer_id: &str, value: &str) -> Result<Personal, KeyError> {
        let held = self.key_for(customer_id).await?;
        Ok(match &held.key {
            Some(key) => Personal::Sealed(Sealed {
                sealed: URL_SAFE_NO_PAD.encode(seal_bytes(
                    key,
                    held.key_id.as_bytes(),
                    value.as_bytes(),
                )),
                key_id: held.key_id,
            }),
            None => Personal::Erased,
        })
    }

    /// Seals every clear personal value of an event, in place. Returns whether any was.
    pub async fn seal_event(&self, event: &mut DomainEvent) -> Result<bool, KeyError> {
        let Some(data) = event.personal_data_mut() else {
            return Ok(false);
        };
        if !data.values.iter().any(|v| v.is_clear()) {
            return Ok(false);
        }
        let customer_id = data.customer_id.to_string();
        for value in data.values {
            if let Personal::Clear(clear) = value {
                let sealed = self.seal(&customer_id, clear).await?;
                *value = sealed;
            }
        }
        Ok(true)
    }

    /// Opens a personal value: clear for a clear one (schema v1) or one whose key lives,
    /// `Erased` for an erased one or one whose key is destroyed.
    pub async fn open_value(&self, value: &Personal) -> Result<Opened, KeyError> {
        match value {
            Personal::Clear(clear) => Ok(Opened::Clear(clear.clone())),
            Personal::Erased => Ok(Opened::Erased),
            Personal::Sealed(sealed) => match self.key_by_id(&sealed.key_id).await? {
                Some(held) => Self::open_sealed(&held, sealed),
                None => Ok(Opened::Erased),
            },
        }
    }

    /// A sealed value opened with its key as held (`Erased` when the key is destroyed).
    fn open_sealed(held: &Held, sealed: &Sealed) -> Result<Opened, KeyError> {
        let Some(key) = &held.key else {
            return Ok(Opened::Erased);
        };
        let damaged = || KeyError::Damaged(sealed.key_id.clone());
        let bytes = URL_SAFE_NO_PAD
            .decode(&sealed.sealed)
            .map_err(|_| damaged())?;
        let plain = open_bytes(key, sealed.key_id.as_bytes(), &bytes).ok_or_else(damaged)?;
        String::from_utf8(plain)
            .map(Opened::Clear)
            .map_err(|_| damaged())
    }

    /// Rewrites an answer's JSON for a reader: every sealed value becomes its clear text
    /// when `may_see` allows the reader to see that customer's data and the key lives, the
    /// erased marker when the key is destroyed, and stays sealed otherwise. A value that
    /// does not open (damaged) stays sealed, with a warning.
    pub async fn reveal(
        &self,
        value: &mut serde_json::Value,
        may_see: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(), KeyError> {
        let mut sealed_spots = Vec::new();
        collect_sealed(value, &mut Vec::new(), &mut sealed_spots);
        for path in sealed_spots {
            let Some(spot) = pointer_mut(value, &path) else {
                continue;
            };
            let sealed: Sealed = match serde_json::from_value(spot.clone()) {
                Ok(sealed) => sealed,
                Err(_) => continue,
            };
            let held = match self.key_by_id(&sealed.key_id).await? {
                Some(held) if held.key.is_some() => held,
                // No such key, or destroyed: erased.
                _ => {
                    *spot = Personal::erased_json();
                    continue;
                }
            };
            if !may_see(&held.customer_id) {
                continue;
            }
            match Self::open_sealed(&held, &sealed) {
                Ok(Opened::Clear(clear)) => *spot = serde_json::Value::String(clear),
                Ok(Opened::Erased) => *spot = Personal::erased_json(),
                Err(KeyError::Damaged(key_id)) => {
                    tracing::warn!(key_id, "a sealed value does not open; left sealed")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Erases a customer: destroys their data key and cancels their notifications still
    /// to be sent (see [`DataKeys::erase_data_key`]); from now on their sealed values open
    /// as erased and new ones are not kept.
    pub async fn erase(&self, customer_id: &str) -> Result<Erasure, KeyError> {
        let new_key_id = format!("dk_{}", uuid::Uuid::new_v4().simple());
        let erasure = self
            .store
            .erase_data_key(customer_id, &new_key_id, Utc::now())
            .await?;
        self.remember(Held {
            key_id: erasure.key.key_id.clone(),
            customer_id: customer_id.to_string(),
            key: None,
            fetched: Instant::now(),
        });
        Ok(erasure)
    }

    /// Rotates the master key: every live data key is unwrapped with this keyring's master
    /// key and wrapped with `new_master`, in one transaction that also records the new
    /// key's id. Events are not touched. Returns how many data keys were re-wrapped.
    pub async fn rotate(&self, new_master: &MasterKey) -> Result<usize, KeyError> {
        let records = self.store.wrapped_data_keys().await?;
        let mut rewrapped = Vec::with_capacity(records.len());
        for record in &records {
            let Some(wrapped) = &record.wrapped else {
                continue;
            };
            let bytes = self.master.unwrap_bytes(record, wrapped)?;
            rewrapped.push((
                record.key_id.clone(),
                new_master.wrap(&record.key_id, &record.customer_id, &bytes),
            ));
        }
        self.store
            .rewrap_data_keys(self.master.id(), new_master.id(), &rewrapped)
            .await?;
        Ok(rewrapped.len())
    }
}

/// The JSON paths of every sealed value inside `value`.
fn collect_sealed(
    value: &serde_json::Value,
    path: &mut Vec<PathStep>,
    found: &mut Vec<Vec<PathStep>>,
) {
    if Personal::is_sealed_json(value) {
        found.push(path.clone());
        return;
    }
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                path.push(PathStep::Key(key.clone()));
                collect_sealed(child, path, found);
                path.pop();
            }
        }
        serde_json::Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                path.push(PathStep::Index(index));
                collect_sealed(child, path, found);
                path.pop();
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn pointer_mut<'v>(
    value: &'v mut serde_json::Value,
    path: &[PathStep],
) -> Option<&'v mut serde_json::Value> {
    path.iter().try_fold(value, |spot, step| match step {
        PathStep::Key(key) => spot.get_mut(key.as_str()),
        PathStep::Index(index) => spot.get_mut(*index),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_sealed_with_a_key_opens_only_with_it_and_its_key_id() {
        let key = aes_key(&random_bytes());
        let sealed = seal_bytes(&key, b"dk_1", b"ada@example.com");
        assert!(!sealed.windows(b"ada".len()).any(|w| w == b"ada"));
        assert_eq!(
            open_bytes(&key, b"dk_1", &sealed).unwrap(),
            b"ada@example.com"
        );
        assert_eq!(open_bytes(&key, b"dk_2", &sealed), None);
        let other = aes_key(&random_bytes());
        assert_eq!(open_bytes(&other, b"dk_1", &sealed), None);
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert_eq!(open_bytes(&key, b"dk_1", &flipped), None);
        assert_eq!(open_bytes(&key, b"dk_1", &sealed[..5]), None);
    }

    #[test]
    fn a_wrapped_data_key_unwraps_only_for_its_customer_and_master() {
        let master = MasterKey::generate();
        let record = |customer: &str, wrapped: Vec<u8>| DataKeyRecord {
            key_id: "dk_1".into(),
            customer_id: customer.into(),
            wrapped: Some(wrapped),
            created_at: Utc::now(),
            erased_at: None,
        };
        let wrapped = master.wrap("dk_1", "cust-1", &[7; 32]);
        assert!(master
            .unwrap(&record("cust-1", wrapped.clone()), &wrapped)
            .is_ok());
        assert!(master
            .unwrap(&record("cust-2", wrapped.clone()), &wrapped)
            .is_err());
        let other = MasterKey::generate();
        assert_ne!(other.id(), master.id());
        assert!(other
            .unwrap(&record("cust-1", wrapped.clone()), &wrapped)
            .is_err());
    }

    #[test]
    fn a_master_key_file_round_trips_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let made = MasterKey::read_or_create(&path).unwrap();
        let read = MasterKey::read(&path).unwrap();
        assert_eq!(made.id(), read.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{made:?}").contains(&std::fs::read_to_string(&path).unwrap()));
        std::fs::write(&path, "c2hvcnQ=\n").unwrap();
        let err = MasterKey::read(&path).unwrap_err().to_string();
        assert!(err.contains("holds 5 bytes, not 32"), "{err}");
        std::fs::write(&path, "not base64!").unwrap();
        let err = MasterKey::read(&path).unwrap_err().to_string();
        assert!(err.contains("not base64"), "{err}");
    }
}
