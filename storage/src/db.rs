//! [`Storage`]: opening a datadir, genesis, block commits and the chain reads.

use crate::{
    bottom::BottomBranches,
    cache::StateCache,
    codec::{decode_block_ref, decode_number, decode_value, encode_block_ref, StoredAccount},
    error::{Result, StorageError},
    tables,
    update::{prepare, History, StateUpdate},
};
use alloy_consensus::{Block, BlockBody, Header, ReceiptEnvelope, TxEnvelope};
use alloy_eips::eip2718::{Decodable2718, Encodable2718};
use alloy_primitives::{Address, B256, U256};
use alloy_rlp::{Decodable, Encodable};
use parking_lot::{Mutex, RwLock};
use pseq_executor::{StateDiff, TxReceipt};
use rocksdb::{BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use std::path::{Path, PathBuf};

/// A block by number and hash.
pub type BlockRef = (u64, B256);

/// Version of the on-disk layout; a datadir with another one is refused.
/// Version 2: the plain accounts table holds the storage root too (as the hashed one does), so
/// that the state cache's accounts have it.
pub const SCHEMA_VERSION: u32 = 2;

/// The column family `name`; a missing one means the datadir is not ours.
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily> {
    db.cf_handle(name).ok_or_else(|| StorageError::corrupt(format!("column family {name} missing")))
}

/// How a datadir is opened.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// RocksDB block cache in bytes.
    pub block_cache_bytes: usize,
    /// Entries of the in-process state cache (accounts and slots each).
    pub state_cache_entries: usize,
    /// fsync every commit (survives power loss, not just a killed process).
    pub sync_writes: bool,
    /// Bytes of bottom trie branches kept in memory with their leaves' hashes, so that a state
    /// root does not read and re-hash the unchanged siblings of changed leaves (see
    /// [`Storage::warm_trie_cache`]). About 64 bytes per leaf of the state; 0 turns it off.
    pub trie_cache_bytes: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self { block_cache_bytes: 256 << 20, state_cache_entries: 1 << 20, sync_writes: false, trie_cache_bytes: 512 << 20 }
    }
}

/// The chain a datadir holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainIdentity {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// Hash of block 0.
    pub genesis_hash: B256,
}

/// One account of a genesis allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenesisAccount {
    /// Balance in wei.
    pub balance: U256,
    /// Nonce.
    pub nonce: u64,
    /// Runtime code (empty for none).
    pub code: alloy_primitives::Bytes,
    /// Non-zero storage.
    pub storage: std::collections::BTreeMap<U256, U256>,
}

/// A committed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Hash of the block.
    pub hash: B256,
    /// Bytes of the write batch (state, trie, history, block, receipts).
    pub bytes: usize,
}

/// The RocksDB-backed state and chain of one node. Shared between threads (`&self` everywhere);
/// commits and unwinds serialise on an internal lock.
pub struct Storage {
    db: DB,
    path: PathBuf,
    identity: ChainIdentity,
    head: RwLock<(u64, B256)>,
    write_lock: Mutex<()>,
    write_options: WriteOptions,
    pub(crate) cache: StateCache,
    pub(crate) bottom: BottomBranches,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("path", &self.path).field("identity", &self.identity).field("head", &*self.head.read()).finish()
    }
}

/// Data block size of most tables (RocksDB's default): a point read of a key not in the block
/// cache reads and decompresses one such block.
const BLOCK_BYTES: usize = 4 * 1024;

/// Data block size of the tables the state-root walk reads in ranges ([`tables::WALKED`]): with
/// 32 KiB blocks a walk crosses fewer block boundaries, each seek searches a smaller index and the
/// block cache holds fewer, larger entries. 10k + 10k update of the 1M/1M state: 228-231 ->
/// 208-213 ms; a dense 1-gigagas block's root and commit did not move (docs/benchmarks.md,
/// "Kept: 32 KiB blocks for the walked tables").
const WALKED_BLOCK_BYTES: usize = 32 * 1024;

fn open_db(path: &Path, options: &StorageOptions) -> Result<DB> {
    let cache = Cache::new_lru_cache(options.block_cache_bytes);
    let table_options = |block_bytes: usize| {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_block_size(block_bytes);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        // The filters and indexes of L0 files and the top level of partitioned ones stay in the
        // cache: every read of the state checks them.
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_pin_top_level_index_and_filter(true);
        // A hash index inside each data block: a point read finds its key without a binary search.
        table.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
        table
    };
    let table = table_options(BLOCK_BYTES);
    let walked_table = table_options(WALKED_BLOCK_BYTES);
    let mut cf_options = Options::default();
    cf_options.set_block_based_table_factory(&table);
    cf_options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // The state and its trie are read by seeks on every block (the state-root walk merges every
    // sorted run a key could be in): their L0 files are compacted once two pile up instead of
    // four (docs/benchmarks.md, "Kept: batched reads, adaptive cursors, RocksDB read options").
    let mut state_options = cf_options.clone();
    state_options.set_level_zero_file_num_compaction_trigger(2);
    let mut db_options = Options::default();
    db_options.create_if_missing(true);
    db_options.create_missing_column_families(true);
    db_options.set_max_background_jobs(2);
    db_options.set_keep_log_file_num(4);
    db_options.set_log_level(rocksdb::LogLevel::Warn);
    // RocksDB opens table files with 16 threads per column family by default: 272 thread
    // spawns per open, which dominated opening small datadirs.
    db_options.set_max_file_opening_threads(2);
    let mut walked_options = state_options.clone();
    walked_options.set_block_based_table_factory(&walked_table);
    let descriptors = tables::ALL.iter().map(|name| {
        let options = if tables::WALKED.contains(name) {
            walked_options.clone()
        } else if tables::STATE.contains(name) {
            state_options.clone()
        } else {
            cf_options.clone()
        };
        ColumnFamilyDescriptor::new(*name, options)
    });
    Ok(DB::open_cf_descriptors(&db_options, path, descriptors)?)
}

impl Storage {
    /// Opens an initialised datadir. Fails on another schema version, a missing genesis or a
    /// corrupt database.
    pub fn open(path: &Path, options: &StorageOptions) -> Result<Self> {
        Self::from_db(open_db(path, options)?, path, options)
    }

    /// Reads the identity and head of an opened database.
    fn from_db(db: DB, path: &Path, options: &StorageOptions) -> Result<Self> {
        let meta = cf(&db, tables::META)?;
        let Some(schema) = db.get_cf(meta, tables::META_SCHEMA)? else {
            return Err(StorageError::NotInitialised(path.display().to_string()));
        };
        let found = u32::from_be_bytes(schema.as_slice().try_into().map_err(|_| StorageError::corrupt("schema version"))?);
        if found != SCHEMA_VERSION {
            return Err(StorageError::WrongSchema { found, expected: SCHEMA_VERSION });
        }
        let chain = db.get_cf(meta, tables::META_CHAIN)?.ok_or_else(|| StorageError::corrupt("chain identity missing"))?;
        let (chain_id, genesis_hash) = decode_block_ref(&chain)?;
        let head = db.get_cf(meta, tables::META_HEAD)?.ok_or_else(|| StorageError::corrupt("head missing"))?;
        let head = decode_block_ref(&head)?;
        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.sync_writes);
        Ok(Self {
            db,
            path: path.to_path_buf(),
            identity: ChainIdentity { chain_id, genesis_hash },
            head: RwLock::new(head),
            write_lock: Mutex::new(()),
            write_options,
            cache: StateCache::new(options.state_cache_entries),
            bottom: BottomBranches::new(options.trie_cache_bytes),
        })
    }

    /// Opens the datadir, initialising it with this genesis when it is new. An existing datadir
    /// must hold the same chain (chain id and genesis hash), else [`StorageError::WrongChain`].
    /// The genesis header's state root must match the allocation.
    pub fn open_or_init(
        path: &Path,
        options: &StorageOptions,
        chain_id: u64,
        genesis: &Header,
        alloc: &[(Address, GenesisAccount)],
    ) -> Result<Self> {
        let genesis_hash = genesis.hash_slow();
        let db = open_db(path, options)?;
        if db.get_cf(cf(&db, tables::META)?, tables::META_SCHEMA)?.is_none() {
            return Self::init(db, path, options, chain_id, genesis, alloc);
        }
        match Self::from_db(db, path, options) {
            Ok(storage) => {
                let wanted = ChainIdentity { chain_id, genesis_hash };
                if storage.identity != wanted {
                    return Err(StorageError::WrongChain(format!(
                        "datadir has chain id {} and genesis {}, expected chain id {} and genesis {}",
                        storage.identity.chain_id, storage.identity.genesis_hash, chain_id, genesis_hash
                    )));
                }
                Ok(storage)
            }
            Err(e) => Err(e),
        }
    }

    fn init(db: DB, path: &Path, options: &StorageOptions, chain_id: u64, genesis: &Header, alloc: &[(Address, GenesisAccount)]) -> Result<Self> {
        let genesis_hash = genesis.hash_slow();
        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.sync_writes);
        let storage = Self {
            db,
            path: path.to_path_buf(),
            identity: ChainIdentity { chain_id, genesis_hash },
            head: RwLock::new((0, B256::ZERO)),
            write_lock: Mutex::new(()),
            write_options,
            cache: StateCache::new(options.state_cache_entries),
            bottom: BottomBranches::new(options.trie_cache_bytes),
        };
        let diff = crate::genesis::alloc_diff(alloc);
        let update = prepare(&storage, &diff, History::Skip)?;
        if update.state_root != genesis.state_root {
            return Err(StorageError::StateRootMismatch { computed: update.state_root, expected: genesis.state_root });
        }
        let mut batch = WriteBatch::default();
        update.write_into(&storage.db, &mut batch)?;
        let block = Block { header: genesis.clone(), body: BlockBody::<TxEnvelope>::default() };
        storage.write_block_data(&mut batch, &block, genesis_hash, &[])?;
        let meta = cf(&storage.db, tables::META)?;
        batch.put_cf(meta, tables::META_SCHEMA, SCHEMA_VERSION.to_be_bytes());
        batch.put_cf(meta, tables::META_CHAIN, encode_block_ref(chain_id, &genesis_hash));
        storage.db.write_opt(batch, &storage.write_options)?;
        storage.set_head((genesis.number, genesis_hash));
        Ok(storage)
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    /// The datadir.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Chain id and genesis hash of the datadir.
    pub fn identity(&self) -> ChainIdentity {
        self.identity
    }

    /// The head: number and hash of the last committed block.
    pub fn head(&self) -> (u64, B256) {
        *self.head.read()
    }

    /// Computes the state root and the writes of a block's state changes on top of the head,
    /// without writing anything.
    pub fn prepare_state(&self, diff: &StateDiff) -> Result<StateUpdate> {
        let next = self.head().0.checked_add(1).ok_or_else(|| StorageError::corrupt("block number overflow"))?;
        prepare(self, diff, History::Record(next))
    }

    /// Prepares, ahead of the block's end, the state-root work of accounts the next block has
    /// changed so far (continuous building); see [`crate::PreparedAccounts`].
    pub fn prepare_accounts_ahead(&self, prepared: &mut crate::PreparedAccounts, accounts: Vec<(Address, pseq_executor::AccountDiff)>) -> Result<()> {
        crate::update::prepare_ahead(self, prepared, accounts)
    }

    /// [`Storage::prepare_state`], reusing the accounts prepared ahead whose final change is the
    /// one they were prepared from. The result is the same as without them.
    pub fn prepare_state_reusing(&self, diff: &StateDiff, prepared: crate::PreparedAccounts) -> Result<StateUpdate> {
        let next = self.head().0.checked_add(1).ok_or_else(|| StorageError::corrupt("block number overflow"))?;
        crate::update::prepare_reusing(self, diff, History::Record(next), prepared)
    }

    /// Commits a block on top of the head in one atomic write: state, trie nodes, history, the
    /// block, its receipts and transaction index, and the new head. The header's state root must
    /// equal the update's; the update must have been prepared on the current head.
    pub fn commit_block(&self, block: &Block<TxEnvelope>, receipts: &[TxReceipt], update: StateUpdate) -> Result<Committed> {
        self.commit_block_with_senders(block, receipts, update, &[])
    }

    /// [`Storage::commit_block`], recording in the same write the senders of transactions that
    /// their signatures do not give (`(index, sender)`: dev-mode impersonation).
    pub fn commit_block_with_senders(&self, block: &Block<TxEnvelope>, receipts: &[TxReceipt], update: StateUpdate, senders: &[(u32, Address)]) -> Result<Committed> {
        let _guard = self.write_lock.lock();
        let head = self.head();
        let header = &block.header;
        let hash = header.hash_slow();
        if Some(header.number) != head.0.checked_add(1) || header.parent_hash != head.1 {
            return Err(StorageError::NotOnHead { number: header.number, hash, head_number: head.0, head_hash: head.1 });
        }
        if update.parent != head {
            return Err(StorageError::StaleUpdate { prepared: update.parent.0, head: head.0 });
        }
        if update.state_root != header.state_root {
            return Err(StorageError::StateRootMismatch { computed: update.state_root, expected: header.state_root });
        }
        let mut update = update;
        update.sort_writes();
        let mut batch = WriteBatch::default();
        update.write_into(&self.db, &mut batch)?;
        batch.put_cf(cf(&self.db, tables::CHANGESETS)?, tables::number_key(header.number), update.changes.encode());
        let receipts: Vec<ReceiptEnvelope> = receipts.iter().map(TxReceipt::envelope).collect();
        self.write_block_data(&mut batch, block, hash, &receipts)?;
        if !senders.is_empty() {
            let encoded: Vec<u8> = senders.iter().flat_map(|(index, address)| index.to_be_bytes().into_iter().chain(address.0)).collect();
            batch.put_cf(cf(&self.db, tables::META)?, tables::senders_key(&hash), encoded);
        }
        let bytes = batch.size_in_bytes();
        self.cache.begin_change();
        let written = self.db.write_opt(batch, &self.write_options);
        if written.is_ok() {
            self.cache.apply(&update.cache);
            *self.head.write() = (header.number, hash);
        }
        self.cache.end_change();
        written?;
        Ok(Committed { hash, bytes })
    }

    /// Block data and the head pointer, into `batch`.
    fn write_block_data(&self, batch: &mut WriteBatch, block: &Block<TxEnvelope>, hash: B256, receipts: &[ReceiptEnvelope]) -> Result<()> {
        let number = block.header.number;
        batch.put_cf(cf(&self.db, tables::HEADERS)?, hash, alloy_rlp::encode(&block.header));
        batch.put_cf(cf(&self.db, tables::BODIES)?, hash, alloy_rlp::encode(&block.body));
        let mut encoded = Vec::new();
        let items: Vec<alloy_primitives::Bytes> = receipts.iter().map(|r| r.encoded_2718().into()).collect();
        items.encode(&mut encoded);
        batch.put_cf(cf(&self.db, tables::RECEIPTS)?, hash, encoded);
        let lookup = cf(&self.db, tables::TX_LOOKUP)?;
        for (index, tx) in block.body.transactions.iter().enumerate() {
            let mut value = [0u8; 12];
            value[..8].copy_from_slice(&number.to_be_bytes());
            value[8..].copy_from_slice(&(index as u32).to_be_bytes());
            batch.put_cf(lookup, tx.trie_hash(), value);
        }
        batch.put_cf(cf(&self.db, tables::HASH_TO_NUMBER)?, hash, tables::number_key(number));
        batch.put_cf(cf(&self.db, tables::CANONICAL)?, tables::number_key(number), hash);
        batch.put_cf(cf(&self.db, tables::META)?, tables::META_HEAD, encode_block_ref(number, &hash));
        Ok(())
    }

    /// Removes the head block's data from `batch` (for unwinding).
    pub(crate) fn delete_block_data(&self, batch: &mut WriteBatch, number: u64, hash: B256) -> Result<()> {
        if let Some(body) = self.body(&hash)? {
            let lookup = cf(&self.db, tables::TX_LOOKUP)?;
            for tx in &body.transactions {
                batch.delete_cf(lookup, tx.trie_hash());
            }
        }
        for table in [tables::HEADERS, tables::BODIES, tables::RECEIPTS, tables::HASH_TO_NUMBER] {
            batch.delete_cf(cf(&self.db, table)?, hash);
        }
        batch.delete_cf(cf(&self.db, tables::CANONICAL)?, tables::number_key(number));
        batch.delete_cf(cf(&self.db, tables::CHANGESETS)?, tables::number_key(number));
        batch.delete_cf(cf(&self.db, tables::META)?, tables::senders_key(&hash));
        Ok(())
    }

    pub(crate) fn write(&self, batch: WriteBatch) -> Result<()> {
        Ok(self.db.write_opt(batch, &self.write_options)?)
    }

    pub(crate) fn set_head(&self, head: (u64, B256)) {
        *self.head.write() = head;
    }

    pub(crate) fn lock_writes(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.write_lock.lock()
    }

    /// Senders of a block's transactions that their signatures do not give (see
    /// [`Storage::commit_block_with_senders`]); empty for ordinary blocks.
    pub fn sender_overrides(&self, block_hash: &B256) -> Result<Vec<(u32, Address)>> {
        let Some(value) = self.db.get_pinned_cf(cf(&self.db, tables::META)?, tables::senders_key(block_hash))? else { return Ok(Vec::new()) };
        if value.len() % 24 != 0 {
            return Err(StorageError::corrupt("sender overrides length"));
        }
        Ok(value.chunks(24).map(|c| (u32::from_be_bytes([c[0], c[1], c[2], c[3]]), Address::from_slice(&c[4..]))).collect())
    }

    /// The canonical hash of block `number`.
    pub fn canonical_hash(&self, number: u64) -> Result<Option<B256>> {
        let value = self.db.get_pinned_cf(cf(&self.db, tables::CANONICAL)?, tables::number_key(number))?;
        value.map(|v| if v.len() == 32 { Ok(B256::from_slice(&v)) } else { Err(StorageError::corrupt("canonical hash length")) }).transpose()
    }

    /// The number of the block with this hash.
    pub fn block_number(&self, hash: &B256) -> Result<Option<u64>> {
        self.db.get_pinned_cf(cf(&self.db, tables::HASH_TO_NUMBER)?, hash)?.map(|v| decode_number(&v)).transpose()
    }

    /// The header with this hash.
    pub fn header(&self, hash: &B256) -> Result<Option<Header>> {
        let Some(bytes) = self.db.get_pinned_cf(cf(&self.db, tables::HEADERS)?, hash)? else { return Ok(None) };
        Header::decode(&mut bytes.as_ref()).map(Some).map_err(|e| StorageError::corrupt(format!("header {hash}: {e}")))
    }

    /// The canonical header at `number`.
    pub fn header_by_number(&self, number: u64) -> Result<Option<Header>> {
        match self.canonical_hash(number)? {
            Some(hash) => self.header(&hash),
            None => Ok(None),
        }
    }

    /// The body of the block with this hash.
    pub fn body(&self, hash: &B256) -> Result<Option<BlockBody<TxEnvelope>>> {
        let Some(bytes) = self.db.get_pinned_cf(cf(&self.db, tables::BODIES)?, hash)? else { return Ok(None) };
        BlockBody::decode(&mut bytes.as_ref()).map(Some).map_err(|e| StorageError::corrupt(format!("body {hash}: {e}")))
    }

    /// The receipts of the block with this hash.
    pub fn receipts(&self, hash: &B256) -> Result<Option<Vec<ReceiptEnvelope>>> {
        let Some(bytes) = self.db.get_pinned_cf(cf(&self.db, tables::RECEIPTS)?, hash)? else { return Ok(None) };
        let items = Vec::<alloy_primitives::Bytes>::decode(&mut bytes.as_ref()).map_err(|e| StorageError::corrupt(format!("receipts {hash}: {e}")))?;
        items
            .iter()
            .map(|item| ReceiptEnvelope::decode_2718(&mut item.as_ref()).map_err(|e| StorageError::corrupt(format!("receipt in {hash}: {e}"))))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Where a transaction is: block number and index.
    pub fn transaction_location(&self, tx_hash: &B256) -> Result<Option<(u64, u32)>> {
        let Some(bytes) = self.db.get_pinned_cf(cf(&self.db, tables::TX_LOOKUP)?, tx_hash)? else { return Ok(None) };
        if bytes.len() != 12 {
            return Err(StorageError::corrupt("transaction lookup length"));
        }
        let number = decode_number(&bytes[..8])?;
        let index = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        Ok(Some((number, index)))
    }

    /// The account at the head, by address (no cache).
    pub(crate) fn plain_account(&self, address: &Address) -> Result<Option<StoredAccount>> {
        self.db.get_pinned_cf(cf(&self.db, tables::ACCOUNTS)?, address)?.map(|v| StoredAccount::decode(&v)).transpose()
    }

    /// A slot at the head (no cache).
    pub(crate) fn plain_slot(&self, address: &Address, slot: &U256) -> Result<U256> {
        self.db.get_pinned_cf(cf(&self.db, tables::STORAGE)?, tables::storage_key(address, slot))?.map(|v| decode_value(&v)).transpose().map(Option::unwrap_or_default)
    }

    /// Every non-zero slot of an account at the head.
    pub(crate) fn plain_slots(&self, address: &Address) -> Result<Vec<(U256, U256)>> {
        let mut iter = self.db.raw_iterator_cf(cf(&self.db, tables::STORAGE)?);
        iter.seek(address);
        let mut slots = Vec::new();
        while let Some((key, value)) = iter.item() {
            if key.len() != 52 || &key[..20] != address.as_slice() {
                break;
            }
            slots.push((U256::from_be_slice(&key[20..]), decode_value(value)?));
            iter.next();
        }
        iter.status()?;
        Ok(slots)
    }

    /// Bytecode by hash.
    pub(crate) fn code(&self, hash: &B256) -> Result<Option<alloy_primitives::Bytes>> {
        Ok(self.db.get_cf(cf(&self.db, tables::CODE)?, hash)?.map(Into::into))
    }

    /// Flushes every column family's memtable to table files (RocksDB keeps recent writes in
    /// memory tables; a long-running node has most of its state in table files).
    pub fn flush(&self) -> Result<()> {
        for name in tables::ALL {
            self.db.flush_cf(cf(&self.db, name)?)?;
        }
        Ok(())
    }

    /// Waits (up to `limit`) until RocksDB has no compaction running or pending, so that a
    /// benchmark times reads of a settled database rather than reads racing a compaction for the
    /// cores and the block cache. Returns whether it settled.
    pub fn wait_for_compactions(&self, limit: std::time::Duration) -> Result<bool> {
        let started = std::time::Instant::now();
        loop {
            let mut busy = self.db.property_int_value("rocksdb.num-running-compactions")?.unwrap_or(0) > 0;
            for name in tables::ALL {
                busy |= self.db.property_int_value_cf(cf(&self.db, name)?, "rocksdb.compaction-pending")?.unwrap_or(0) > 0;
            }
            if !busy {
                return Ok(true);
            }
            if started.elapsed() >= limit {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Table files per LSM level of the column families that hold the state and its trie
    /// (`name: L0 n, L1 n, ...`), and the block cache's usage: what a read has to merge.
    pub fn level_summary(&self) -> Result<String> {
        let mut out = Vec::new();
        for name in tables::STATE {
            let handle = cf(&self.db, name)?;
            let mut levels = Vec::new();
            for level in 0..7 {
                let files = self.db.property_int_value_cf(handle, &format!("rocksdb.num-files-at-level{level}"))?.unwrap_or(0);
                if files > 0 {
                    levels.push(format!("L{level} {files}"));
                }
            }
            let size = self.db.property_int_value_cf(handle, "rocksdb.total-sst-files-size")?.unwrap_or(0);
            out.push(format!("{name}: {} ({:.0} MiB)", levels.join(", "), size as f64 / (1024.0 * 1024.0)));
        }
        let cache = self.db.property_int_value_cf(cf(&self.db, tables::HASHED_ACCOUNTS)?, "rocksdb.block-cache-usage")?.unwrap_or(0);
        out.push(format!("block cache {:.0} MiB", cache as f64 / (1024.0 * 1024.0)));
        Ok(out.join("; "))
    }

    /// Sets the safe and finalized blocks (Engine API fork choice).
    pub fn set_safe_finalized(&self, safe: Option<BlockRef>, finalized: Option<BlockRef>) -> Result<()> {
        let mut batch = WriteBatch::default();
        let meta = cf(&self.db, tables::META)?;
        if let Some((n, h)) = safe {
            batch.put_cf(meta, tables::META_SAFE, encode_block_ref(n, &h));
        }
        if let Some((n, h)) = finalized {
            batch.put_cf(meta, tables::META_FINALIZED, encode_block_ref(n, &h));
        }
        self.write(batch)
    }

    /// The safe and finalized blocks, where set.
    pub fn safe_finalized(&self) -> Result<(Option<BlockRef>, Option<BlockRef>)> {
        let meta = cf(&self.db, tables::META)?;
        let read = |key: &[u8]| -> Result<Option<BlockRef>> { self.db.get_cf(meta, key)?.map(|v| decode_block_ref(&v)).transpose() };
        Ok((read(tables::META_SAFE)?, read(tables::META_FINALIZED)?))
    }
}
