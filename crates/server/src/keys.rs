//! The master key of a process: read from `--master-key-file` (or the data directory's
//! `master.key`, made on the first start of a new store), checked against the store, and
//! rotated by `cornershop keys rotate`.

use std::path::Path;
use std::sync::Arc;

use cornershop_app::{KeyError, Keyring, MasterKey};
use cornershop_store::EventStore;

use crate::config::StoreArgs;
use crate::startup::open_event_store;

/// The keyring of a store. Refuses to start with a master key other than the store's: a
/// clear message, and nothing written.
pub(crate) async fn open_keyring(
    store: Arc<dyn EventStore>,
    args: &StoreArgs,
) -> anyhow::Result<Arc<Keyring>> {
    let path = args.master_key_path();
    if path.exists() {
        let master = MasterKey::read(&path)?;
        return Ok(Arc::new(Keyring::open(store, master).await?));
    }
    // The new key's file is written (and synced) before the store records its id, so that
    // no store ever names a key no file holds; when the store names another key already,
    // the new file is taken away again.
    let master = MasterKey::read_or_create(&path)?;
    match Keyring::open(store, master).await {
        Ok(keyring) => Ok(Arc::new(keyring)),
        Err(KeyError::WrongMasterKey { recorded, .. }) => {
            let _ = std::fs::remove_file(&path);
            Err(anyhow::anyhow!(
                "the master key file {} does not exist, and this store's data keys are \
                 wrapped by master key {recorded}: start with --master-key-file naming the \
                 key this store was created with (nothing was changed)",
                path.display()
            ))
        }
        Err(other) => {
            let _ = std::fs::remove_file(&path);
            Err(other.into())
        }
    }
}

/// `cornershop keys rotate`: every data key re-wrapped with the new master key in one
/// transaction. Prints what it did.
pub async fn rotate(new_master_key_file: &Path, args: &StoreArgs) -> anyhow::Result<()> {
    let store = open_event_store(args).await?;
    let keyring = open_keyring(store.clone(), args).await?;
    let new_master = MasterKey::read_or_create(new_master_key_file)?;
    if new_master.id() == keyring.master_key_id() {
        anyhow::bail!(
            "{} holds the key the store already uses (id {}): nothing to rotate",
            new_master_key_file.display(),
            new_master.id()
        );
    }
    let rewrapped = keyring.rotate(&new_master).await?;
    println!(
        "re-wrapped {rewrapped} data keys: master key {} -> {} ({}); start every process \
         with --master-key-file {} from now on, then destroy the old key file",
        keyring.master_key_id(),
        new_master.id(),
        new_master_key_file.display(),
        new_master_key_file.display()
    );
    store.close().await;
    Ok(())
}
