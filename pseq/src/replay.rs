//! `pseq replay`: re-executes historical mainnet blocks (not yet implemented).
