//! Fork names as EEST fixtures spell them, transition networks (`BerlinToLondonAt5`,
//! `CancunToPragueAtTime15k`) and blob parameters (EIP-4844, EIP-7691, EIP-7892, EIP-7918).

use alloy_eips::eip7840::BlobParams;
use pseq_executor::revm::primitives::hardfork::SpecId;
use std::collections::BTreeMap;

/// The revm spec of a fork name, and whether it is a blob-parameter-only fork.
pub fn spec_of(name: &str) -> Option<SpecId> {
    Some(match name {
        "Frontier" => SpecId::FRONTIER,
        "Homestead" | "Dao" => SpecId::HOMESTEAD,
        "EIP150" | "TangerineWhistle" => SpecId::TANGERINE,
        "EIP158" | "SpuriousDragon" => SpecId::SPURIOUS_DRAGON,
        "Byzantium" => SpecId::BYZANTIUM,
        "Constantinople" | "ConstantinopleFix" | "Petersburg" => SpecId::PETERSBURG,
        "Istanbul" => SpecId::ISTANBUL,
        "Berlin" => SpecId::BERLIN,
        "London" => SpecId::LONDON,
        "Paris" | "Merge" => SpecId::MERGE,
        "Shanghai" => SpecId::SHANGHAI,
        "Cancun" => SpecId::CANCUN,
        "Prague" => SpecId::PRAGUE,
        "Osaka" | "BPO1" | "BPO2" | "BPO3" | "BPO4" | "BPO5" => SpecId::OSAKA,
        _ => return None,
    })
}

/// How a test network picks its fork per block.
#[derive(Debug, Clone)]
pub struct Network {
    before: String,
    after: Option<(String, Activation)>,
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    Block(u64),
    Timestamp(u64),
}

impl Network {
    /// Parses `Cancun`, `BerlinToLondonAt5` or `CancunToPragueAtTime15k`.
    pub fn parse(name: &str) -> Result<Self, String> {
        let unknown = || format!("unknown fork name {name:?}");
        let Some((before, rest)) = name.split_once("To") else {
            spec_of(name).ok_or_else(unknown)?;
            return Ok(Self { before: name.to_string(), after: None });
        };
        let (after, activation) = if let Some((after, at)) = rest.split_once("AtTime") {
            let at = at.trim_end_matches('k').parse::<u64>().map_err(|_| unknown())?;
            let scale = if rest.ends_with('k') { 1000 } else { 1 };
            (after, Activation::Timestamp(at.checked_mul(scale).ok_or_else(unknown)?))
        } else if let Some((after, at)) = rest.split_once("At") {
            (after, Activation::Block(at.parse().map_err(|_| unknown())?))
        } else {
            return Err(unknown());
        };
        spec_of(before).ok_or_else(unknown)?;
        spec_of(after).ok_or_else(unknown)?;
        Ok(Self { before: before.to_string(), after: Some((after.to_string(), activation)) })
    }

    /// The fork name active for a block.
    pub fn fork_at(&self, number: u64, timestamp: u64) -> &str {
        match &self.after {
            Some((after, Activation::Block(n))) if number >= *n => after,
            Some((after, Activation::Timestamp(t))) if timestamp >= *t => after,
            _ => &self.before,
        }
    }

    /// Whether `number` is the DAO fork block of a `HomesteadToDaoAt5` network.
    pub fn is_dao_block(&self, number: u64) -> bool {
        matches!(&self.after, Some((after, Activation::Block(n))) if after == "Dao" && number == *n)
    }

    /// Whether the block is the first of the London fork (EIP-1559's initial base fee).
    pub fn is_london_activation(&self, number: u64) -> bool {
        match &self.after {
            Some((after, Activation::Block(n))) => after == "London" && number == *n,
            _ => false,
        }
    }
}

/// One fork's entry of a fixture's `blobSchedule`.
#[derive(Debug, Clone, Copy)]
pub struct BlobScheduleEntry {
    /// Target blobs per block.
    pub target: u64,
    /// Maximum blobs per block.
    pub max: u64,
    /// Blob base fee update fraction.
    pub update_fraction: u64,
}

/// Blob parameters of fork `name` (Cancun on), from the fixture's schedule where it has one.
pub fn blob_params(name: &str, schedule: &BTreeMap<String, BlobScheduleEntry>) -> Option<BlobParams> {
    let spec = spec_of(name)?;
    if !spec.is_enabled_in(SpecId::CANCUN) {
        return None;
    }
    let mut params = if spec.is_enabled_in(SpecId::OSAKA) {
        BlobParams::osaka()
    } else if spec.is_enabled_in(SpecId::PRAGUE) {
        BlobParams::prague()
    } else {
        BlobParams::cancun()
    };
    if let Some(entry) = schedule.get(name) {
        params.target_blob_count = entry.target;
        params.max_blob_count = entry.max;
        params.update_fraction = entry.update_fraction as u128;
    }
    Some(params)
}
