//! Any byte string through the whole admission path: decode, sender recovery, stateless and
//! stateful checks, and into a pool (replacement, limits, classification). Nothing may panic.
#![no_main]

use alloy_primitives::{Bytes, U256};
use libfuzzer_sys::fuzz_target;
use pseq_executor::revm::primitives::hardfork::SpecId;
use pseq_mempool::{check_stateful, check_stateless, recover, Pool, PoolConfig, SenderAccount, ValidationConfig};

fuzz_target!(|data: &[u8]| {
    let config = ValidationConfig::new(1, SpecId::PRAGUE);
    let account = SenderAccount { nonce: 0, balance: U256::from(u64::MAX), code: Bytes::new() };
    if let Ok(tx) = recover(data, &config) {
        let _ = check_stateless(&tx, &config);
        let _ = check_stateful(&tx, &account, &config);
        let _ = tx.effective_tip(7);
        let mut pool = Pool::new(PoolConfig::new(config), 7);
        let _ = pool.add(tx.clone(), account.clone(), false);
        let _ = pool.add(tx, account, true);
        let _ = pool.best_transactions().count();
    }
});
