//! Fork names as EEST fixtures spell them, fork schedules (transition networks such as
//! `BerlinToLondonAt5` and `CancunToPragueAtTime15k`, and genesis files), and blob parameters
//! (EIP-4844, EIP-7691, EIP-7892, EIP-7918).

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

/// How a chain picks its fork per block: an ordered list of forks with their activations (by
/// block number before the merge, by timestamp after), from a test network name or a genesis
/// file's `config`.
#[derive(Debug, Clone)]
pub struct Network {
    forks: Vec<(String, Activation)>,
    dao_block: Option<u64>,
    london_block: Option<u64>,
}

/// When a fork activates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// At this block number.
    Block(u64),
    /// At the first block with at least this timestamp.
    Timestamp(u64),
}

impl Activation {
    fn active(self, number: u64, timestamp: u64) -> bool {
        match self {
            Self::Block(n) => number >= n,
            Self::Timestamp(t) => timestamp >= t,
        }
    }
}

impl Network {
    /// Parses `Cancun`, `BerlinToLondonAt5` or `CancunToPragueAtTime15k`.
    pub fn parse(name: &str) -> Result<Self, String> {
        let unknown = || format!("unknown fork name {name:?}");
        let Some((before, rest)) = name.split_once("To") else {
            spec_of(name).ok_or_else(unknown)?;
            return Ok(Self { forks: vec![(name.to_string(), Activation::Block(0))], dao_block: None, london_block: None });
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
        let at_block = |fork: &str| match activation {
            Activation::Block(n) if after == fork => Some(n),
            _ => None,
        };
        Ok(Self {
            dao_block: at_block("Dao"),
            london_block: at_block("London"),
            forks: vec![(before.to_string(), Activation::Block(0)), (after.to_string(), activation)],
        })
    }

    /// The fork schedule of a geth-format genesis `config`. The merge must be given by
    /// `mergeNetsplitBlock`, or by a terminal total difficulty of zero (merged from genesis).
    pub fn from_chain_config(config: &alloy_genesis::ChainConfig) -> Result<Self, String> {
        let mut forks = vec![("Frontier".to_string(), Activation::Block(0))];
        let mut push_block = |name: &str, block: Option<u64>| {
            if let Some(n) = block {
                forks.push((name.to_string(), Activation::Block(n)));
            }
        };
        push_block("Homestead", config.homestead_block);
        push_block("TangerineWhistle", config.eip150_block);
        push_block("SpuriousDragon", config.eip158_block);
        push_block("Byzantium", config.byzantium_block);
        push_block("Constantinople", config.constantinople_block);
        push_block("Petersburg", config.petersburg_block);
        push_block("Istanbul", config.istanbul_block);
        push_block("Berlin", config.berlin_block);
        push_block("London", config.london_block);
        let merge = match (config.merge_netsplit_block, config.terminal_total_difficulty) {
            (Some(n), _) => Some(n),
            (None, Some(ttd)) if ttd.is_zero() => Some(0),
            (None, Some(_)) if config.shanghai_time.is_some() => {
                return Err("a terminal total difficulty above zero needs mergeNetsplitBlock".into())
            }
            _ => None,
        };
        push_block("Paris", merge);
        let timed = [
            ("Shanghai", config.shanghai_time),
            ("Cancun", config.cancun_time),
            ("Prague", config.prague_time),
            ("Osaka", config.osaka_time),
            ("BPO1", config.bpo1_time),
            ("BPO2", config.bpo2_time),
            ("BPO3", config.bpo3_time),
            ("BPO4", config.bpo4_time),
            ("BPO5", config.bpo5_time),
        ];
        for (name, time) in timed {
            if let Some(t) = time {
                if merge.is_none() {
                    return Err(format!("{name} is scheduled but the merge is not"));
                }
                forks.push((name.to_string(), Activation::Timestamp(t)));
            }
        }
        if config.amsterdam_time.is_some() {
            return Err("Amsterdam is not supported".into());
        }
        // Block-activated forks must come in order; a fork at an earlier block than its
        // predecessor would silently never activate.
        let mut last = 0;
        for (name, activation) in &forks {
            if let Activation::Block(n) = activation {
                if *n < last {
                    return Err(format!("{name} at block {n} comes before an earlier fork's block {last}"));
                }
                last = *n;
            }
        }
        let dao_block = config.dao_fork_support.then_some(config.dao_fork_block).flatten();
        Ok(Self { forks, dao_block, london_block: config.london_block.filter(|n| *n > 0) })
    }

    /// Every fork with its activation, in activation order (Frontier first).
    pub fn forks(&self) -> &[(String, Activation)] {
        &self.forks
    }

    /// The fork name active for a block.
    pub fn fork_at(&self, number: u64, timestamp: u64) -> &str {
        self.forks.iter().rev().find(|(_, a)| a.active(number, timestamp)).map(|(name, _)| name.as_str()).unwrap_or("Frontier")
    }

    /// Whether `number` is the DAO fork block.
    pub fn is_dao_block(&self, number: u64) -> bool {
        self.dao_block == Some(number)
    }

    /// Whether the block is the first of the London fork (EIP-1559's initial base fee).
    pub fn is_london_activation(&self, number: u64) -> bool {
        self.london_block == Some(number)
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
