//! Ethereum mainnet's fork schedule, for replaying historical blocks.

use pseq_executor::revm::primitives::hardfork::SpecId;

/// Mainnet's DAO fork block.
pub const MAINNET_DAO_BLOCK: u64 = 1_920_000;

/// The spec (fork) mainnet ran at block `number` with timestamp `timestamp`.
pub fn mainnet_spec(number: u64, timestamp: u64) -> SpecId {
    match (number, timestamp) {
        (_, t) if t >= 1_746_612_311 => SpecId::PRAGUE,
        (_, t) if t >= 1_710_338_135 => SpecId::CANCUN,
        (_, t) if t >= 1_681_338_455 => SpecId::SHANGHAI,
        (n, _) if n >= 15_537_394 => SpecId::MERGE,
        (n, _) if n >= 12_965_000 => SpecId::LONDON,
        (n, _) if n >= 12_244_000 => SpecId::BERLIN,
        (n, _) if n >= 9_069_000 => SpecId::ISTANBUL,
        (n, _) if n >= 7_280_000 => SpecId::PETERSBURG,
        (n, _) if n >= 4_370_000 => SpecId::BYZANTIUM,
        (n, _) if n >= 2_675_000 => SpecId::SPURIOUS_DRAGON,
        (n, _) if n >= 2_463_000 => SpecId::TANGERINE,
        (n, _) if n >= 1_150_000 => SpecId::HOMESTEAD,
        _ => SpecId::FRONTIER,
    }
}
